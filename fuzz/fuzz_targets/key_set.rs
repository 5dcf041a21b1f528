//! The provider's key set (JWKS), fetched for a hybrid sign-in.
#![no_main]
use erpnet_auth::{Callback, RequestKind};
use erpnet_auth_fuzz::{drain, pending, response, STATE, T0};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mut session, requests) = pending(true);
    let keys = requests.into_iter().find(|r| r.kind == RequestKind::Keys).expect("a key fetch");
    session.handle_response(T0, keys.id, response(data)).expect("an answer to an open request");
    drain(&mut session);
    // A front-channel token then meets whatever key set was installed.
    let token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJzdWIiOiJhIn0.c2ln";
    let body = format!("code=c&id_token={token}&state={STATE}");
    session.handle_callback(T0, Callback::FormPost(&body)).expect("the state matches");
    drain(&mut session);
});
