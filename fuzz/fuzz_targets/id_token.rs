//! Compact JWS splitting, the header and the ID token claims, through the front channel.
#![no_main]
use erpnet_auth::{Callback, HttpResponse, RequestKind};
use erpnet_auth_fuzz::{drain, pending, STATE, T0};
use libfuzzer_sys::fuzz_target;

const KEYS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let (mut session, requests) = pending(true);
    let keys = requests.into_iter().find(|r| r.kind == RequestKind::Keys).expect("a key fetch");
    session.handle_response(T0, keys.id, HttpResponse::new(200, KEYS)).expect("keys");
    drain(&mut session);
    let encoded: String = url_encode(token);
    let body = format!("code=c&id_token={encoded}&state={STATE}");
    session.handle_callback(T0, Callback::FormPost(&body)).expect("the state matches");
    drain(&mut session);
});

/// Percent-encodes everything but unreserved characters, so that the token arrives whole.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
