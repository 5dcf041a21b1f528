//! Sessions shared by several processes: the token lock's lease the session asks for, the
//! check that a held lease still covers a token request, and the store layout every driver
//! uses, kept identical to the npm package's `RedisStorage`.

mod common;

use common::*;
use erpnet_auth::shared_store::TOKEN_LEASE_MARGIN_MS;
use erpnet_auth::shared_store::*;
use erpnet_auth::*;
use erpnet_auth_sim::{SimDriver, SimIdp};

const TIMEOUT_MS: u64 = 9_000;

/// A session signed in at the simulated provider with validated, signed ID tokens (key
/// `key-1`), renewing on a timer, token requests timing out after [`TIMEOUT_MS`].
fn signed_in_at_provider() -> SimDriver {
    let mut timing = renewing_idle_sessions();
    timing.request_timeout_ms = TIMEOUT_MS;
    let config = seed_builder().scope(SEED_SCOPE).timing(timing).validate_id_tokens(true).build().unwrap();
    let mut idp = SimIdp::new(ROOT, CLIENT_ID, Some(SECRET));
    idp.signer = Some(erpnet_auth_sim::Signer::from_seed(1, "key-1"));
    let mut d = SimDriver::new(Session::with_random(config, SeededRandom::new(1)), idp, T0);
    d.sign_in().unwrap();
    assert!(d.session.is_signed_in());
    d
}

/// The proactive renewal's refresh, emitted and not answered.
fn refresh_due(d: &mut SimDriver) -> HttpRequest {
    let at = d.wait_until.expect("a renewal is scheduled");
    d.advance_to(at);
    let refresh = d.outbox.pop_front().expect("the refresh");
    assert_eq!(refresh.kind, RequestKind::Token);
    assert!(d.outbox.is_empty());
    refresh
}

#[test]
fn the_lease_covers_the_token_request_and_the_key_fetch_after_it() {
    let mut d = signed_in_at_provider();
    // The provider rotated its signing key: the refreshed ID token names a key not cached,
    // so checking it needs a key-set fetch after the answer, under the same lock.
    d.idp.signer = Some(erpnet_auth_sim::Signer::from_seed(2, "key-2"));
    let refresh = refresh_due(&mut d);
    let emitted_at = d.now;
    let deadline = refresh.deadline.unwrap();
    assert_eq!(deadline, emitted_at + TIMEOUT_MS);

    let lease = d.session.token_lease_ms(refresh.id).unwrap();
    assert_eq!(lease, 2 * TIMEOUT_MS + TOKEN_LEASE_MARGIN_MS, "the request, a key fetch, the margin");
    // The host asks for the lock at the session's `now` (or later): the lease ends then.
    let lease_end = emitted_at + lease;
    assert!(d.session.lease_covers(refresh.id, lease_end));

    // The worst case: answered a millisecond before its deadline, then the keys are fetched
    // and answered a millisecond before theirs.
    let answered_at = deadline - 1;
    let response = d.idp.handle(answered_at, &refresh);
    d.now = answered_at;
    d.session.handle_response(answered_at, refresh.id, response).unwrap();
    d.drain();
    assert!(d.session.is_checking_token_answer(), "the lock stays held while the ID token waits for its keys");
    let keys = d.outbox.pop_front().expect("the key-set fetch");
    assert_eq!(keys.kind, RequestKind::Keys);
    let keys_deadline = keys.deadline.unwrap();
    assert_eq!(keys_deadline, answered_at + TIMEOUT_MS);
    assert!(
        keys_deadline + TOKEN_LEASE_MARGIN_MS / 2 < lease_end,
        "the key fetch ends {} ms before the lease, at the latest",
        lease_end - keys_deadline
    );
    let keys_answered_at = keys_deadline - 1;
    let response = d.idp.handle(keys_answered_at, &keys);
    d.now = keys_answered_at;
    d.session.handle_response(keys_answered_at, keys.id, response).unwrap();
    d.drain();
    assert!(d.events().iter().any(|e| matches!(e, Event::TokensRenewed { .. })), "{:?}", d.events());
    assert!(!d.session.is_checking_token_answer(), "the lock can be released, before the lease ends");
    assert!(d.now < lease_end);
}

#[test]
fn the_lease_is_counted_from_the_sessions_clock_not_from_the_emission() {
    let mut d = signed_in_at_provider();
    let refresh = refresh_due(&mut d);
    let deadline = refresh.deadline.unwrap();
    // Time passes before the host asks (the session learns it from any input).
    let later = d.now + 2_000;
    d.session.handle_timeout(later).unwrap();
    d.now = later;
    d.drain();
    let lease = d.session.token_lease_ms(refresh.id).unwrap();
    assert_eq!(lease, deadline + TIMEOUT_MS + TOKEN_LEASE_MARGIN_MS - later, "what is left, not a fixed length");
    assert!(d.session.lease_covers(refresh.id, later + lease));
}

#[test]
fn a_held_lease_covers_the_request_down_to_half_the_margin_and_not_a_millisecond_less() {
    let mut d = signed_in_at_provider();
    let refresh = refresh_due(&mut d);
    let boundary = refresh.deadline.unwrap() + TIMEOUT_MS + TOKEN_LEASE_MARGIN_MS / 2;
    assert!(d.session.lease_covers(refresh.id, boundary));
    assert!(d.session.lease_covers(refresh.id, boundary + 1));
    assert!(!d.session.lease_covers(refresh.id, boundary - 1));
    assert!(!d.session.lease_covers(refresh.id, refresh.deadline.unwrap()), "a lease ending at the deadline");
    assert!(!d.session.lease_covers(refresh.id, 0));
}

#[test]
fn a_lease_asked_after_the_clock_ran_behind_the_session_is_refused() {
    let mut d = signed_in_at_provider();
    let refresh = refresh_due(&mut d);
    let lease = d.session.token_lease_ms(refresh.id).unwrap();
    // The host's clock read a second less than the session's latest `now`.
    let asked_at = d.now - TOKEN_LEASE_MARGIN_MS / 2 - 1;
    assert!(!d.session.lease_covers(refresh.id, asked_at + lease));
    assert!(d.session.lease_covers(refresh.id, asked_at + 1 + lease), "within half the margin it is tolerated");
}

fn signed_in_plain() -> Session {
    let (mut session, exchange) = to_exchanging(seed_builder().build().unwrap());
    assert_eq!(
        session.token_lease_ms(exchange.id),
        Some(2 * Timing::default().request_timeout_ms + TOKEN_LEASE_MARGIN_MS)
    );
    redeem(&mut session, &exchange, TOKENS);
    assert_eq!(session.token_lease_ms(exchange.id), None, "answered");
    assert!(!session.lease_covers(exchange.id, u64::MAX));
    session
}

#[test]
fn only_a_token_request_still_to_be_sent_has_a_lease() {
    let mut session = signed_in_plain();
    // An API call: no lock, no lease.
    session.call_api(T0, ApiRequest::get("Crm_Customers")).unwrap();
    let api = drain(&mut session).requests.remove(0);
    assert_eq!(api.kind, RequestKind::Api);
    assert_eq!(session.token_lease_ms(api.id), None);
    assert!(!session.lease_covers(api.id, u64::MAX));
    session.handle_response(T0, api.id, HttpResponse::new(200, "{}")).unwrap();
    drain(&mut session);
    assert_eq!(session.token_lease_ms(RequestId(999)), None, "unknown");

    // A refresh made obsolete by newer tokens another process stored.
    session.call_api(EXPIRED, ApiRequest::get("Crm_Customers")).unwrap();
    let refresh = drain(&mut session).requests.remove(0);
    assert_eq!(refresh.kind, RequestKind::Token);
    assert!(session.token_lease_ms(refresh.id).is_some());
    let mut other: serde_json::Value = serde_json::from_str(&session.snapshot().to_json()).unwrap();
    other["tokens"]["access_token"] = "at-other".into();
    other["tokens"]["refresh_token"] = "rt-other".into();
    other["tokens"]["received_at"] = EXPIRED.into();
    other["tokens"]["expires_at"] = (EXPIRED + 3_600_000).into();
    session.handle_snapshot(EXPIRED, Snapshot::from_json(&other.to_string()).unwrap()).unwrap();
    drain(&mut session);
    assert!(!session.is_request_wanted(refresh.id));
    assert_eq!(session.token_lease_ms(refresh.id), None, "abandoned");
    assert!(!session.lease_covers(refresh.id, u64::MAX));
}

#[test]
fn a_timed_out_token_request_has_no_lease() {
    let mut session = signed_in_plain();
    session.call_api(EXPIRED, ApiRequest::get("Crm_Customers")).unwrap();
    let refresh = drain(&mut session).requests.remove(0);
    let deadline = refresh.deadline.unwrap();
    session.handle_timeout(deadline - 1).unwrap();
    drain(&mut session);
    assert!(session.token_lease_ms(refresh.id).is_some());
    session.handle_timeout(deadline).unwrap();
    drain(&mut session);
    assert_eq!(session.token_lease_ms(refresh.id), None);
    assert!(!session.lease_covers(refresh.id, u64::MAX));
}

// ----- the store layout, the same as the npm package's -----

fn package_file(name: &str) -> String {
    let path = format!("{}/pkg-template/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The text of the JavaScript template literal `const {name} = `…`;`.
fn js_template<'a>(source: &'a str, name: &str) -> &'a str {
    let start = format!("const {name} = `");
    let from = source.find(&start).unwrap_or_else(|| panic!("{name} not found")) + start.len();
    let len = source[from..].find("`;").unwrap_or_else(|| panic!("{name} not closed"));
    &source[from..from + len]
}

#[test]
fn the_redis_scripts_are_the_npm_packages_byte_for_byte() {
    let redis = package_file("redis.js");
    assert_eq!(COMPARE_AND_SWAP_SCRIPT, js_template(&redis, "COMPARE_AND_SWAP"));
    assert_eq!(RELEASE_SCRIPT, js_template(&redis, "RELEASE"));
}

#[test]
fn the_keys_fields_and_lifetimes_are_the_npm_packages() {
    let redis = package_file("redis.js");
    let client = package_file("client.js");
    let expect = |source: &str, text: &str| assert!(source.contains(text), "the package no longer has {text}");

    expect(&redis, &format!("prefix = \"{DEFAULT_PREFIX}\""));
    assert_eq!(DEFAULT_PREFIX, "erpnet-auth:");
    expect(&redis, &format!("[\"HGET\", this.#prefix + key, \"{SNAPSHOT_FIELD}\"]"));
    expect(&redis, "[\"EVAL\", COMPARE_AND_SWAP, \"1\", this.#prefix + key, generation, base, value, ttl]");
    assert_eq!(snapshot_key("p:", "session:1"), "p:session:1");
    assert!(COMPARE_AND_SWAP_SCRIPT.contains(&format!("'{GENERATION_FIELD}', ARGV[1], '{SNAPSHOT_FIELD}', ARGV[3]")));

    expect(&redis, "const key = `${this.#prefix}lock:${name}`;");
    assert_eq!(lock_key("p:", "session:1:token"), "p:lock:session:1:token");
    expect(&client, "`${this.#key}:token`");
    assert_eq!(token_lock_name("session:1"), "session:1:token");

    expect(&redis, "String(Number.MAX_SAFE_INTEGER)");
    expect(&redis, "write === undefined ? \"0\"");
    assert_eq!(UNCONDITIONAL_BASE_GENERATION, (1 << 53) - 1);

    expect(&redis, "const HOUR_MS = 3600 * 1000;");
    expect(&redis, "const DAY_MS = 24 * HOUR_MS;");
    expect(&redis, &format!("(key.startsWith(\"{SIGN_IN_KEY_PREFIX}\") ? HOUR_MS : 30 * DAY_MS)"));
    assert_eq!((SIGN_IN_TTL_MS, SESSION_TTL_MS), (3_600_000, 30 * 24 * 3_600_000));
    assert_eq!(default_ttl_ms("signin:abc"), SIGN_IN_TTL_MS);
    assert_eq!(default_ttl_ms("session:abc"), SESSION_TTL_MS);
}
