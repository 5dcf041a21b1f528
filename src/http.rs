//! The HTTP values the session emits and consumes. The host owns the transport.

use serde::{Deserialize, Serialize};

/// Identifies one emitted HTTP request; the host hands it back with the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u64);

/// Identifies one API call made with [`call_api`](crate::Session::call_api).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(pub u64);

/// HTTP methods the session emits, or a caller passes through [`call_api`](crate::Session::call_api).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `HEAD`
    Head,
    /// `OPTIONS`
    Options,
}

impl TransportError {
    /// Whether the request may have reached the server (and run): false only for
    /// [`Connect`](Self::Connect), where nothing was sent. A POST whose transport failed
    /// otherwise must not be taken as undelivered.
    pub fn may_have_reached_server(&self) -> bool {
        !matches!(self, TransportError::Connect)
    }

    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            TransportError::Connect => "connect",
            TransportError::Timeout => "timeout",
            TransportError::Interrupted => "interrupted",
            TransportError::Other => "other",
        }
    }

    /// Parses a code as [`code`](Self::code) writes it; anything else is `Other`.
    pub fn from_code(code: &str) -> Self {
        match code {
            "connect" => TransportError::Connect,
            "timeout" => TransportError::Timeout,
            "interrupted" => TransportError::Interrupted,
            _ => TransportError::Other,
        }
    }
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
        }
    }

    /// Parses a method name case-insensitively.
    pub fn parse(name: &str) -> Option<Method> {
        Some(match name.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            _ => return None,
        })
    }
}

/// What the request is for, so a host can log, route or time it differently. Exhaustive on
/// purpose: a driver must not compile past a new kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(tsify::Tsify))]
#[serde(rename_all = "camelCase")]
pub enum RequestKind {
    /// `GET` of the OpenID discovery document.
    Discovery,
    /// `GET` of an ERP.net instance's auto-discovery document (its sites).
    Sites,
    /// `POST` to the token endpoint (code exchange, refresh, client credentials).
    Token,
    /// `POST` to the revocation endpoint.
    Revocation,
    /// `GET` of the provider's signing keys (JWKS).
    Keys,
    /// `GET` of the userinfo endpoint, with the access token.
    UserInfo,
    /// `GET` of an ERP.net Profile site's `/me`, with the access token.
    Profile,
    /// A Domain API call carrying the access token.
    Api,
}

impl RequestKind {
    /// The most body bytes the session reads from an answer to this kind of request; it
    /// refuses a bigger body as malformed. A host should stop reading past it (read at most
    /// one byte more and hand that over) rather than buffer whatever a server sends. `None`
    /// for API calls, whose bodies go to the caller unread.
    pub fn max_response_bytes(self) -> Option<usize> {
        match self {
            RequestKind::Discovery => Some(MAX_DISCOVERY_BYTES),
            RequestKind::Sites => Some(MAX_SITES_BYTES),
            RequestKind::Token => Some(MAX_TOKEN_BYTES),
            RequestKind::Keys => Some(MAX_JWKS_BYTES),
            RequestKind::UserInfo | RequestKind::Profile => Some(MAX_USERINFO_BYTES),
            // The answer is not read, only its status.
            RequestKind::Revocation => Some(MAX_REVOCATION_BYTES),
            RequestKind::Api => None,
        }
    }
}

// The size limits of the answers the session reads, one per kind of request; each parser
// refuses a bigger body unparsed.
/// A discovery document: larger ones are refused rather than parsed.
pub(crate) const MAX_DISCOVERY_BYTES: usize = 512 * 1024;
/// An ERP.net auto-discovery document.
pub(crate) const MAX_SITES_BYTES: usize = 256 * 1024;
/// A token endpoint's answer.
pub(crate) const MAX_TOKEN_BYTES: usize = 256 * 1024;
/// A key set.
pub(crate) const MAX_JWKS_BYTES: usize = 128 * 1024;
/// A userinfo or profile document is a handful of claims.
pub(crate) const MAX_USERINFO_BYTES: usize = 64 * 1024;
/// A revocation's answer is not read, only its status.
const MAX_REVOCATION_BYTES: usize = 4 * 1024;

/// An HTTP request to send. The host must send it as is and **must not follow redirects**
/// (answer with the 3xx response itself).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// Hand this back with the answer.
    pub id: RequestId,
    /// What the request is for.
    pub kind: RequestKind,
    /// For API requests, the call they carry out (a replay carries the same call).
    pub call: Option<CallId>,
    /// The method.
    pub method: Method,
    /// The absolute URL.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
    /// Unix ms after which the session counts the request as timed out (token, discovery,
    /// auto-discovery, key-set and revocation requests): abort it then, and answer with a
    /// transport error. `None` for a request emitted before the session's first input (the
    /// discovery and auto-discovery a new session starts with): the session does not know the
    /// time yet, and counts its deadline from that input; [`timeout_ms`](Self::timeout_ms)
    /// still says how long such a request may take.
    pub deadline: Option<u64>,
    /// How long the request may take, in milliseconds from when it is sent: present for every
    /// request the session times out (those with a [`deadline`](Self::deadline)), also before
    /// the session knows the time. Abort the request at `deadline` when there is one, else
    /// this long after sending it. `None` for API calls (userinfo and profile included):
    /// their time is the caller's (a long poll runs for minutes), and
    /// [`cancel_call`](crate::Session::cancel_call) ends one.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl HttpRequest {
    /// The first value of a header, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// The body as text, when it is UTF-8.
    pub fn body_text(&self) -> Option<&str> {
        self.body.as_deref().and_then(|b| std::str::from_utf8(b).ok())
    }
}

// Requests carry the client secret, tokens and codes: print only their shape.
impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HttpRequest")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("call", &self.call)
            .field("method", &self.method)
            .field("url", &redact_query(&self.url))
            .field("header_names", &header_names)
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .finish()
    }
}

/// The answer headers the session reads, by lowercase name. A host may hand over only these
/// (the npm package's driver does: every header crossing into WebAssembly costs).
pub const RESPONSE_HEADERS_READ: &[&str] = &["retry-after"];

/// An HTTP response as the host received it.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names and values: the session reads those [`RESPONSE_HEADERS_READ`] names.
    pub headers: Vec<(String, String)>,
    /// The body. For API calls the host may leave it empty and keep the real body itself:
    /// the session only reads the status and headers of API responses.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with a status and a body, no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { status, headers: Vec::new(), body: body.into() }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The first value of a header, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// A header the session itself reads: one [`RESPONSE_HEADERS_READ`] names.
    pub(crate) fn header_read(&self, name: &str) -> Option<&str> {
        debug_assert!(RESPONSE_HEADERS_READ.contains(&name), "{name} is missing from RESPONSE_HEADERS_READ");
        header_value(&self.headers, name)
    }
}

// Token responses carry tokens: print only their shape.
impl std::fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpResponse").field("status", &self.status).field("body_len", &self.body.len()).finish()
    }
}

/// Why the host could not get an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum TransportError {
    /// Not sent: no connection could be made (DNS, refused, TLS), or the host failed before
    /// sending (storage, lock).
    Connect,
    /// The request timed out.
    Timeout,
    /// The connection broke after the request may have reached the server.
    Interrupted,
    /// Anything else.
    Other,
}

pub(crate) fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The URL without its query and fragment, which may carry codes or tokens.
pub(crate) fn redact_query(url: &str) -> String {
    match url.find(['?', '#']) {
        Some(at) => format!("{}?[redacted]", url.get(..at).unwrap_or_default()),
        None => url.to_owned(),
    }
}
