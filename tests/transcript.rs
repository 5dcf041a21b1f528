//! Transcripts: the exact sequence of outputs of whole scenarios on a fake clock.

mod common;

use common::*;
use erpnet_auth::config::{ResponseMode, ResponseType};
use erpnet_auth::error::{CallError, SignInRequiredReason};
use erpnet_auth::*;
use erpnet_auth_sim::{summarize, SimDriver};

fn seed_driver() -> SimDriver {
    let config = seed_builder().scope(SEED_SCOPE).build().unwrap();
    let session = Session::with_random(config, SeededRandom::new(1));
    SimDriver::new(session, SimIdp::new(ROOT, CLIENT_ID, Some(SECRET)), T0)
}

fn transcript(driver: &SimDriver, from: usize) -> Vec<String> {
    driver.log[from..].iter().map(summarize).collect()
}

/// The seed scenario: authorize → callback → token → API call → the host sleeps past
/// expiry → the next call waits for the refresh → the call goes out with the new token.
#[test]
fn seed_scenario_sign_in_expiry_refresh() {
    let mut d = seed_driver();
    d.sign_in().unwrap();
    d.call(ApiRequest::get("Crm_Customers?$top=10")).unwrap();
    assert_eq!(
        transcript(&d, 0),
        [
            "persist tokens=none",
            "browser /id/connect/authorize",
            "browser /signin-callback",
            "persist tokens=none",
            "request #1 POST /id/connect/token authorization_code",
            "response #1 200",
            "persist tokens=at-000002+rt-000003",
            "event SignedIn",
            "request #2 GET /api/domain/odata/Crm_Customers bearer=at-000002",
            "response #2 200",
            "event CallCompleted",
        ]
    );
    assert_eq!(d.wait_until, Some(T0 + 3_600_000 - 60_000), "renewal is scheduled a minute before expiry");

    // The host slept through the timer: the clock is past expiry at the next call.
    let mark = d.log.len();
    d.now = T0 + 3_600_000 + 1;
    d.call(ApiRequest::get("Crm_Customers?$top=10")).unwrap();
    assert_eq!(
        transcript(&d, mark),
        [
            "request #3 POST /id/connect/token refresh_token",
            "response #3 200",
            "persist tokens=at-000004+rt-000005",
            "event TokensRenewed",
            "request #4 GET /api/domain/odata/Crm_Customers bearer=at-000004",
            "response #4 200",
            "event CallCompleted",
        ]
    );
    assert_eq!(d.idp.stats.refreshes, 1);
    assert_eq!(d.idp.stats.api_unauthorized, 0, "no call went out with the expired token");
}

/// The seed's renewal exchange as the page describes it: the API says 401, the client
/// refreshes with the seed's form body, replays, and gets 200.
#[test]
fn seed_renewal_after_401_replays_once() {
    let mut d = seed_driver();
    d.sign_in().unwrap();
    d.idp.revoke_access_tokens();
    // Past the rejection cooldown of a brand-new token (see the next test).
    d.now += Timing::default().rejection_cooldown_ms;
    let mark = d.log.len();
    let call = d.call(ApiRequest::get("Crm_Customers?$top=10")).unwrap();
    assert_eq!(
        transcript(&d, mark),
        [
            "request #2 GET /api/domain/odata/Crm_Customers bearer=at-000002",
            "response #2 401",
            "request #3 POST /id/connect/token refresh_token",
            "response #3 200",
            "persist tokens=at-000004+rt-000005",
            "event TokensRenewed",
            "request #4 GET /api/domain/odata/Crm_Customers bearer=at-000004",
            "response #4 200",
            "event CallCompleted",
        ]
    );
    let refresh = d.log.iter().find_map(|e| match e {
        erpnet_auth_sim::Entry::Request(r) if r.id == RequestId(3) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(
        refresh.unwrap().body_text().unwrap(),
        "client_id=my.trusted.app%2Ffirst&client_secret=s3cr%2Bt%2F%3D&grant_type=refresh_token&refresh_token=rt-000003"
    );
    assert!(matches!(&d.results[&call], Event::CallCompleted { response, .. } if response.status == 200));
}

/// A 401 after the replay goes to the caller: never a loop. An API that refuses every token costs one refresh per cooldown, not one per call.
#[test]
fn second_401_is_delivered_not_looped() {
    let mut d = seed_driver();
    d.sign_in().unwrap();
    d.idp.reject_all_api_calls = true;
    d.now += Timing::default().rejection_cooldown_ms;
    let call = d.call(ApiRequest::get("Crm_Customers")).unwrap();
    assert!(matches!(&d.results[&call], Event::CallCompleted { response, .. } if response.status == 401));
    assert_eq!(d.idp.stats.api_requests, 2);
    assert_eq!(d.idp.stats.refreshes, 1);
    // Ten more calls a second apart: the brand-new token's 401s go to the callers.
    for _ in 0..10 {
        d.now += 1_000;
        let call = d.call(ApiRequest::get("Crm_Customers")).unwrap();
        assert!(matches!(&d.results[&call], Event::CallCompleted { response, .. } if response.status == 401));
    }
    assert_eq!(d.idp.stats.api_requests, 12, "one request per call, no replays");
    assert_eq!(d.idp.stats.refreshes, 1, "no refresh within the cooldown");
    // After the cooldown, one more refresh is tried.
    d.now += Timing::default().rejection_cooldown_ms;
    d.call(ApiRequest::get("Crm_Customers")).unwrap();
    assert_eq!(d.idp.stats.refreshes, 2);
}

/// Proactive renewal: at the scheduled time the refresh goes out in the background.
#[test]
fn proactive_renewal_on_the_timer() {
    let mut d = seed_driver();
    d.sign_in().unwrap();
    assert_eq!(d.wait_until, None, "nobody used the session yet: no renewal timer");
    d.call(ApiRequest::get("Crm_Customers")).unwrap();
    let at = d.wait_until.unwrap();
    let mark = d.log.len();
    d.advance_to(at);
    // While the refresh is out, the still-valid token keeps serving calls.
    let call = d.session.call_api(d.now, ApiRequest::get("Crm_Customers")).unwrap();
    d.drain();
    d.deliver_all();
    assert_eq!(
        transcript(&d, mark),
        [
            "request #3 POST /id/connect/token refresh_token",
            "request #4 GET /api/domain/odata/Crm_Customers bearer=at-000002",
            "response #3 200",
            "persist tokens=at-000004+rt-000005",
            "event TokensRenewed",
            "response #4 200",
            "event CallCompleted",
        ]
    );
    assert!(d.results.contains_key(&call));
}

/// The seed's hybrid sign-in (`code id_token`) with `response_mode=form_post`.
#[test]
fn hybrid_form_post_sign_in() {
    let config = seed_builder()
        .scope(SEED_SCOPE)
        .response_type(ResponseType::CodeIdToken)
        .response_mode(ResponseMode::FormPost)
        .build()
        .unwrap();
    let mut idp = SimIdp::new(ROOT, CLIENT_ID, Some(SECRET));
    idp.signer = Some(erpnet_auth_sim::Signer::from_seed(2, "sim-1"));
    let mut d = SimDriver::new(Session::with_random(config, SeededRandom::new(2)), idp, T0);
    d.sign_in().unwrap();
    let authorize = d.log.iter().find_map(|e| match e {
        erpnet_auth_sim::Entry::Browser(url) if url.contains("/connect/authorize") => Some(url.clone()),
        _ => None,
    });
    let authorize = authorize.unwrap();
    assert!(authorize.contains("response_type=code+id_token") && authorize.contains("response_mode=form_post"));
    assert!(transcript(&d, 0).contains(&"browser form_post".to_owned()));
    assert!(d.session.is_signed_in());
}

/// Without a refresh token (no `offline_access`), an expired token ends the session once.
#[test]
fn no_refresh_token_means_sign_in_required_once() {
    let config = seed_builder().scope("openid read").build().unwrap();
    let mut d = SimDriver::new(
        Session::with_random(config, SeededRandom::new(3)),
        SimIdp::new(ROOT, CLIENT_ID, Some(SECRET)),
        T0,
    );
    d.sign_in().unwrap();
    assert_eq!(d.wait_until, None, "nothing to renew proactively");
    d.now = T0 + 3_600_000;
    let call = d.call(ApiRequest::get("Crm_Customers")).unwrap();
    assert!(matches!(
        &d.results[&call],
        Event::CallFailed { error: CallFailure::SignInRequired(SignInRequiredReason::NoRefreshToken), .. }
    ));
    assert_eq!(d.call(ApiRequest::get("Crm_Customers")), Err(CallError::Usage(UsageError::NotSignedIn).to_string()));
    let reported = d.events().iter().filter(|e| matches!(e, Event::SignInRequired { .. })).count();
    assert_eq!(reported, 1);
    assert_eq!(d.idp.stats.token_requests, 1);
}
