//! A stored snapshot is data, not configuration: whoever can write the store (a Redis shared
//! by several processes, a browser's storage) cannot move a process's endpoints, plant its
//! signing keys or spread them to the other sessions of the process.

mod common;

use common::*;
use erpnet_auth::error::Warning;
use erpnet_auth::*;
use erpnet_auth_sim::{SimDriver, SimIdp};

/// The ERP.net preset with discovery and ID tokens checked, as a server configures it.
fn config(snapshot_provider: bool) -> Config {
    Config::erpnet(ROOT)
        .client_id(CLIENT_ID)
        .client_secret(SECRET)
        .redirect_uri(REDIRECT)
        .snapshot_provider(snapshot_provider)
        .build()
        .unwrap()
}

fn provider() -> SimIdp {
    let mut idp = SimIdp::new(ROOT, CLIENT_ID, Some(SECRET));
    idp.signer = Some(erpnet_auth_sim::Signer::from_seed(1, "key-1"));
    idp
}

/// A session that discovered the provider, fetched its keys and signed a user in.
fn signed_in(snapshot_provider: bool) -> SimDriver {
    let session = Session::with_random(config(snapshot_provider), SeededRandom::new(7));
    let mut d = SimDriver::new(session, provider(), T0);
    d.sign_in().unwrap();
    assert!(d.session.is_signed_in());
    d
}

const PLANTED_TOKEN_ENDPOINT: &str = "https://demodb.my.erp.net/id/connect/token-steal";

/// `snapshot` with provider documents written into it by someone with access to the store:
/// the token endpoint moved to another path of the instance's origin (where the client
/// secret would be posted), a key set of another key under the provider's key id, and the
/// Domain API moved to another path.
fn planted(snapshot: &Snapshot) -> Snapshot {
    let mut value: serde_json::Value = serde_json::from_str(&snapshot.to_json()).unwrap();
    let id = format!("{ROOT}/id");
    value["metadata"] = serde_json::json!({
        "issuer": id, "authorization_endpoint": format!("{id}/connect/authorize"),
        "token_endpoint": PLANTED_TOKEN_ENDPOINT, "jwks_uri": format!("{id}/.well-known/openid-configuration/jwks"),
    });
    value["jwks"] = serde_json::json!({"keys": [erpnet_auth_sim::Signer::from_seed(666, "key-1").jwk()]});
    value["sites"] = serde_json::json!({"odata_root": format!("{ROOT}/steal/odata/")});
    Snapshot::from_json(&value.to_string()).unwrap()
}

/// Answers `requests` (and what they lead to) from the provider: the instance's sites, the
/// provider's documents.
fn answer(session: &mut Session, requests: Vec<HttpRequest>) -> Drained {
    let mut idp = provider();
    let mut all = Drained::default();
    let mut queue = requests;
    while let Some(request) = queue.pop() {
        let response = idp.handle(T0, &request);
        session.handle_response(T0, request.id, response).unwrap();
        let out = drain(session);
        queue.extend(out.requests);
        all.events.extend(out.events);
    }
    all
}

/// The refresh the session sends for a call at `now` (the token has expired by then).
fn refresh_for_a_call(session: &mut Session, now: u64) -> HttpRequest {
    session.call_api(now, ApiRequest::get("Crm_Customers")).unwrap();
    let out = drain(session);
    let refresh = out
        .requests
        .iter()
        .find(|r| r.kind == RequestKind::Token)
        .cloned()
        .unwrap_or_else(|| panic!("no refresh: {:?} {:?}", out.requests, out.events));
    refresh
}

const LATER: u64 = T0 + 2 * 3_600_000;

/// A process whose snapshots never carry provider documents (`snapshot_provider(false)`, a
/// server sharing one provider state) ignores them in a stored snapshot: restored with the
/// shared state, handed in later, or restored alone (then it discovers the provider
/// itself). Their presence is reported as a warning: the store was written by someone else.
#[test]
fn a_process_that_never_stores_provider_documents_ignores_them_in_a_snapshot() {
    let first = signed_in(false);
    let shared = first.session.provider_state();
    assert!(shared.has_keys(), "the process learned the provider's keys");
    let stored = first.stored.clone().unwrap();
    assert!(stored.metadata().is_none() && !stored.has_signing_keys(), "nothing of the provider is written");
    let planted = planted(&stored);
    let warning = Event::Warning { warning: Warning::StoredProviderDataIgnored };

    // Restored with the shared provider state.
    let mut session =
        Session::with_provider(config(false), &shared, Some(planted.clone()), CountingRandom::default()).unwrap();
    let out = drain(&mut session);
    assert!(out.events.contains(&warning), "{:?}", out.events);
    answer(&mut session, out.requests);
    assert_eq!(session.provider_metadata().unwrap().token_endpoint, format!("{ROOT}/id/connect/token"));
    let refresh = refresh_for_a_call(&mut session, LATER);
    assert_eq!(refresh.url, format!("{ROOT}/id/connect/token"), "the client secret goes to the discovered endpoint");
    let learned = session.provider_state();
    assert!(learned.metadata().is_some_and(|m| m.token_endpoint != PLANTED_TOKEN_ENDPOINT));

    // Handed in to a live session (another process wrote the store).
    let mut live =
        Session::with_provider(config(false), &shared, Some(stored.clone()), CountingRandom::default()).unwrap();
    let out = drain(&mut live);
    answer(&mut live, out.requests);
    live.handle_snapshot(T0, planted.clone()).unwrap();
    assert!(drain(&mut live).events.contains(&warning));
    assert_eq!(refresh_for_a_call(&mut live, LATER).url, format!("{ROOT}/id/connect/token"));

    // Restored without the shared state: it discovers the provider, not the stored document.
    let mut alone = Session::restore(config(false), planted, CountingRandom::default()).unwrap();
    let out = drain(&mut alone);
    assert!(out.events.contains(&warning));
    assert!(out.requests.iter().any(|r| r.kind == RequestKind::Discovery), "{:?}", out.requests);
    assert!(!alone.is_provider_ready());
    assert!(!alone.provider_state().has_keys(), "no planted key to pass on");
}

/// Where snapshots do carry the provider's documents (a browser's storage), a stored one
/// never replaces what the session discovered, and keys found in a snapshot are used by the
/// session but never passed on to the process's shared provider state.
#[test]
fn a_stored_document_never_replaces_a_discovered_one_and_stored_keys_are_never_shared() {
    let mut d = signed_in(true);
    let planted = planted(&d.stored.clone().unwrap());
    d.session.handle_snapshot(d.now, planted.clone()).unwrap();
    assert!(drain(&mut d.session).events.is_empty(), "a stored document is no warning where documents are stored");
    assert_eq!(d.session.provider_metadata().unwrap().token_endpoint, format!("{ROOT}/id/connect/token"));
    assert_eq!(refresh_for_a_call(&mut d.session, LATER).url, format!("{ROOT}/id/connect/token"));

    // A process's shared state with the provider's metadata but no keys yet; a session
    // restored with it and a snapshot holding keys.
    let mut discovering = Session::with_random(config(true), CountingRandom::default());
    let out = drain(&mut discovering);
    answer(&mut discovering, out.requests);
    let shared = discovering.provider_state();
    assert!(shared.metadata().is_some() && !shared.has_keys());
    let session = Session::with_provider(config(true), &shared, Some(planted), CountingRandom::default()).unwrap();
    assert_eq!(session.provider_metadata().unwrap().token_endpoint, format!("{ROOT}/id/connect/token"));
    let learned = session.provider_state();
    assert!(!learned.has_keys(), "keys from a snapshot are not passed on");
    assert!(!learned.or(&shared).has_keys());
}
