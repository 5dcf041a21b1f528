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
pub fn seed_builder() -> ConfigBuilder {
    Config::erpnet(ROOT)
        .client_id(CLIENT_ID)
        .client_secret(SECRET)
        .redirect_uri(REDIRECT)
        .discovery(false)
        .validate_id_tokens(false)
}

/// Everything one drain produced.
#[derive(Debug, Default)]
pub struct Drained {
    pub requests: Vec<HttpRequest>,
    pub events: Vec<Event>,
    pub persisted: Vec<Snapshot>,
    pub wait_until: Option<u64>,
}

/// Drains `poll()` to its end, as every host must.
pub fn drain(session: &mut Session) -> Drained {
    let mut out = Drained::default();
    loop {
        match session.poll() {
            Output::Http(req) => out.requests.push(req),
            Output::Persist(snapshot) => out.persisted.push(*snapshot),
            Output::Event(event) => out.events.push(event),
            Output::WaitUntil(at) => {
                out.wait_until = Some(at);
                return out;
            }
            Output::Idle => return out,
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
