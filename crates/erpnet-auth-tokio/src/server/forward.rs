//! Handing a Domain API answer on to the browser.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use erpnet_auth::HttpResponse;

/// Headers of one hop (RFC 9110 §7.6.1) and the framing of the upstream's connection:
/// they describe the connection to the API, not the answer handed on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether an upstream header is dropped: hop-by-hop ones (and those a `Connection` header
/// names), `content-length` (the server writes the length of the body it sends),
/// `set-cookie` (the API's cookies are not the application's origin's), and CORS
/// `access-control-*` (the API's cross-origin policy is not the application's).
fn dropped(name: &str, connection_named: &[String]) -> bool {
    HOP_BY_HOP.contains(&name)
        || name == "content-length"
        || name == "set-cookie"
        || name.starts_with("access-control-")
        || name.starts_with("proxy-")
        || connection_named.iter().any(|n| n == name)
}

/// A Domain API answer (from [`Client::call`](crate::Client::call)) as the answer to the
/// browser, keeping only the headers that still describe its body.
///
/// Dropped: the hop-by-hop headers (`connection`, `keep-alive`, `proxy-*`, `te`,
/// `trailer`, `transfer-encoding`, `upgrade`, and any a `connection` header names),
/// `content-length` (recomputed for the body sent), `set-cookie` and CORS
/// `access-control-*`. Kept: the status, `content-type`, caching and the rest.
///
/// `content-encoding` is kept when present, because it still describes the bytes: this
/// crate's HTTP client does not decode bodies (reqwest without its `gzip` feature, and no
/// `Accept-Encoding` is sent unless the call asks for one), so an upstream that compresses
/// anyway is handed on byte for byte, compressed and labelled as such. (A client that does
/// decode — reqwest with `gzip` — removes `content-encoding` and `content-length` itself.)
/// A status that is not a valid HTTP status becomes `502 Bad Gateway`.
pub fn forward(response: HttpResponse) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let lower: Vec<(String, String)> =
        response.headers.into_iter().map(|(name, value)| (name.to_ascii_lowercase(), value)).collect();
    let connection_named: Vec<String> = lower
        .iter()
        .filter(|(name, _)| name == "connection")
        .flat_map(|(_, value)| value.split(',').map(|token| token.trim().to_ascii_lowercase()))
        .collect();
    let mut answer = (status, Body::from(response.body)).into_response();
    let headers = answer.headers_mut();
    for (name, value) in lower {
        if dropped(&name, &connection_named) {
            continue;
        }
        // A header that is not valid HTTP (it came through another client's parser) is
        // left out rather than failing the whole answer.
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            headers.append(name, value);
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_what_describes_the_body() {
        let upstream = HttpResponse::new(200, &b"{}"[..])
            .with_header("Content-Type", "application/json")
            .with_header("Content-Length", "999")
            .with_header("Transfer-Encoding", "chunked")
            .with_header("Connection", "keep-alive, X-Hop")
            .with_header("X-Hop", "1")
            .with_header("Keep-Alive", "timeout=5")
            .with_header("Set-Cookie", "ASP.NET_SessionId=abc")
            .with_header("Access-Control-Allow-Origin", "*")
            .with_header("Proxy-Authenticate", "Basic")
            .with_header("Cache-Control", "private")
            .with_header("OData-Version", "4.0");
        let answer = forward(upstream);
        let names: Vec<&str> = answer.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-type", "cache-control", "odata-version"]);
        assert_eq!(answer.status(), 200);
    }

    #[test]
    fn a_bad_status_is_a_bad_gateway() {
        assert_eq!(forward(HttpResponse::new(1000, Vec::new())).status(), 502);
    }
}
