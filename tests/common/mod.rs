//! Helpers shared by the integration tests: configuration of the seed's trusted app and a
//! loop driver that drains `poll()` as the contract says.
#![allow(dead_code, unused_imports)]

use erpnet_auth::{Config, ConfigBuilder, Event, HttpRequest, Output, Session, Snapshot, Timing};
pub use erpnet_auth_sim::{CountingRandom, SeededRandom, SimIdp};

pub const ROOT: &str = "https://demodb.my.erp.net";
pub const CLIENT_ID: &str = "my.trusted.app/first";
pub const SECRET: &str = "s3cr+t/=";
pub const REDIRECT: &str = "http://localhost/signin-callback";
pub const SEED_SCOPE: &str = "openid profile offline_access DomainApi";
/// 2022-06-12T18:22:04Z, the seed's `iat`.
pub const T0: u64 = 1_655_057_724_000;

/// The seed page's trusted application, without discovery (fixed ERP.net paths). These
/// tests feed placeholder ID tokens (and the seed's own, from another issuer), so ID token
/// validation is off here; tests/id_tokens.rs covers it with real signed tokens.
///
/// With `ERPNET_TEST_HOST_SIGNATURES=1` every such session lets the host verify signatures
/// (`drain` answers the checks): `make rust-test` runs the ID token and hostile tests both
/// ways.
pub fn seed_builder() -> ConfigBuilder {
    Config::erpnet(ROOT)
        .client_id(CLIENT_ID)
        .client_secret(SECRET)
        .redirect_uri(REDIRECT)
        .discovery(false)
        .validate_id_tokens(false)
        .host_verifies_signatures(host_signatures())
}

/// Whether this test run lets the host verify signatures.
pub fn host_signatures() -> bool {
    std::env::var_os("ERPNET_TEST_HOST_SIGNATURES").is_some_and(|v| v == "1")
}

/// Everything one drain produced.
#[derive(Debug, Default)]
pub struct Drained {
    pub requests: Vec<HttpRequest>,
    pub events: Vec<Event>,
    pub persisted: Vec<Snapshot>,
    pub wait_until: Option<u64>,
    /// Signature checks answered (host verification), with their verdicts.
    pub signature_checks: Vec<bool>,
}

/// Drains `poll()` to its end, as every host must. Signature checks (host verification)
/// are answered after the drain with the crate's own verifier, and drained again.
pub fn drain(session: &mut Session) -> Drained {
    let mut out = Drained::default();
    loop {
        let checks = drain_once(session, &mut out);
        if checks.is_empty() {
            return out;
        }
        for check in checks {
            let valid = check.verify_in_rust();
            out.signature_checks.push(valid);
            // Time never runs backwards: 0 means "no later than the last input".
            session.handle_signature(0, check.id, valid).unwrap();
        }
    }
}

fn drain_once(session: &mut Session, out: &mut Drained) -> Vec<erpnet_auth::SignatureCheck> {
    let mut checks = Vec::new();
    loop {
        match session.poll() {
            Output::VerifySignature(check) => checks.push(*check),
            Output::Http(req) => out.requests.push(req),
            Output::Persist(snapshot) => out.persisted.push(*snapshot),
            Output::Event(event) => out.events.push(event),
            Output::WaitUntil(at) => {
                out.wait_until = Some(at);
                return checks;
            }
            Output::Idle => {
                out.wait_until = None;
                return checks;
            }
        }
    }
}

/// The state the host would persist, for "nothing changed" assertions.
pub fn state_of(session: &Session) -> String {
    session.snapshot().to_json()
}

/// Timing that renews proactively even when no call used the token, for tests about what a
/// renewal does rather than when it starts.
pub fn renewing_idle_sessions() -> Timing {
    let mut timing = Timing::default();
    timing.renew_idle_sessions = true;
    timing
}
