//! The userinfo endpoint's answer.
#![no_main]
use erpnet_auth::HttpResponse;
use erpnet_auth_fuzz::{drain, exchanging, response, T0};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mut session, request) = exchanging(false);
    let tokens = r#"{"access_token":"at","token_type":"Bearer","expires_in":3600,"refresh_token":"rt"}"#;
    session.handle_response(T0, request.id, HttpResponse::new(200, tokens)).expect("tokens");
    drain(&mut session);
    let Ok(_) = session.fetch_user_info(T0) else { return };
    let Some(request) = drain(&mut session).into_iter().next() else { return };
    session.handle_response(T0, request.id, response(data)).expect("an answer to an open request");
    drain(&mut session);
});
