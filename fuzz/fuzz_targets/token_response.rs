//! The token endpoint's answer (status and body) to a code exchange.
#![no_main]
use erpnet_auth_fuzz::{drain, exchanging, response, T0};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mut session, request) = exchanging(true);
    session.handle_response(T0, request.id, response(data)).expect("an answer to an open request");
    drain(&mut session);
});
