//! Shared fixtures of the fuzz targets: sessions brought to the state where the parser under
//! test reads the fuzzer's bytes, and the loop contract checked after each input.

use erpnet_auth::{
    config::{ResponseMode, ResponseType},
    error::RandomUnavailable,
    Callback, Config, HttpRequest, HttpResponse, Output, RandomSource, RequestKind, Session, SignInOptions,
};

pub const ROOT: &str = "https://demodb.my.erp.net";
pub const REDIRECT: &str = "http://localhost/signin-callback";
pub const T0: u64 = 1_655_057_724_000;

/// The n-th draw is 32 bytes of value n: the state is always `AAAA…`.
#[derive(Default)]
pub struct Counting(u8);

impl RandomSource for Counting {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), RandomUnavailable> {
        dest.fill(self.0);
        self.0 = self.0.wrapping_add(1);
        Ok(())
    }
}

/// The state of the first sign-in with [`Counting`].
pub const STATE: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Drains; returns the requests. Panics (a finding) if the loop contract breaks.
pub fn drain(session: &mut Session) -> Vec<HttpRequest> {
    let mut requests = Vec::new();
    for _ in 0..10_000 {
        match session.poll() {
            Output::Http(request) => requests.push(request),
            // Signature checks are not emitted here: the fuzzed sessions verify inline.
            Output::Persist(_) | Output::Event(_) | Output::VerifySignature(_) => {}
            Output::WaitUntil(_) | Output::Idle => return requests,
        }
    }
    panic!("poll() never said wait or idle");
}

/// The ERP.net preset, hybrid (`code id_token`, `form_post`) or code flow, with or without
/// `openid` (and so ID token checks) for the code flow.
pub fn config(hybrid: bool, openid: bool) -> Config {
    let mut builder = Config::erpnet(ROOT)
        .client_id("my.trusted.app/first")
        .client_secret("s")
        .redirect_uri(REDIRECT)
        .discovery(false);
    if hybrid {
        builder = builder.response_type(ResponseType::CodeIdToken).response_mode(ResponseMode::FormPost);
    } else if !openid {
        builder = builder.scope("offline_access read");
    }
    builder.build().expect("a valid configuration")
}

/// A session whose sign-in waits for its callback (the keys, if asked for, unanswered).
pub fn pending(hybrid: bool) -> (Session, Vec<HttpRequest>) {
    pending_with(config(hybrid, true))
}

fn pending_with(config: Config) -> (Session, Vec<HttpRequest>) {
    let mut session = Session::with_random(config, Counting::default());
    drain(&mut session);
    session.sign_in(T0, SignInOptions::new()).expect("sign-in");
    let requests = drain(&mut session);
    (session, requests)
}

/// A session whose code exchange is in flight, and that request.
pub fn exchanging(openid: bool) -> (Session, HttpRequest) {
    let (mut session, _) = pending_with(config(false, openid));
    let callback = format!("{REDIRECT}?code=c&state={STATE}");
    session.handle_callback(T0, Callback::Url(&callback)).expect("callback");
    let request = drain(&mut session).into_iter().find(|r| r.kind == RequestKind::Token).expect("an exchange");
    (session, request)
}

/// Splits the fuzzer's bytes into a status and a body.
pub fn response(data: &[u8]) -> HttpResponse {
    let (head, body) = data.split_at(data.len().min(2));
    let status = head.iter().fold(0u16, |s, b| s.wrapping_mul(256).wrapping_add(u16::from(*b))) % 600;
    HttpResponse::new(status, body.to_vec())
}
