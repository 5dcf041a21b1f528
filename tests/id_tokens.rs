//! ID token validation with keys generated here (RSA 2048 and P-256): good tokens are
//! accepted; each kind of bad one is refused with its own reason, before the code is
//! redeemed, and nothing else in the session changes.

mod common;

use std::sync::OnceLock;

use base64::Engine;
use common::*;
use erpnet_auth::config::ResponseType;
use erpnet_auth::error::{IdTokenError, SignInError, SignInRequiredReason, UserInfoError};
use erpnet_auth::jose::SigningAlgorithm;
use erpnet_auth::*;
use rand_core::OsRng;
use serde_json::{json, Value};

const KID_RSA: &str = "rsa-1";
const KID_EC: &str = "ec-1";
const CODE: &str = "g0ZGZmNjVmOWI";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Keys {
    rsa: rsa::RsaPrivateKey,
    ec: p256::ecdsa::SigningKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA key"),
        ec: p256::ecdsa::SigningKey::random(&mut OsRng),
    })
}

fn jwks(with_rsa_kid: &str) -> String {
    use rsa::traits::PublicKeyParts;
    let k = keys();
    let public = k.rsa.to_public_key();
    let point = k.ec.verifying_key().to_encoded_point(false);
    json!({"keys": [
        {"kty": "RSA", "kid": with_rsa_kid, "use": "sig", "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be())},
        {"kty": "EC", "kid": KID_EC, "use": "sig", "crv": "P-256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())},
    ]})
    .to_string()
}

fn sign(alg: &str, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": alg, "kid": kid, "typ": "JWT"}).to_string();
    sign_text(alg, &header, &claims.to_string())
}

/// Signs header and claims given as JSON text (which may say what a `Value` cannot, such as
/// a member twice).
fn sign_text(alg: &str, header: &str, claims: &str) -> String {
    use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let k = keys();
    let signature = match alg {
        "RS256" => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(k.rsa.clone()).sign(input.as_bytes()).to_vec(),
        "PS256" => rsa::pss::BlindedSigningKey::<sha2::Sha256>::new(k.rsa.clone())
            .sign_with_rng(&mut OsRng, input.as_bytes())
            .to_vec(),
        "ES256" => {
            let signature: p256::ecdsa::Signature = k.ec.sign(input.as_bytes());
            signature.to_bytes().to_vec()
        }
        _ => b"not a signature".to_vec(),
    };
    format!("{input}.{}", b64(&signature))
}

fn hash(value: &str) -> String {
    use sha2::Digest;
    b64(&sha2::Sha256::digest(value.as_bytes())[..16])
}

fn nonce() -> String {
    b64(&[1u8; 32])
}

fn state() -> String {
    b64(&[0u8; 32])
}

const NOW_S: u64 = T0 / 1000;

/// Claims of a good front-channel token for the pending sign-in.
fn good_claims() -> Value {
    json!({
        "iss": format!("{ROOT}/id"), "sub": "admin", "aud": CLIENT_ID, "exp": NOW_S + 300, "iat": NOW_S,
        "nonce": nonce(), "c_hash": hash(CODE), "s_hash": hash(&state()), "auth_time": NOW_S - 10,
        "name": "SPS", "email": "admin@mail.com", "user_type": "InternalUser",
    })
}

fn hybrid() -> ConfigBuilder {
    seed_builder().response_type(ResponseType::CodeIdToken).validate_id_tokens(true)
}

/// A hybrid sign-in waiting for its callback, the key set already fetched.
fn pending(builder: ConfigBuilder, served_kid: &str) -> Session {
    pending_serving(builder, &jwks(served_kid))
}

/// A sign-in waiting for its callback, the key set fetched while the user signs in
/// answered with `key_set`.
fn pending_serving(builder: ConfigBuilder, key_set: &str) -> Session {
    let (mut session, mut out) = to_pending(builder.build().unwrap());
    let keys_request = out.requests.remove(0);
    assert_eq!(keys_request.kind, RequestKind::Keys, "the keys are fetched while the user signs in");
    assert_eq!(keys_request.url, "https://demodb.my.erp.net/id/.well-known/openid-configuration/jwks");
    session.handle_response(T0, keys_request.id, HttpResponse::new(200, key_set)).unwrap();
    drain(&mut session);
    session
}

/// The code flow's callback with [`CODE`].
fn code_callback() -> String {
    format!("{REDIRECT}?code={CODE}&state={}", state())
}

fn callback(session: &mut Session, id_token: &str) -> Drained {
    let url = format!("{REDIRECT}#code={CODE}&id_token={id_token}&state={}", state());
    session.handle_callback(T0 + 1_000, Callback::Url(&url)).unwrap();
    drain(session)
}

fn sign_in_error(drained: &Drained) -> Option<IdTokenError> {
    drained.events.iter().find_map(|e| match e {
        Event::SignInFailed { error: SignInError::IdToken(reason) } => Some(*reason),
        _ => None,
    })
}

#[test]
fn good_tokens_are_accepted_for_each_algorithm() {
    for (alg, kid) in [("RS256", KID_RSA), ("PS256", KID_RSA), ("ES256", KID_EC)] {
        let mut session = pending(hybrid(), KID_RSA);
        let out = callback(&mut session, &sign(alg, kid, &good_claims()));
        assert_eq!(sign_in_error(&out), None, "{alg}");
        assert_eq!(out.requests.len(), 1, "{alg}: the code is redeemed after the check");
        assert_eq!(out.requests[0].kind, RequestKind::Token);
    }
}

#[test]
fn bad_front_channel_tokens_are_refused_before_any_token_request() {
    let claims_with = |key: &str, value: Value| {
        let mut c = good_claims();
        c[key] = value;
        c
    };
    let without = |key: &str| {
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove(key);
        c
    };
    let good = sign("RS256", KID_RSA, &good_claims());
    let (head, rest) = good.split_once('.').unwrap();
    let (body, signature) = rest.split_once('.').unwrap();
    let mut flipped = b64(&[0u8; 256]);
    flipped.truncate(signature.len());
    let unsigned = format!("{}.{body}.", b64(br#"{"alg":"none"}"#));
    let hs256 = format!("{}.{body}.{signature}", b64(br#"{"alg":"HS256","kid":"rsa-1"}"#));
    let other_body = b64(claims_with("sub", json!("mallory")).to_string().as_bytes());
    let huge = format!("{head}.{}.{signature}", "A".repeat(20_000));
    // A member twice, validly signed: JSON parsers disagree on which one counts (the first,
    // the last), so the token is refused whole rather than read one way here and another
    // way elsewhere.
    let header = json!({"alg": "RS256", "kid": KID_RSA}).to_string();
    let twice = |text: String, member: &str| text.replacen('{', &format!("{{{member},"), 1);
    let claims_twice = |member: &str| sign_text("RS256", &header, &twice(good_claims().to_string(), member));
    let header_twice = sign_text("RS256", &twice(header.clone(), r#""alg":"none""#), &good_claims().to_string());
    let cases: Vec<(&str, String, IdTokenError)> = vec![
        ("iss twice", claims_twice(r#""iss":"https://evil.example/id""#), IdTokenError::Malformed),
        ("sub twice", claims_twice(r#""sub":"mallory""#), IdTokenError::Malformed),
        ("nonce twice", claims_twice(r#""nonce":"abc""#), IdTokenError::Malformed),
        ("an unknown claim twice", claims_twice(r#""x":1,"x":2"#), IdTokenError::Malformed),
        ("alg twice in the header", header_twice, IdTokenError::Malformed),
        ("tampered claims", format!("{head}.{other_body}.{signature}"), IdTokenError::BadSignature),
        ("tampered signature", format!("{head}.{body}.{flipped}"), IdTokenError::BadSignature),
        ("alg none", unsigned, IdTokenError::AlgorithmNone),
        ("wrong alg", hs256, IdTokenError::UnsupportedAlgorithm),
        ("expired", sign("RS256", KID_RSA, &claims_with("exp", json!(NOW_S - 60))), IdTokenError::Expired),
        ("not yet valid", sign("RS256", KID_RSA, &claims_with("nbf", json!(NOW_S + 600))), IdTokenError::NotYetValid),
        (
            "iat in the future",
            sign("RS256", KID_RSA, &claims_with("iat", json!(NOW_S + 600))),
            IdTokenError::IssuedInFuture,
        ),
        ("wrong nonce", sign("RS256", KID_RSA, &claims_with("nonce", json!("abc"))), IdTokenError::NonceMismatch),
        ("no nonce", sign("RS256", KID_RSA, &without("nonce")), IdTokenError::MissingNonce),
        ("wrong aud", sign("RS256", KID_RSA, &claims_with("aud", json!("pk"))), IdTokenError::AudienceMismatch),
        (
            "several aud, no azp",
            sign("RS256", KID_RSA, &claims_with("aud", json!([CLIENT_ID, "other"]))),
            IdTokenError::AuthorizedPartyMismatch,
        ),
        (
            "wrong iss",
            sign("RS256", KID_RSA, &claims_with("iss", json!("https://e1-dev.local/id"))),
            IdTokenError::IssuerMismatch,
        ),
        (
            "c_hash mismatch",
            sign("RS256", KID_RSA, &claims_with("c_hash", json!(hash("other-code")))),
            IdTokenError::CodeHashMismatch,
        ),
        ("no c_hash", sign("RS256", KID_RSA, &without("c_hash")), IdTokenError::MissingCodeHash),
        (
            "s_hash mismatch",
            sign("RS256", KID_RSA, &claims_with("s_hash", json!(hash("x")))),
            IdTokenError::StateHashMismatch,
        ),
        ("oversized", huge, IdTokenError::TooLarge),
        ("two parts", format!("{head}.{body}"), IdTokenError::Malformed),
        ("not base64", format!("{head}.!!!.{signature}"), IdTokenError::Malformed),
        ("header not JSON", format!("{}.{body}.{signature}", b64(b"alg")), IdTokenError::Malformed),
        ("claims not JSON", sign("RS256", KID_RSA, &json!("just a string")), IdTokenError::Malformed),
        ("exp missing", sign("RS256", KID_RSA, &without("exp")), IdTokenError::Malformed),
    ];
    for (name, token, expected) in cases {
        let mut session = pending(hybrid(), KID_RSA);
        let url = format!("{REDIRECT}#code={CODE}&id_token={token}&state={}", state());
        session.handle_callback(T0 + 1_000, Callback::Url(&url)).unwrap();
        let out = drain(&mut session);
        assert_eq!(sign_in_error(&out), Some(expected), "{name}");
        assert!(out.requests.is_empty(), "{name}: a request went out");
        // The callback itself consumed the pending sign-in (and persisted that); the refusal
        // changed nothing else.
        assert_eq!(out.persisted.len(), 1, "{name}");
        assert_eq!(state_of(&session), out.persisted[0].to_json(), "{name}");
        assert!(!session.is_signed_in() && session.claims().is_none(), "{name}");
        let message = format!("{expected} {:?}", out.events);
        assert!(!message.contains(&nonce()) && !message.contains(CODE), "{name}: leaked into {message}");
    }
}

#[test]
fn an_algorithm_the_configuration_does_not_allow_is_refused() {
    let mut session = pending(hybrid().id_token_algorithms(&[SigningAlgorithm::RS256]), KID_RSA);
    let out = callback(&mut session, &sign("ES256", KID_EC, &good_claims()));
    assert_eq!(sign_in_error(&out), Some(IdTokenError::AlgorithmNotAllowed));
}

#[test]
fn an_unknown_kid_fetches_the_keys_again_exactly_once() {
    // The cached set has the RSA key under an old id; the provider rotated it.
    let mut session = pending(hybrid(), "rsa-old");
    let out = callback(&mut session, &sign("RS256", KID_RSA, &good_claims()));
    assert_eq!(out.requests.len(), 1, "{:?}", out.events);
    assert_eq!(out.requests[0].kind, RequestKind::Keys, "one refetch");
    session.handle_response(T0 + 1_000, out.requests[0].id, HttpResponse::new(200, jwks(KID_RSA))).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.requests.len(), 1, "{:?}", out.events);
    assert_eq!(out.requests[0].kind, RequestKind::Token, "the rotated key verified the token");

    let mut session = pending(hybrid(), "rsa-old");
    let out = callback(&mut session, &sign("RS256", "rsa-unknown", &good_claims()));
    session.handle_response(T0 + 1_000, out.requests[0].id, HttpResponse::new(200, jwks("rsa-old"))).unwrap();
    let out = drain(&mut session);
    assert_eq!(sign_in_error(&out), Some(IdTokenError::UnknownKey));
    assert!(out.requests.is_empty(), "never a second refetch");
}

/// A key set with two RSA keys (kids `rsa-1` and `rsa-2`, as during a key rotation).
fn jwks_with_two_rsa_keys() -> String {
    let mut set: Value = serde_json::from_str(&jwks(KID_RSA)).unwrap();
    let mut second = set["keys"][0].clone();
    second["kid"] = json!("rsa-2");
    set["keys"].as_array_mut().unwrap().push(second);
    set.to_string()
}

/// An ID token without `kid` when the cached key set holds several keys it could be signed
/// with: the key set is fetched again once (the provider may have finished a rotation); the
/// token is verified with the one key left, or refused as ambiguous, never checked against
/// a key picked at random.
#[test]
fn an_id_token_without_kid_among_several_keys_fetches_the_keys_once_then_is_refused_as_ambiguous() {
    let without_kid = || sign_text("RS256", r#"{"alg":"RS256","typ":"JWT"}"#, &good_claims().to_string());
    let mut session = pending(hybrid(), KID_RSA);
    // The cached set has two RSA keys: one refetch, which serves one.
    let mut session_two = pending_serving(hybrid(), &jwks_with_two_rsa_keys());
    let out = callback(&mut session_two, &without_kid());
    assert_eq!(sign_in_error(&out), None);
    assert_eq!(out.requests.len(), 1, "{:?}", out.events);
    assert_eq!(out.requests[0].kind, RequestKind::Keys, "one refetch");
    session_two.handle_response(T0 + 1_000, out.requests[0].id, HttpResponse::new(200, jwks(KID_RSA))).unwrap();
    let out = drain(&mut session_two);
    assert_eq!(sign_in_error(&out), None);
    assert_eq!(out.requests.len(), 1, "{:?}", out.events);
    assert_eq!(out.requests[0].kind, RequestKind::Token, "verified with the one RSA key left");

    // Still two after the refetch: refused as ambiguous, without a second refetch.
    let mut session_two = pending_serving(hybrid(), &jwks_with_two_rsa_keys());
    let out = callback(&mut session_two, &without_kid());
    session_two
        .handle_response(T0 + 1_000, out.requests[0].id, HttpResponse::new(200, jwks_with_two_rsa_keys()))
        .unwrap();
    let out = drain(&mut session_two);
    assert_eq!(sign_in_error(&out), Some(IdTokenError::AmbiguousKey));
    assert_eq!(IdTokenError::AmbiguousKey.code(), "id_token_ambiguous_key");
    assert!(out.requests.is_empty(), "never a second refetch");

    // With one RSA key cached, a token without kid is verified with it at once.
    let out = callback(&mut session, &without_kid());
    assert_eq!(sign_in_error(&out), None);
    assert_eq!(out.requests[0].kind, RequestKind::Token);
}

/// A key set whose RSA key under `rsa-1` is not the provider's (planted in a store): the same
/// exponent, another modulus.
fn planted_jwks() -> Value {
    let mut set: Value = serde_json::from_str(&jwks(KID_RSA)).unwrap();
    let mut n = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(set["keys"][0]["n"].as_str().unwrap()).unwrap();
    n[100] ^= 0x55;
    set["keys"][0]["n"] = json!(b64(&n));
    set
}

/// A token whose key id is known but whose signature does not verify with the cached key:
/// the key set is fetched again once (a key set planted in a store, or a provider that
/// re-keyed under the same id), at most once a minute, then the token is accepted or refused.
#[test]
fn a_known_kid_that_fails_verification_fetches_the_keys_again_once_rate_limited() {
    // A stored snapshot carries a planted key set (a browser's storage holds the provider's
    // documents).
    let fresh = Session::with_random(hybrid().build().unwrap(), CountingRandom::default());
    let mut stored: Value = serde_json::from_str(&fresh.snapshot().to_json()).unwrap();
    stored["jwks"] = planted_jwks();
    let stored = Snapshot::from_json(&stored.to_string()).unwrap();
    let mut session = Session::restore(hybrid().build().unwrap(), stored, CountingRandom::default()).unwrap();
    drain(&mut session);
    session.sign_in(T0, SignInOptions::new()).unwrap();
    assert!(drain(&mut session).requests.is_empty(), "the stored keys are used");
    let out = callback(&mut session, &sign("RS256", KID_RSA, &good_claims()));
    assert_eq!(sign_in_error(&out), None, "not refused before the keys are fetched again");
    assert_eq!(out.requests.len(), 1);
    assert_eq!(out.requests[0].kind, RequestKind::Keys);
    session.handle_response(T0 + 1_000, out.requests[0].id, HttpResponse::new(200, jwks(KID_RSA))).unwrap();
    let out = drain(&mut session);
    assert_eq!(sign_in_error(&out), None);
    assert_eq!(out.requests[0].kind, RequestKind::Token, "verified with the provider's key");

    // A bad signature right after a fetch is refused at once (see the table above); a minute
    // later the keys are fetched again once, then it is refused.
    let mut session = pending(hybrid(), KID_RSA);
    let good = sign("RS256", KID_RSA, &good_claims());
    let (head, rest) = good.split_once('.').unwrap();
    let (body, _) = rest.split_once('.').unwrap();
    let tampered = format!("{head}.{body}.{}", b64(&[7u8; 256]));
    let url = format!("{REDIRECT}#code={CODE}&id_token={tampered}&state={}", state());
    let a_minute_later = T0 + 60_000;
    session.handle_callback(a_minute_later, Callback::Url(&url)).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.requests.len(), 1, "{:?}", out.events);
    assert_eq!(out.requests[0].kind, RequestKind::Keys);
    session.handle_response(a_minute_later, out.requests[0].id, HttpResponse::new(200, jwks(KID_RSA))).unwrap();
    let out = drain(&mut session);
    assert_eq!(sign_in_error(&out), Some(IdTokenError::BadSignature));
    assert!(out.requests.is_empty(), "never a second refetch");
}

#[test]
fn unreachable_keys_stop_the_sign_in_with_their_own_reason() {
    let (mut session, mut out) = to_pending(hybrid().build().unwrap());
    let keys_request = out.requests.remove(0);
    session.handle_transport_error(T0, keys_request.id, TransportError::Connect).unwrap();
    drain(&mut session);
    let out = callback(&mut session, &sign("RS256", KID_RSA, &good_claims()));
    session.handle_response(T0 + 1_000, out.requests[0].id, HttpResponse::new(503, "")).unwrap();
    assert_eq!(sign_in_error(&drain(&mut session)), Some(IdTokenError::KeysUnavailable));
}

/// The token endpoint's ID token: signature on by default, nonce and at_hash checked, and
/// it must name the front channel's user.
fn code_flow_exchange(builder: ConfigBuilder, id_token: &str, access_token: &str) -> Drained {
    let (mut session, mut out) = to_pending(builder.build().unwrap());
    // Keys are prefetched only when a signature will be checked.
    if let Some(keys_request) = out.requests.pop() {
        session.handle_response(T0, keys_request.id, HttpResponse::new(200, jwks(KID_RSA))).unwrap();
        drain(&mut session);
    }
    let request = exchange(&mut session, &code_callback());
    let body = json!({"access_token": access_token, "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt-1", "id_token": id_token});
    redeem(&mut session, &request, &body.to_string())
}

fn code_claims(access_token: &str) -> Value {
    json!({"iss": format!("{ROOT}/id"), "sub": "admin", "aud": CLIENT_ID, "exp": NOW_S + 300, "iat": NOW_S, "nonce": nonce(), "at_hash": hash(access_token)})
}

#[test]
fn token_endpoint_id_token_checks() {
    let code = || seed_builder().validate_id_tokens(true).timing(renewing_idle_sessions());
    let out = code_flow_exchange(code(), &sign("RS256", KID_RSA, &code_claims("at-1")), "at-1");
    assert!(matches!(out.events[..], [Event::SignedIn { .. }]), "{:?}", out.events);

    let out = code_flow_exchange(code(), &sign("RS256", KID_RSA, &code_claims("at-other")), "at-1");
    assert_eq!(sign_in_error(&out), Some(IdTokenError::AccessTokenHashMismatch));
    assert!(out.persisted.is_empty(), "no token of a refused answer is stored");

    let forged = format!("{}.sig", sign("RS256", KID_RSA, &code_claims("at-1")).rsplit_once('.').unwrap().0);
    let out = code_flow_exchange(code(), &forged, "at-1");
    assert_eq!(sign_in_error(&out), Some(IdTokenError::BadSignature));
    // With the signature check off (TLS vouches for the token endpoint), claims still count.
    let out = code_flow_exchange(code().verify_token_endpoint_signature(false), &forged, "at-1");
    assert!(matches!(out.events[..], [Event::SignedIn { .. }]), "{:?}", out.events);
    let mut wrong_nonce = code_claims("at-1");
    wrong_nonce["nonce"] = json!("replayed");
    let out = code_flow_exchange(
        code().verify_token_endpoint_signature(false),
        &sign("RS256", KID_RSA, &wrong_nonce),
        "at-1",
    );
    assert_eq!(sign_in_error(&out), Some(IdTokenError::NonceMismatch));
}

#[test]
fn max_age_requires_a_recent_auth_time() {
    let mut session = Session::with_random(hybrid().build().unwrap(), CountingRandom::default());
    session.sign_in(T0, SignInOptions::new().max_age_secs(60)).unwrap();
    let keys_request = drain(&mut session).requests.remove(0);
    session.handle_response(T0, keys_request.id, HttpResponse::new(200, jwks(KID_RSA))).unwrap();
    drain(&mut session);
    let mut old = good_claims();
    old["auth_time"] = json!(NOW_S - 3600);
    let out = callback(&mut session, &sign("RS256", KID_RSA, &old));
    assert_eq!(sign_in_error(&out), Some(IdTokenError::AuthenticationTooOld));
}

/// Signed in through the code flow with a validated ID token (sub "admin").
fn signed_in() -> Session {
    signed_in_with(code_claims("at-1"))
}

/// Signed in with an ID token of these claims (RS256), the keys already fetched.
fn signed_in_with(claims: Value) -> Session {
    let mut session =
        pending_serving(seed_builder().validate_id_tokens(true).timing(renewing_idle_sessions()), &jwks(KID_RSA));
    let request = exchange(&mut session, &code_callback());
    let body = json!({"access_token": "at-1", "expires_in": 3600, "refresh_token": "rt-1", "id_token": sign("RS256", KID_RSA, &claims)});
    redeem(&mut session, &request, &body.to_string());
    session
}

#[test]
fn validated_claims_are_exposed_and_survive_a_restore() {
    let session = signed_in();
    let claims = session.claims().unwrap();
    assert_eq!((claims.sub.as_str(), claims.iss.as_str()), ("admin", "https://demodb.my.erp.net/id"));
    assert_eq!(claims.aud, vec![CLIENT_ID.to_owned()]);
    let snapshot = Snapshot::from_json(&session.snapshot().to_json()).unwrap();
    assert!(snapshot.has_signing_keys(), "the keys are cached");
    let restored = Session::restore(
        seed_builder().validate_id_tokens(true).timing(renewing_idle_sessions()).build().unwrap(),
        snapshot,
        CountingRandom::default(),
    )
    .unwrap();
    assert_eq!(restored.claims(), Some(claims));
    assert!(!format!("{claims:?}").contains(&nonce()), "the nonce is not exposed");
}

#[test]
fn a_refreshed_id_token_must_name_the_same_user() {
    for (sub, expect_ok) in [("admin", true), ("mallory", false)] {
        let mut session = signed_in();
        session.handle_timeout(T0 + 3_540_000).unwrap();
        let refresh = drain(&mut session).requests.remove(0);
        let mut claims = code_claims("at-2");
        claims.as_object_mut().unwrap().remove("nonce");
        claims["sub"] = json!(sub);
        claims["iat"] = json!(NOW_S + 3540);
        claims["exp"] = json!(NOW_S + 3840);
        let body = json!({"access_token": "at-2", "expires_in": 3600, "refresh_token": "rt-2", "id_token": sign("RS256", KID_RSA, &claims)});
        let before = state_of(&session);
        session.handle_response(T0 + 3_540_000, refresh.id, HttpResponse::new(200, body.to_string())).unwrap();
        let out = drain(&mut session);
        if expect_ok {
            assert!(matches!(out.events[..], [Event::TokensRenewed { .. }]), "{:?}", out.events);
        } else {
            // Another user's tokens are never used; the old refresh token may be spent
            // (rotation), so the session ends instead of retrying it.
            assert_eq!(
                out.events,
                vec![Event::SignInRequired {
                    reason: SignInRequiredReason::RefreshedIdTokenRefused { error: IdTokenError::IdentityChanged }
                }]
            );
            assert_ne!(state_of(&session), before);
            assert!(out.persisted.iter().all(|p| p.tokens().is_none()), "at-2 was never stored");
        }
    }
}

#[test]
fn userinfo_must_answer_for_the_same_subject() {
    for (sub, ok) in [("admin", true), ("mallory", false)] {
        let mut session = signed_in();
        let call = session.fetch_user_info(T0).unwrap();
        let request = drain(&mut session).requests.remove(0);
        assert_eq!(request.kind, RequestKind::UserInfo);
        assert_eq!(request.url, "https://demodb.my.erp.net/id/connect/userinfo");
        assert_eq!(request.header("authorization"), Some("Bearer at-1"));
        let body = json!({"sub": sub, "name": "SPS"}).to_string();
        session.handle_response(T0, request.id, HttpResponse::new(200, body)).unwrap();
        let events = drain(&mut session).events;
        if ok {
            assert!(
                matches!(&events[..], [Event::UserInfoReceived { call: c, claims }] if *c == call && claims["name"] == "SPS")
            );
        } else {
            assert_eq!(events, vec![Event::UserInfoFailed { call, error: UserInfoError::SubjectMismatch }]);
        }
    }
}

/// A call made while the sign-in's ID token waits for the key set is served once the keys
/// arrive (it used to fail at once with "not signed in": two places asked "are tokens on the
/// way?" and answered differently).
#[test]
fn a_call_waits_while_the_id_token_waits_for_its_keys() {
    let config = seed_builder().validate_id_tokens(true).timing(renewing_idle_sessions()).build().unwrap();
    let (mut session, mut out) = to_pending(config);
    let keys_request = out.requests.remove(0);
    assert_eq!(keys_request.kind, RequestKind::Keys);
    // The keys are still on their way when the code comes back and is exchanged.
    let request = exchange(&mut session, &code_callback());
    let id_token = sign("RS256", KID_RSA, &code_claims("at-1"));
    let body = json!({"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt-1", "id_token": id_token});
    assert!(redeem(&mut session, &request, &body.to_string()).events.is_empty(), "the ID token waits for the keys");

    let call = session.call_api(T0 + 10, ApiRequest::get("Crm_Sales_Customers")).unwrap();
    let waiting = drain(&mut session);
    assert!(waiting.events.is_empty() && waiting.requests.is_empty(), "{:?}", waiting.events);

    session.handle_response(T0 + 20, keys_request.id, HttpResponse::new(200, jwks(KID_RSA))).unwrap();
    let out = drain(&mut session);
    assert!(matches!(out.events[..], [Event::SignedIn { .. }]), "{:?}", out.events);
    assert_eq!(out.requests.len(), 1);
    assert_eq!(out.requests[0].call, Some(call));
    assert_eq!(out.requests[0].header("authorization"), Some("Bearer at-1"));
}

/// A refreshed ID token whose key is not cached is verified after one key-set fetch, never
/// accepted unchecked; a key still unknown after it ends the session (no retry with a
/// refresh token the server may have rotated).
#[test]
fn a_refreshed_id_token_with_an_unknown_key_fetches_the_keys_then_verifies_or_refuses() {
    for (served_kid, renewed) in [(KID_RSA, true), ("rsa-other", false)] {
        let builder = seed_builder().validate_id_tokens(true).timing(renewing_idle_sessions());
        let mut session = pending_serving(builder, &jwks("rsa-old"));
        // Sign in with the old key id.
        let request = exchange(&mut session, &code_callback());
        let first = json!({"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt-1",
            "id_token": sign("RS256", "rsa-old", &code_claims("at-1"))});
        assert!(matches!(redeem(&mut session, &request, &first.to_string()).events[..], [Event::SignedIn { .. }]));

        // The provider rotated its key: the refreshed ID token names a kid not cached.
        let later = T0 + 3_541_000;
        session.handle_timeout(later).unwrap();
        let refresh = drain(&mut session).requests.remove(0);
        let mut claims = code_claims("at-2");
        claims.as_object_mut().unwrap().remove("nonce");
        claims["iat"] = json!(later / 1000);
        claims["exp"] = json!(later / 1000 + 300);
        let second = json!({"access_token": "at-2", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt-2",
            "id_token": sign("RS256", KID_RSA, &claims)});
        session.handle_response(later, refresh.id, HttpResponse::new(200, second.to_string())).unwrap();
        let out = drain(&mut session);
        assert!(out.events.is_empty(), "not accepted before the signature is checked: {:?}", out.events);
        assert_eq!(out.requests.len(), 1);
        assert_eq!(out.requests[0].kind, RequestKind::Keys);
        session.handle_response(later, out.requests[0].id, HttpResponse::new(200, jwks(served_kid))).unwrap();
        let out = drain(&mut session);
        if renewed {
            assert!(matches!(out.events[..], [Event::TokensRenewed { .. }]), "{:?}", out.events);
            assert_eq!(session.snapshot().tokens().cloned().unwrap().access_token().secret(), "at-2");
        } else {
            assert_eq!(
                out.events,
                vec![Event::SignInRequired {
                    reason: SignInRequiredReason::RefreshedIdTokenRefused { error: IdTokenError::UnknownKey }
                }]
            );
            assert!(out.requests.is_empty(), "one fetch, never a second");
            assert!(session.snapshot().tokens().is_none(), "nothing of the refused answer installed");
        }
    }
}

/// OpenID Connect Core §12.2: a refreshed ID token's `nonce`, if present, is the original's,
/// and its `auth_time` is the original authentication's.
#[test]
fn a_refreshed_id_token_keeps_the_original_nonce_and_auth_time() {
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, Option<IdTokenError>)> = vec![
        ("the original nonce", Box::new(|c: &mut Value| c["nonce"] = json!(nonce())), None),
        ("no nonce", Box::new(|c: &mut Value| drop(c.as_object_mut().unwrap().remove("nonce"))), None),
        ("another nonce", Box::new(|c: &mut Value| c["nonce"] = json!("another")), Some(IdTokenError::NonceMismatch)),
        ("the same auth_time", Box::new(|c: &mut Value| c["auth_time"] = json!(NOW_S - 10)), None),
        (
            "another auth_time",
            Box::new(|c: &mut Value| c["auth_time"] = json!(NOW_S + 3000)),
            Some(IdTokenError::AuthenticationChanged),
        ),
    ];
    for (name, edit, refused) in cases {
        let mut first = code_claims("at-1");
        first["auth_time"] = json!(NOW_S - 10);
        let mut session = signed_in_with(first);

        session.handle_timeout(T0 + 3_540_000).unwrap();
        let refresh = drain(&mut session).requests.remove(0);
        let mut claims = code_claims("at-2");
        claims.as_object_mut().unwrap().remove("nonce");
        claims["auth_time"] = json!(NOW_S - 10);
        claims["iat"] = json!(NOW_S + 3540);
        claims["exp"] = json!(NOW_S + 3840);
        edit(&mut claims);
        let body = json!({"access_token": "at-2", "expires_in": 3600, "id_token": sign("RS256", KID_RSA, &claims)});
        session.handle_response(T0 + 3_540_000, refresh.id, HttpResponse::new(200, body.to_string())).unwrap();
        let events = drain(&mut session).events;
        match refused {
            None => assert!(matches!(events[..], [Event::TokensRenewed { .. }]), "{name}: {events:?}"),
            Some(error) => assert_eq!(
                events,
                vec![Event::SignInRequired { reason: SignInRequiredReason::RefreshedIdTokenRefused { error } }],
                "{name}"
            ),
        }
    }
}

/// The host's side of a signature check, driven by hand: what the session hands over, what a
/// verdict does, and that the session never takes a signature on the host's word alone.
#[test]
fn the_host_verifies_signatures_when_configured() {
    let host = || hybrid().host_verifies_signatures(true);
    let mut session = pending(host(), KID_RSA);
    let token = sign("RS256", KID_RSA, &good_claims());
    let url = format!("{REDIRECT}#code={CODE}&id_token={token}&state={}", state());
    session.handle_callback(T0 + 1_000, Callback::Url(&url)).unwrap();
    // Drained by hand: the check is held, the code not yet redeemed.
    let mut checks = Vec::new();
    loop {
        match session.poll() {
            Output::VerifySignature(check) => checks.push(*check),
            Output::Http(request) => panic!("nothing is sent before the verdict: {request:?}"),
            Output::WaitUntil(_) | Output::Idle => break,
            Output::Persist(_) | Output::Event(_) => {}
        }
    }
    let [check] = &checks[..] else { panic!("{checks:?}") };
    assert_eq!(check.algorithm, SigningAlgorithm::RS256);
    assert_eq!(check.key.kid.as_deref(), Some(KID_RSA));
    assert_eq!(format!("{}.{}", check.signing_input, "x").matches('.').count(), 2);
    assert!(token.starts_with(&check.signing_input));
    let debug = format!("{check:?}");
    assert!(!debug.contains(&check.signing_input[..20]), "{debug}");
    assert_eq!(
        session.handle_signature(T0 + 1_000, SignatureCheckId(99), true),
        Err(UsageError::UnknownSignatureCheck(SignatureCheckId(99)))
    );
    // A "no" refuses the sign-in; nothing is redeemed.
    session.handle_signature(T0 + 1_000, check.id, false).unwrap();
    let out = drain(&mut session);
    assert_eq!(sign_in_error(&out), Some(IdTokenError::BadSignature));
    assert!(out.requests.is_empty());
    // A late verdict for a check that no longer matters is accepted and changes nothing.
    let before = state_of(&session);
    session.handle_signature(T0 + 1_000, check.id, true).unwrap();
    assert!(drain(&mut session).events.is_empty());
    assert_eq!(state_of(&session), before);

    // A "yes" moves the sign-in on to the code exchange.
    let mut session = pending(host(), KID_RSA);
    let out = callback(&mut session, &token);
    assert_eq!(out.signature_checks, vec![true]);
    assert_eq!(out.requests.len(), 1);
    assert_eq!(out.requests[0].kind, RequestKind::Token);

    // Key strength and the algorithm list stay with the session: a weak or mismatched key is
    // refused before any check reaches the host.
    let mut session = pending(host().id_token_algorithms(&[SigningAlgorithm::ES256]), KID_RSA);
    let out = callback(&mut session, &token);
    assert!(out.signature_checks.is_empty());
    assert_eq!(sign_in_error(&out), Some(IdTokenError::AlgorithmNotAllowed));
}
