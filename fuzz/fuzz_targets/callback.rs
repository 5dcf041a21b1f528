//! The callback parsers: a redirect URL (query or fragment) or a `form_post` body.
#![no_main]
use erpnet_auth::Callback;
use erpnet_auth_fuzz::{drain, pending, T0};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let hybrid = selector & 1 == 1;
    let (mut session, _) = pending(hybrid);
    let before = session.snapshot().to_json();
    let callback = if selector & 2 == 2 { Callback::FormPost(text) } else { Callback::Url(text) };
    match session.handle_callback(T0 + 1, callback) {
        Ok(()) => {
            drain(&mut session);
            assert!(!session.is_sign_in_pending(), "a matched state was not spent");
        }
        Err(_) => assert_eq!(session.snapshot().to_json(), before, "a refusal changed the state"),
    }
});
