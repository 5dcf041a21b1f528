//! The discovery document.
#![no_main]
use erpnet_auth::{Config, Session};
use erpnet_auth_fuzz::{drain, response, Counting, REDIRECT, T0};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = Config::discover("https://idp.example").client_id("a").redirect_uri(REDIRECT).build().expect("config");
    let mut session = Session::with_random(config, Counting::default());
    let request = drain(&mut session).remove(0);
    session.handle_response(T0, request.id, response(data)).expect("an answer to an open request");
    drain(&mut session);
});
