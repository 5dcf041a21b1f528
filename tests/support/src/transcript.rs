//! Prints exchanges in the seed page's HTTP notation, secrets redacted.

use erpnet_auth::{HttpRequest, HttpResponse};

const SECRET_FIELDS: [&str; 10] = [
    "nonce",
    "client_secret",
    "code",
    "refresh_token",
    "access_token",
    "id_token",
    "code_verifier",
    "token",
    "id_token_hint",
    "state",
];

fn redact_pairs(text: &str, separator: &str) -> String {
    text.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SECRET_FIELDS.contains(&name) => format!("{name}=<redacted>"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(separator)
}

/// `POST /id/connect/token HTTP/1.1` / `Host:` / headers / blank / form body, one field a line.
pub fn request(req: &HttpRequest) -> String {
    let url = url::Url::parse(&req.url).ok();
    let path = url.as_ref().map_or(req.url.clone(), |u| u.path().to_owned());
    let query =
        url.as_ref().and_then(|u| u.query()).map(|q| format!("?{}", redact_pairs(q, "&\n    "))).unwrap_or_default();
    let host = url.as_ref().and_then(|u| {
        u.host_str().map(|h| match u.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_owned(),
        })
    });
    let mut out = format!("{} {}{} HTTP/1.1\n", req.method.as_str(), path, query);
    out.push_str(&format!("Host: {}\n", host.unwrap_or_default()));
    for (name, value) in &req.headers {
        let shown = match value.split_once(' ') {
            Some((scheme, _)) if name.eq_ignore_ascii_case("authorization") => format!("{scheme} <redacted>"),
            _ => value.clone(),
        };
        out.push_str(&format!("{name}: {shown}\n"));
    }
    if let Some(body) = req.body_text().filter(|b| !b.is_empty()) {
        out.push('\n');
        out.push_str(&redact_pairs(body, "&\n"));
        out.push('\n');
    }
    out
}

/// `HTTP/1.1 200` and the JSON body with token values redacted.
pub fn response(resp: &HttpResponse) -> String {
    let body = String::from_utf8_lossy(&resp.body);
    let shown = match serde_json::from_slice::<serde_json::Value>(&resp.body) {
        Ok(serde_json::Value::Object(mut map)) => {
            for field in ["access_token", "refresh_token", "id_token"] {
                if let Some(v) = map.get_mut(field) {
                    *v = serde_json::Value::String("<redacted>".into());
                }
            }
            serde_json::to_string_pretty(&map).unwrap_or_default()
        }
        _ => body.chars().take(200).collect(),
    };
    format!("HTTP/1.1 {}\n\n{}\n", resp.status, shown)
}

/// A URL the browser visits, one parameter a line, secrets redacted.
pub fn browser(verb: &str, url: &str) -> String {
    let (base, rest) = match url.find(['?', '#']) {
        Some(at) => (&url[..at], &url[at..]),
        None => (url, ""),
    };
    let (mark, params) = rest.split_at(rest.len().min(1));
    let params =
        if params.is_empty() { String::new() } else { format!("{mark}\n    {}", redact_pairs(params, "&\n    ")) };
    format!("{verb} {base}{params}\n")
}
