//! The transport: reqwest, with redirects off, the session's deadline enforced and answer
//! bodies capped while they are read.

use erpnet_auth::{http::RESPONSE_HEADERS_READ, HttpRequest, HttpResponse, RequestKind, TransportError};
use tokio::time::Instant;

/// The HTTP client a [`Client`](crate::Client) uses unless given one: redirects are never
/// followed (a token request must not be sent on elsewhere, nor an access token reach
/// another origin through a 3xx), connections are pooled.
pub fn default_http_client() -> Result<reqwest::Client, crate::Error> {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().map_err(|_| crate::Error::HttpClient)
}

/// API answers are buffered up to this by default (see
/// [`ClientBuilder::max_body_bytes`](crate::ClientBuilder::max_body_bytes)).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The most body bytes reserved before they arrive.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;

/// Sends `request` and reads its answer, giving up at `deadline` with
/// [`TransportError::Timeout`]. Every status is an answer; only a failed exchange is an error.
pub(crate) async fn send(
    client: &reqwest::Client,
    request: HttpRequest,
    deadline: Option<Instant>,
    max_body_bytes: usize,
) -> Result<HttpResponse, TransportError> {
    let exchange = exchange(client, request, max_body_bytes);
    match deadline {
        Some(at) => tokio::time::timeout_at(at, exchange).await.unwrap_or(Err(TransportError::Timeout)),
        None => exchange.await,
    }
}

async fn exchange(
    client: &reqwest::Client,
    request: HttpRequest,
    max_body_bytes: usize,
) -> Result<HttpResponse, TransportError> {
    let method = reqwest::Method::from_bytes(request.method.as_str().as_bytes()).map_err(|_| TransportError::Other)?;
    let mut builder = client.request(method, request.url.as_str());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some(body) = request.body {
        builder = builder.body(body);
    }
    let mut response = builder.send().await.map_err(|e| classify(&e))?;
    let status = response.status().as_u16();
    let api = request.kind == RequestKind::Api;
    // The caller of an API call reads its headers; the session reads only those it names.
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| api || RESPONSE_HEADERS_READ.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    // The session refuses a body past its own limit: one byte more is enough for it to see
    // that. An API answer past the caller's limit is a transport failure instead.
    let (limit, over_is_error) = match request.kind.max_response_bytes() {
        Some(limit) => (limit, false),
        None => (max_body_bytes, true),
    };
    if over_is_error && response.content_length().is_some_and(|length| length > limit as u64) {
        return Err(TransportError::Other);
    }
    // Sized by the announced length, but never by more than a little up front: the length
    // is the server's claim, the bytes are what counts.
    let announced = response.content_length().and_then(|length| usize::try_from(length).ok()).unwrap_or(0);
    let mut body = Vec::with_capacity(announced.min(limit.saturating_add(1)).min(INITIAL_BODY_CAPACITY));
    while body.len() <= limit {
        match response.chunk().await.map_err(|e| classify(&e))? {
            Some(chunk) => body.extend_from_slice(&chunk),
            None => break,
        }
    }
    if body.len() > limit {
        if over_is_error {
            return Err(TransportError::Other);
        }
        body.truncate(limit.saturating_add(1));
    }
    Ok(HttpResponse { status, headers, body })
}

/// The transport failure's kind. reqwest's messages name the URL (which may carry a code in
/// its query), so only the kind crosses.
fn classify(error: &reqwest::Error) -> TransportError {
    if error.is_timeout() {
        TransportError::Timeout
    } else if error.is_connect() {
        TransportError::Connect
    } else if error.is_builder() {
        TransportError::Other
    } else {
        TransportError::Interrupted
    }
}

/// Unix ms on the wall clock: the `now` the session takes.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// The longest a single timer sleeps before it re-arms (a `WaitUntil` years ahead must
/// neither overflow the clock nor be missed).
const MAX_SLEEP_MS: u64 = 24 * 3_600_000;

/// The tokio instant of a Unix ms time, counted from now (a time in the past is now).
pub(crate) fn instant_of(unix_ms: u64) -> Instant {
    let ahead = unix_ms.saturating_sub(now_ms()).min(MAX_SLEEP_MS);
    Instant::now() + std::time::Duration::from_millis(ahead)
}
