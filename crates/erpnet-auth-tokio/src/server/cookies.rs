//! The two cookies of the server layer: the session's id and the sealed pending sign-in.
//! Read exactly (the exact name, exactly once, a value of the expected shape) and written
//! with the attributes the browser-apps BCP asks of a backend-for-frontend.

use axum::http::header::COOKIE;
use axum::http::HeaderMap;
use base64::Engine as _;
use cookie::{Cookie, SameSite};

/// Length of a session id: 32 random bytes in unpadded base64url.
pub(crate) const ID_LEN: usize = 43;

/// Longer than any sealed pending sign-in this layer writes (about 700 characters).
pub(crate) const SEALED_MAX_LEN: usize = 3_000;

/// A session id nobody can guess: 256 bits from the operating system.
pub(crate) fn new_session_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `value` has the shape of an id [`new_session_id`] makes.
pub(crate) fn is_session_id(value: &str) -> bool {
    value.len() == ID_LEN && is_base64url(value)
}

fn is_base64url(value: &str) -> bool {
    value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The value of cookie `name` in the request: `None` unless it is there exactly once (two
/// are an injected duplicate whose order a server cannot trust). Every `Cookie` header
/// counts (HTTP/2 may split them).
pub(crate) fn read(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for header in headers.get_all(COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for cookie in Cookie::split_parse(text).flatten() {
            if cookie.name() == name {
                if found.is_some() {
                    return None;
                }
                found = Some(cookie.value().to_owned());
            }
        }
    }
    found
}

/// The session id of the request, if it carries one of the right shape.
pub(crate) fn read_session_id(headers: &HeaderMap, name: &str) -> Option<String> {
    read(headers, name).filter(|v| is_session_id(v))
}

/// The sealed pending sign-in of the request, if it has the shape of one.
pub(crate) fn read_sealed(headers: &HeaderMap, name: &str) -> Option<String> {
    read(headers, name).filter(|v| !v.is_empty() && v.len() <= SEALED_MAX_LEN && is_base64url(v))
}

/// How a cookie of this layer is written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attributes {
    /// `Secure` (HTTPS); off only for plain-HTTP loopback during development.
    pub secure: bool,
    /// `SameSite=None` (then always `Secure`) for a pending sign-in that comes back by a
    /// cross-site `form_post`; else `Lax`.
    pub cross_site: bool,
    /// `Max-Age` in seconds; `None` for a cookie that ends with the browser session.
    pub max_age_secs: Option<i64>,
}

/// A `Set-Cookie` value: `HttpOnly`, `Path=/`, `SameSite=Lax` (or `None` + `Secure`).
pub(crate) fn set_cookie(name: &str, value: &str, attributes: Attributes) -> String {
    let mut cookie = Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(if attributes.cross_site { SameSite::None } else { SameSite::Lax })
        .secure(attributes.secure || attributes.cross_site)
        .build();
    if let Some(seconds) = attributes.max_age_secs {
        cookie.set_max_age(cookie::time::Duration::seconds(seconds));
    }
    cookie.to_string()
}

/// A `Set-Cookie` value that deletes cookie `name` (same attributes, empty, `Max-Age=0`).
pub(crate) fn clear_cookie(name: &str, attributes: Attributes) -> String {
    set_cookie(name, "", Attributes { max_age_secs: Some(0), ..attributes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(COOKIE, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn exact_name_exactly_once() {
        let id = "A".repeat(ID_LEN);
        assert_eq!(read_session_id(&headers(&[&format!("sid={id}")]), "sid"), Some(id.clone()));
        assert_eq!(read_session_id(&headers(&[&format!("notsid={id}")]), "sid"), None);
        assert_eq!(read_session_id(&headers(&[&format!("other=1; sid={id}")]), "sid"), Some(id.clone()));
        assert_eq!(read_session_id(&headers(&[&format!("sid={id}; sid={id}")]), "sid"), None, "twice");
        assert_eq!(read_session_id(&headers(&[&format!("sid={id}"), &format!("sid={id}")]), "sid"), None);
        assert_eq!(read_session_id(&headers(&["sid=short"]), "sid"), None, "not an id's shape");
        assert_eq!(read_session_id(&headers(&[&format!("sid={}", "A".repeat(42) + "=")]), "sid"), None);
        assert_eq!(read_session_id(&HeaderMap::new(), "sid"), None);
    }

    #[test]
    fn ids_are_fresh_and_of_their_shape() {
        let a = new_session_id().unwrap();
        let b = new_session_id().unwrap();
        assert!(is_session_id(&a) && is_session_id(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn attributes() {
        let lax = Attributes { secure: false, cross_site: false, max_age_secs: None };
        let text = set_cookie("erpnet-session", "v", lax);
        assert!(text.starts_with("erpnet-session=v;"), "{text}");
        for part in ["HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(text.contains(part), "{text} lacks {part}");
        }
        assert!(!text.contains("Secure"), "{text}");
        let secure = set_cookie("__Host-erpnet-session", "v", Attributes { secure: true, ..lax });
        assert!(secure.contains("Secure"), "{secure}");
        let none = set_cookie("s", "v", Attributes { cross_site: true, ..lax });
        assert!(none.contains("SameSite=None") && none.contains("Secure"), "{none}");
        assert!(clear_cookie("s", lax).contains("Max-Age=0"));
    }
}
