//! The bindings in a real JavaScript engine: `make wasm-test` runs these in Node and in
//! headless Chromium.
#![cfg(target_arch = "wasm32")]

use erpnet_auth_wasm::{application_secret_hash, WasmSession};
use tsify::Ts;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::wasm_bindgen_test;

const NOW: f64 = 1_700_000_000_000.0;

fn js(json: &str) -> JsValue {
    js_sys::JSON::parse(json).expect("valid JSON")
}

fn field(value: &JsValue, name: &str) -> JsValue {
    js_sys::Reflect::get(value, &JsValue::from_str(name)).expect("object")
}

fn text(value: &JsValue, name: &str) -> String {
    field(value, name).as_string().unwrap_or_default()
}

/// Hands `response` (`{status, headers?, body?}`, headers as `[[name, value], …]`) to the
/// session, as the driver does: status, headers flattened, body.
fn respond(s: &mut WasmSession, now: f64, id: f64, response: &JsValue) -> Result<(), JsValue> {
    let status = field(response, "status").as_f64().expect("status") as u16;
    s.handle_response(now, id, status, flat_headers(response), field(response, "body").as_string())
}

/// Starts the call `call` (`{method, url, headers?}`) describes.
fn api(s: &mut WasmSession, now: f64, call: &JsValue) -> Result<f64, JsValue> {
    s.call_api(now, &text(call, "method"), text(call, "url"), flat_headers(call), None)
}

/// `headers` (`[[name, value], …]`, or absent) as the flat list the session takes.
fn flat_headers(value: &JsValue) -> Vec<String> {
    let headers = field(value, "headers");
    if headers.is_undefined() {
        return Vec::new();
    }
    js_sys::Array::from(&headers).flat(1).iter().map(|h| h.as_string().expect("header text")).collect()
}

fn session() -> WasmSession {
    let options = js(
        r#"{"instance":"https://demodb.my.erp.net","clientId":"my.trusted.app/first","clientSecret":"s","redirectUri":"http://localhost/signin-callback","discovery":false,"scope":"offline_access read"}"#,
    );
    WasmSession::new(Ts::new_unchecked(options), None).expect("valid options")
}

/// Drains poll(); returns the outputs as JS objects.
fn drain(session: &mut WasmSession) -> Vec<JsValue> {
    let mut outputs = Vec::new();
    loop {
        let output: JsValue = session.poll().expect("poll").into();
        let kind = text(&output, "type");
        outputs.push(output);
        if kind == "idle" || kind == "waitUntil" {
            return outputs;
        }
    }
}

/// The first HTTP request among the outputs.
fn http_request(outputs: &[JsValue]) -> JsValue {
    let output = outputs.iter().find(|o| text(o, "type") == "http").expect("an http output");
    field(output, "request")
}

fn state_of(url: &str) -> String {
    let start = url.find("state=").expect("state") + 6;
    url[start..].split('&').next().unwrap_or_default().to_owned()
}

#[wasm_bindgen_test]
fn sign_in_uses_the_secure_random_source() {
    let mut s = session();
    let first = s.sign_in(NOW, None).expect("sign-in");
    drain(&mut s);
    let second = s.sign_in(NOW, None).expect("sign-in");
    assert!(first.starts_with("https://demodb.my.erp.net/id/connect/authorize?client_id=my.trusted.app%2Ffirst"));
    assert_ne!(state_of(&first), state_of(&second), "crypto.getRandomValues feeds state");
    assert_eq!(state_of(&first).len(), 43);
}

#[wasm_bindgen_test]
fn whole_flow_through_the_loop() {
    let mut s = session();
    let url = s.sign_in(NOW, None).expect("sign-in");
    drain(&mut s);
    let callback = format!("http://localhost/signin-callback?code=c1&state={}", state_of(&url));
    s.handle_callback_url(NOW, &callback).expect("callback");
    let outputs = drain(&mut s);
    let request = http_request(&outputs);
    assert_eq!(text(&request, "kind"), "token");
    assert!(text(&request, "body").contains("grant_type=authorization_code&code=c1"));
    let id = field(&request, "id").as_f64().expect("id");
    let response =
        js(r#"{"status":200,"body":"{\"access_token\":\"at\",\"expires_in\":3600,\"refresh_token\":\"rt\"}"}"#);
    respond(&mut s, NOW, id, &response).expect("answer");
    let outputs = drain(&mut s);
    let kinds: Vec<String> = outputs.iter().map(|o| text(o, "type")).collect();
    // Nobody used the session yet: no renewal timer.
    assert_eq!(kinds, ["persist", "event", "idle"]);
    assert_eq!(text(&field(&outputs[1], "event"), "type"), "signedIn");
    assert!(s.is_signed_in());

    let call = js(r#"{"method":"GET","url":"Crm_Sales_Customers?$top=1"}"#);
    let call_id = api(&mut s, NOW, &call).expect("call");
    let outputs = drain(&mut s);
    let request = http_request(&outputs);
    assert_eq!(text(&request, "url"), "https://demodb.my.erp.net/api/domain/odata/Crm_Sales_Customers?$top=1");
    assert_eq!(field(&request, "call").as_f64(), Some(call_id));
}

#[wasm_bindgen_test]
fn errors_carry_stable_codes() {
    let mut s = session();
    let error = s.handle_callback_url(NOW, "http://localhost/signin-callback?code=c&state=x").expect_err("no sign-in");
    assert_eq!(text(&error, "code"), "no_sign_in_pending");
    assert!(error.is_instance_of::<js_sys::Error>());
    let call = js(r#"{"method":"GET","url":"https://evil.example/"}"#);
    let error = api(&mut s, NOW, &call).expect_err("foreign");
    assert_eq!(text(&error, "code"), "foreign_origin");
    let error = s.handle_response(NOW, 1.0, 200, vec!["content-type".into()], None).expect_err("half a header");
    assert_eq!(text(&error, "code"), "invalid_argument");
    let error = s.call_api(NOW, "GET", "X".into(), vec!["accept".into()], None).expect_err("half a header");
    assert_eq!(text(&error, "code"), "invalid_argument");
    let error = s.handle_timeout(f64::NAN).expect_err("bad time");
    assert_eq!(text(&error, "code"), "invalid_time");
    let bad = js(r#"{"instance":"http://demodb.my.erp.net","clientId":"a","redirectUri":"http://localhost/cb"}"#);
    let error = WasmSession::new(Ts::new_unchecked(bad), None).err().expect("insecure");
    assert_eq!(text(&error, "code"), "insecure_url");
}

#[wasm_bindgen_test]
fn hostile_inputs_do_not_panic() {
    let mut s = session();
    let url = s.sign_in(NOW, None).expect("sign-in");
    drain(&mut s);
    for input in [
        "",
        "::",
        "http://ÑANDÚ.Example/signin-callback?code=c",
        "http://localhost/signin-callback?state=%FF",
        &"x".repeat(70_000),
    ] {
        assert!(s.handle_callback_url(NOW, input).is_err());
    }
    let callback = format!("http://localhost/signin-callback?code=c&state={}", state_of(&url));
    s.handle_callback_url(NOW, &callback).expect("callback");
    let outputs = drain(&mut s);
    let id = field(&http_request(&outputs), "id").as_f64().expect("id");
    respond(&mut s, NOW, id, &js(r#"{"status":200,"body":"<html>"}"#)).expect("answer");
    let outputs = drain(&mut s);
    let event = field(&outputs[0], "event");
    assert_eq!(text(&event, "type"), "signInFailed");
    assert_eq!(text(&field(&event, "error"), "code"), "malformed_response");
    assert!(WasmSession::new(Ts::new_unchecked(js(r#"{"clientId":1}"#)), None).is_err());
    assert!(WasmSession::new(Ts::new_unchecked(js("null")), None).is_err());
}

/// Options are read as given: each refusal is `invalid_argument` naming the option, never
/// echoing its value; `null` is absent, and `apiConcurrency: null` is "no limit".
#[wasm_bindgen_test]
fn options_are_read_strictly() {
    let base = r#""instance":"https://demodb.my.erp.net","clientId":"a","redirectUri":"http://localhost/cb""#;
    let open = |extra: &str| WasmSession::new(Ts::new_unchecked(js(&format!("{{{base}{extra}}}"))), None);
    for (extra, named) in [
        (r#","clientSecret":42"#, "`clientSecret` must be a string"),
        (r#","scopes":"read""#, "`scopes` is not an option"),
        (r#","pkce":"yes""#, "`pkce` must be true or false"),
        (r#","apiOrigins":"https://x.example""#, "`apiOrigins` must be an array of strings"),
        (r#","apiConcurrency":-1"#, "`apiConcurrency` must be a whole number"),
        (r#","clientAuth":"private_key_jwt""#, "`clientAuth` must be one of"),
        (r#","idTokenAlgorithms":["HS256"]"#, "`idTokenAlgorithms` names an unknown choice"),
        (r#","timing":[1000]"#, "timing must be a plain object"),
        (r#","timing":{"renewBeforeMS":1}"#, "`timing.renewBeforeMS` is not an option"),
        (r#","timing":{"maxRefreshAttempts":1.5}"#, "`timing.maxRefreshAttempts` must be a whole number"),
    ] {
        let error = open(extra).err().expect(extra);
        assert_eq!(text(&error, "code"), "invalid_argument", "{extra}");
        let message = text(&error, "message");
        assert!(message.contains(named), "{extra}: {message}");
        assert!(!message.contains("42") && !message.contains("yes"), "{extra}: a value in {message}");
    }
    let endpoints = r#""clientId":"a","redirectUri":"http://localhost/cb","endpoints":{"issuer":"https://id.example","authorization_endpoint":"https://id.example/a""#;
    let error =
        WasmSession::new(Ts::new_unchecked(js(&format!("{{{endpoints}}}}}"))), None).err().expect("no token endpoint");
    assert!(text(&error, "message").contains("`endpoints.token_endpoint` is required"));
    for value in ["null", "[]", "\"options\""] {
        let error = WasmSession::new(Ts::new_unchecked(js(value)), None).err().expect(value);
        assert_eq!(text(&error, "code"), "invalid_argument", "{value}");
    }
    assert!(open(r#","scope":null,"apiConcurrency":null,"timing":{"renewBeforeMs":null}"#).is_ok());
    // A function where JSON has none (a driver's `fetch` passed along) is not an option value.
    let with_function = js(&format!("{{{base}}}"));
    let f = js_sys::Function::new_no_args("");
    js_sys::Reflect::set(&with_function, &JsValue::from_str("fetch"), &f).expect("set");
    assert!(WasmSession::new(Ts::new_unchecked(with_function), None).is_ok());
}

/// Feeds `response` (JSON) to the first HTTP request among `outputs`; returns the next drain.
fn answer(s: &mut WasmSession, now: f64, outputs: &[JsValue], response: &str) -> Vec<JsValue> {
    let id = field(&http_request(outputs), "id").as_f64().expect("id");
    respond(s, now, id, &js(response)).expect("answer");
    drain(s)
}

/// Answers the request of `kind` among the outputs.
fn answer_kind(s: &mut WasmSession, now: f64, outputs: &[JsValue], kind: &str, response: &str) -> Vec<JsValue> {
    let output = outputs
        .iter()
        .find(|o| text(o, "type") == "http" && text(&field(o, "request"), "kind") == kind)
        .expect("a request of that kind");
    let id = field(&field(output, "request"), "id").as_f64().expect("id");
    respond(s, now, id, &js(response)).expect("answer");
    drain(s)
}

fn event_types(outputs: &[JsValue]) -> Vec<String> {
    outputs.iter().filter(|o| text(o, "type") == "event").map(|o| text(&field(o, "event"), "type")).collect()
}

/// Every kind of output and every event the core has, through the JavaScript projection:
/// none may come out as `idle` or `unknown`.
#[wasm_bindgen_test]
fn every_output_and_event_crosses_the_boundary() {
    const TOKENS: &str =
        r#"{"status":200,"body":"{\"access_token\":\"at\",\"expires_in\":3600,\"refresh_token\":\"rt\"}"}"#;
    let options = js(
        r#"{"instance":"https://demodb.my.erp.net","clientId":"my.trusted.app/first","clientSecret":"s","redirectUri":"http://localhost/signin-callback","scope":"offline_access read","timing":{"maxRefreshAttempts":3,"renewIdleSessions":true}}"#,
    );
    let mut s = WasmSession::new(Ts::new_unchecked(options), None).expect("valid options");
    let mut seen: Vec<String> = Vec::new();
    let mut outputs_seen: Vec<String> = Vec::new();
    let mut note = |outputs: &[JsValue], seen: &mut Vec<String>| {
        outputs_seen.extend(outputs.iter().map(|o| text(o, "type")));
        seen.extend(event_types(outputs));
    };
    let mut now = NOW;

    // The instance's sites (one not working), then discovery fails (no fallback for a 200
    // naming another issuer), then succeeds.
    let out = drain(&mut s);
    note(&out, &mut seen);
    let sites = r#"{"status":200,"body":"{\"WebSites\":[{\"Type\":\"UserProfile\",\"Status\":\"Working\",\"Url\":\"https://demodb.my.erp.net/profile\"},{\"Type\":\"TableAPI\",\"Status\":\"NotWorking\"}]}"}"#;
    note(&answer_kind(&mut s, now, &out, "sites", sites), &mut seen);
    let doc = r#"{"status":200,"body":"{\"issuer\":\"https://evil.example/id\",\"authorization_endpoint\":\"https://evil.example/a\",\"token_endpoint\":\"https://evil.example/t\"}"}"#;
    let out = answer(&mut s, now, &out, doc);
    note(&out, &mut seen);
    s.discover(now).expect("discover");
    let out = drain(&mut s);
    let id = "https://demodb.my.erp.net/id";
    let doc = format!(
        r#"{{"status":200,"body":"{{\"issuer\":\"{id}\",\"authorization_endpoint\":\"{id}/connect/authorize\",\"token_endpoint\":\"{id}/connect/token\",\"userinfo_endpoint\":\"{id}/connect/userinfo\",\"end_session_endpoint\":\"{id}/connect/endsession\"}}"}}"#
    );
    let out = answer(&mut s, now, &out, &doc);
    note(&out, &mut seen);

    // A cancelled sign-in, then a real one.
    let url = s.sign_in(now, None).expect("sign-in");
    note(&drain(&mut s), &mut seen);
    s.handle_callback_url(
        now,
        &format!("http://localhost/signin-callback?error=access_denied&state={}", state_of(&url)),
    )
    .expect("spent");
    note(&drain(&mut s), &mut seen);
    let url = s.sign_in(now, None).expect("sign-in");
    note(&drain(&mut s), &mut seen);
    s.handle_callback_url(now, &format!("http://localhost/signin-callback?code=c&state={}", state_of(&url)))
        .expect("cb");
    let out = drain(&mut s);
    let out = answer(&mut s, now, &out, TOKENS);
    note(&out, &mut seen);

    // A call answered, a call that gets no answer, userinfo answered and refused.
    api(&mut s, now, &js(r#"{"method":"GET","url":"Crm_Sales_Customers"}"#)).expect("call");
    let out = drain(&mut s);
    note(&answer(&mut s, now, &out, r#"{"status":200}"#), &mut seen);
    api(&mut s, now, &js(r#"{"method":"GET","url":"Crm_Sales_Customers"}"#)).expect("call");
    let out = drain(&mut s);
    let id = field(&http_request(&out), "id").as_f64().expect("id");
    s.handle_transport_error(now, id, "connect").expect("transport");
    note(&drain(&mut s), &mut seen);
    s.fetch_user_info(now).expect("userinfo");
    let out = drain(&mut s);
    note(&answer(&mut s, now, &out, r#"{"status":200,"body":"{\"sub\":\"admin\"}"}"#), &mut seen);
    s.fetch_user_info(now).expect("userinfo");
    let out = drain(&mut s);
    note(&answer(&mut s, now, &out, r#"{"status":500,"body":""}"#), &mut seen);

    // Who am I, answered and refused.
    s.fetch_profile(now).expect("profile");
    let out = drain(&mut s);
    note(&answer(&mut s, now, &out, r#"{"status":200,"body":"{\"id\":\"u1\"}"}"#), &mut seen);
    s.fetch_profile(now).expect("profile");
    let out = drain(&mut s);
    note(&answer(&mut s, now, &out, r#"{"status":200,"body":"{}"}"#), &mut seen);

    // Renewal: renewed, deferred, refused for good, then the grant is gone.
    now += 3_600_000.0;
    s.handle_timeout(now).expect("timeout");
    let out = drain(&mut s);
    note(&answer(&mut s, now, &out, TOKENS), &mut seen);
    now += 3_600_000.0;
    s.handle_timeout(now).expect("timeout");
    let out = drain(&mut s);
    note(&answer(&mut s, now, &out, r#"{"status":503,"body":""}"#), &mut seen);
    now += 60_000.0;
    s.handle_timeout(now).expect("timeout");
    let out = drain(&mut s);
    note(&answer(&mut s, now, &out, r#"{"status":400,"body":"{\"error\":\"invalid_scope\"}"}"#), &mut seen);
    now += 30_000.0; // the cooldown after a refused renewal
    api(&mut s, now, &js(r#"{"method":"GET","url":"Crm_Sales_Customers"}"#)).expect("call");
    let out = drain(&mut s);
    note(&answer(&mut s, now, &out, r#"{"status":400,"body":"{\"error\":\"invalid_grant\"}"}"#), &mut seen);

    s.sign_out(now, None).expect("sign out");
    note(&drain(&mut s), &mut seen);

    for kind in [
        "providerReady",
        "discoveryFailed",
        "signedIn",
        "signInFailed",
        "tokensRenewed",
        "renewalDeferred",
        "renewalFailed",
        "signInRequired",
        "signedOut",
        "userInfo",
        "userInfoFailed",
        "callCompleted",
        "callFailed",
        "sitesDiscovered",
        "siteSkipped",
        "profile",
        "profileFailed",
    ] {
        assert!(seen.iter().any(|k| k == kind), "no {kind} event in {seen:?}");
    }
    assert!(!seen.iter().any(|k| k == "unknown"), "an event the binding does not know: {seen:?}");
    for kind in ["http", "persist", "event", "waitUntil", "idle"] {
        assert!(outputs_seen.iter().any(|k| k == kind), "no {kind} output in {outputs_seen:?}");
    }
}

#[wasm_bindgen_test]
fn secret_hash() {
    assert_eq!(application_secret_hash("secret"), "K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=");
}

/// The URL behaviour the session leans on, the same whichever parser the build has (`make
/// wasm-test` runs this file with the `url` crate and with the host's `URL`).
#[wasm_bindgen_test]
fn urls_parse_alike_with_either_parser() {
    let mut s = session();
    let url = s.sign_in(NOW, None).expect("sign-in");
    drain(&mut s);
    let state = state_of(&url);
    // The default port written out is the same place; another port or path is not.
    for wrong in [
        "http://localhost:8080/signin-callback",
        "http://localhost/signin-callback/",
        "https://localhost/signin-callback",
    ] {
        let error = s.handle_callback_url(NOW, &format!("{wrong}?code=c&state={state}")).expect_err(wrong);
        assert_eq!(text(&error, "code"), "redirect_uri_mismatch", "{wrong}");
    }
    // A response in the fragment where the query was expected.
    let error = s
        .handle_callback_url(NOW, &format!("http://localhost/signin-callback#code=c&state={state}"))
        .expect_err("fragment");
    assert_eq!(text(&error, "code"), "wrong_response_mode");
    s.handle_callback_url(NOW, &format!("http://LOCALHOST:80/signin-callback?code=c&state={state}"))
        .expect("same place");
    let outputs = drain(&mut s);
    let response = r#"{"status":200,"body":"{\"access_token\":\"at\",\"expires_in\":3600,\"refresh_token\":\"rt\"}"}"#;
    answer_kind(&mut s, NOW, &outputs, "token", response);

    // Relative calls join below the API root (a directory); a foreign origin is named.
    let call = js(r#"{"method":"GET","url":"General_Contacts_Persons?$top=1&$filter=Name eq 'ü'"}"#);
    api(&mut s, NOW, &call).expect("call");
    let request = http_request(&drain(&mut s));
    assert_eq!(
        text(&request, "url"),
        "https://demodb.my.erp.net/api/domain/odata/General_Contacts_Persons?$top=1&$filter=Name%20eq%20%27%C3%BC%27"
    );
    let call = js(r#"{"method":"GET","url":"https://DEMODB.my.erp.net:443/api/domain/odata/X"}"#);
    api(&mut s, NOW, &call).expect("same origin, written otherwise");
    drain(&mut s);
    for foreign in [
        "https://demodb.my.erp.net:8443/api/domain/odata/X",
        "https:evil.example/x",
        "//evil.example/x",
        "\\\\evil.example\\x",
        "https://evil.example\\@demodb.my.erp.net/",
        "javascript:alert(1)",
    ] {
        let call = js(&format!(r#"{{"method":"GET","url":"{}"}}"#, foreign.replace('\\', "\\\\")));
        let error = api(&mut s, NOW, &call).expect_err(foreign);
        assert_eq!(text(&error, "code"), "foreign_origin", "{foreign}");
    }
    // (Not a space in a host: Chromium's URL takes "https://exa mple/", WHATWG's refuses it;
    // either way no call goes out, as `invalid_call_url` or as `foreign_origin`.)
    let call = js(r#"{"method":"GET","url":"https://demodb.my.erp.net:99999/"}"#);
    assert_eq!(text(&api(&mut s, NOW, &call).expect_err("invalid"), "code"), "invalid_call_url");

    // Parameters are appended after the query an endpoint has, which stays as written.
    let options = js(
        r#"{"clientId":"a b","redirectUri":"https://app.example/cb","scope":"read","endpoints":{"issuer":"https://id.example","authorization_endpoint":"https://id.example/authorize?tenant=a%20b+c","token_endpoint":"https://id.example/token"}}"#,
    );
    let mut other = WasmSession::new(Ts::new_unchecked(options), None).expect("valid options");
    let url = other.sign_in(NOW, None).expect("sign-in");
    assert!(
        url.starts_with(
            "https://id.example/authorize?tenant=a%20b+c&client_id=a+b&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&"
        ),
        "{url}"
    );

    // Loopback redirect URIs may be plain http; look-alikes may not.
    for (redirect, accepted) in
        [("http://127.0.0.1:8080/cb", true), ("http://[::1]/cb", true), ("http://localhost.evil.example/cb", false)]
    {
        let options = format!(
            r#"{{"instance":"https://demodb.my.erp.net","clientId":"a","redirectUri":"{redirect}","discovery":false}}"#
        );
        assert_eq!(WasmSession::new(Ts::new_unchecked(js(&options)), None).is_ok(), accepted, "{redirect}");
    }
}
