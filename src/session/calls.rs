//! The calls pipeline: every open call, the queue of calls waiting for a usable token, how
//! an answer to a call is taken, and the rule that each call ends exactly once
//! ([`Calls::close`] is the only way out, [`result_event`] says how).

use std::collections::VecDeque;

use crate::config::{Config, Timing};
use crate::http::{self, CallId, HttpResponse, Method, RequestId, RequestKind, TransportError, MAX_USERINFO_BYTES};
use crate::id_token::IdTokenClaims;
use crate::json::Object;
use crate::output::{CallFailure, Event, UserInfoError};
use crate::random::{self, RandomSource};
use crate::secret::AccessToken;
use crate::token;
use crate::vec_map::VecMap;

use super::requests::Outgoing;
use super::tokens::Tokens;

/// A request to the Domain API (or another configured API origin), without the token.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// The method.
    pub method: Method,
    /// Absolute, or relative to the configured API root (`Crm_Sales_Customers?$top=10`).
    pub url: String,
    /// Headers other than `Authorization`.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
    /// How long the call is expected to run (a `WaitForChanges` long poll: 2 minutes). A
    /// token that would expire before it ends is renewed first, when a renewed one would last.
    pub expected_duration_ms: Option<u64>,
}

impl ApiRequest {
    /// A request with no headers and no body.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        ApiRequest { method, url: url.into(), headers: Vec::new(), body: None, expected_duration_ms: None }
    }

    /// A `GET`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Says how long the call is expected to run, so that it does not start with a token
    /// that expires before it ends.
    pub fn with_expected_duration(mut self, duration_ms: u64) -> Self {
        self.expected_duration_ms = Some(duration_ms);
        self
    }
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRequest")
            .field("method", &self.method)
            .field("url", &http::redact_query(&self.url))
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .finish()
    }
}

/// Which result a call ends with: an API call's answer, or the userinfo claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallKind {
    Api,
    UserInfo,
    /// `{Profile site}/me`.
    Profile,
}

impl CallKind {
    pub fn request_kind(self) -> RequestKind {
        match self {
            CallKind::Api => RequestKind::Api,
            CallKind::UserInfo => RequestKind::UserInfo,
            CallKind::Profile => RequestKind::Profile,
        }
    }
}

/// Where one call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallPhase {
    /// In the waiting queue, for a usable token.
    Waiting,
    /// Sent as this request.
    InFlight(RequestId),
    /// Answered 429: back into the queue at this time.
    Throttled { until: u64 },
}

#[derive(Debug)]
pub(super) struct Call {
    request: ApiRequest,
    kind: CallKind,
    /// A relative URL kept as given, resolved when the call goes out (the instance's sites
    /// were being discovered when it was made).
    resolve_when_sent: bool,
    /// Already replayed once after a 401: the next 401 goes to the caller.
    replayed: bool,
    /// How often it was answered 429 and sent again.
    throttled: u32,
    phase: CallPhase,
}

impl Call {
    pub fn request(&self) -> &ApiRequest {
        &self.request
    }
    pub fn kind(&self) -> CallKind {
        self.kind
    }

    /// The request it has in flight.
    pub fn in_flight(&self) -> Option<RequestId> {
        match self.phase {
            CallPhase::InFlight(request) => Some(request),
            _ => None,
        }
    }
}

/// The open calls. Invariants: a call is in `waiting` exactly when its phase is `Waiting`,
/// and `waiting` is in call order (a call sent again, after a 401 or a 429, goes before the
/// calls made after it).
#[derive(Debug, Default)]
pub(super) struct Calls {
    open: VecMap<CallId, Call>,
    waiting: VecDeque<CallId>,
    last_id: u64,
    /// When a call last went out: proactive renewal is for sessions in use.
    last_sent_at: Option<u64>,
}

impl Calls {
    /// Opens a call; it waits until a usable token releases it.
    pub fn open(&mut self, request: ApiRequest, kind: CallKind, resolve_when_sent: bool) -> CallId {
        self.last_id += 1;
        let id = CallId(self.last_id);
        self.open.insert(
            id,
            Call { request, kind, resolve_when_sent, replayed: false, throttled: 0, phase: CallPhase::Waiting },
        );
        self.waiting.push_back(id);
        id
    }

    pub fn get(&self, call: CallId) -> Option<&Call> {
        self.open.get(&call)
    }

    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// The first waiting call, left in the queue.
    pub fn peek_waiting(&self) -> Option<CallId> {
        self.waiting.front().copied()
    }

    /// The first waiting call, taken off the queue (its phase is set by `sent`).
    pub fn next_waiting(&mut self) -> Option<CallId> {
        self.waiting.pop_front()
    }

    pub fn sent(&mut self, call: CallId, request: RequestId, now: u64) {
        if let Some(entry) = self.open.get_mut(&call) {
            entry.phase = CallPhase::InFlight(request);
        }
        self.last_sent_at = Some(now);
    }

    pub fn last_sent_at(&self) -> Option<u64> {
        self.last_sent_at
    }

    /// The request that carries `call` with `token`. A URL kept relative while the
    /// instance's sites were discovered is resolved now (`resolve`).
    pub fn outgoing(
        &self,
        call: CallId,
        token: &AccessToken,
        resolve: impl FnOnce(&str) -> Option<String>,
    ) -> Option<Outgoing> {
        let entry = self.open.get(&call)?;
        let request = entry.request.clone();
        let url = if entry.resolve_when_sent { resolve(&request.url).unwrap_or(request.url) } else { request.url };
        let mut headers = request.headers;
        headers.push(("Authorization".to_owned(), format!("Bearer {}", token.secret())));
        Some(Outgoing { kind: entry.kind.request_kind(), method: request.method, url, headers, body: request.body })
    }

    /// Takes the answer to request `id` of `call`, sent with the access token of
    /// `generation`; returns the call's result when it ends. `None` when it goes on: the
    /// answer is not to the request the call has in flight (cancelled, sent again), or the
    /// call goes out again. A 429 (for a method the policy sends again) is dropped, and the
    /// call waits, then goes out again with the same method, URL, headers and body. A 401 is
    /// a verdict on the token the request carried: for the current token, renewed then
    /// replayed once, unless the refusal is the API's ([`Tokens::rejection_is_the_apis`]);
    /// for a token already replaced, replayed with the current one.
    #[expect(clippy::too_many_arguments, reason = "one answer, judged against the tokens it was sent with")]
    pub fn on_answer(
        &mut self,
        call: CallId,
        id: RequestId,
        generation: u64,
        answer: Result<HttpResponse, TransportError>,
        tokens: &mut Tokens,
        config: &Config,
        now: u64,
        rng: &mut dyn RandomSource,
    ) -> Option<Result<(RequestId, HttpResponse), CallFailure>> {
        let entry = self.open.get(&call).filter(|entry| entry.phase == CallPhase::InFlight(id))?;
        let response = match answer {
            Err(error) => return Some(Err(CallFailure::Transport(error))),
            Ok(response) => response,
        };
        let timing = &config.timing;
        let attempt = entry.throttled.saturating_add(1);
        if response.status == 429
            && config.throttle_retry.allows(&entry.request.method)
            && attempt <= timing.max_throttle_retries
        {
            let retry_after = response.header_read("retry-after").and_then(|v| token::retry_after_secs(v, now));
            if let Some(delay) = throttle_delay(timing, attempt, retry_after, rng) {
                self.throttle(call, now.saturating_add(delay));
                return None;
            }
        }
        let current = generation == tokens.generation();
        if response.status == 401 && !entry.replayed {
            if current {
                if tokens.rejection_is_the_apis(now, timing) {
                    return Some(Ok((id, response)));
                }
                tokens.reject(now);
            }
            self.replay(call);
            return None;
        }
        if current && (200..300).contains(&response.status) {
            tokens.accept();
        }
        Some(Ok((id, response)))
    }

    /// Back into the queue for its one replay, ahead of every call made after it: it was sent
    /// before them (behind a burst it would wait for its new token to age).
    fn replay(&mut self, call: CallId) {
        if let Some(entry) = self.open.get_mut(&call) {
            entry.replayed = true;
            entry.phase = CallPhase::Waiting;
            self.enqueue_in_order(call);
        }
    }

    fn enqueue_in_order(&mut self, call: CallId) {
        let at = self.waiting.partition_point(|waiting| *waiting < call);
        self.waiting.insert(at, call);
    }

    /// Answered 429: waits until `until`, then goes back into the queue.
    fn throttle(&mut self, call: CallId, until: u64) {
        if let Some(entry) = self.open.get_mut(&call) {
            entry.throttled += 1;
            entry.phase = CallPhase::Throttled { until };
        }
    }

    /// When the first throttled call is due.
    pub fn next_throttle_end(&self) -> Option<u64> {
        self.open
            .values()
            .filter_map(|c| match c.phase {
                CallPhase::Throttled { until } => Some(until),
                _ => None,
            })
            .min()
    }

    /// Throttled calls due at `now` go back into the queue before every call made after them:
    /// they were sent before those.
    pub fn release_throttled(&mut self, now: u64) {
        let due: Vec<CallId> = self
            .open
            .iter()
            .filter(|(_, c)| matches!(c.phase, CallPhase::Throttled { until } if until <= now))
            .map(|(id, _)| *id)
            .collect();
        for call in due {
            if let Some(entry) = self.open.get_mut(&call) {
                entry.phase = CallPhase::Waiting;
                self.enqueue_in_order(call);
            }
        }
    }

    /// Calls sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.open.values().filter(|c| matches!(c.phase, CallPhase::InFlight(_))).count()
    }

    /// Ends a call; `None` when it already ended. The only way a call leaves.
    pub fn close(&mut self, call: CallId) -> Option<Call> {
        let entry = self.open.remove(&call)?;
        if entry.phase == CallPhase::Waiting {
            self.waiting.retain(|c| *c != call);
        }
        Some(entry)
    }

    /// Every open call, for sign-out.
    pub fn ids(&self) -> Vec<CallId> {
        self.open.keys().copied().collect()
    }

    /// The waiting calls, in order, for failing them together.
    pub fn waiting_ids(&self) -> Vec<CallId> {
        self.waiting.iter().copied().collect()
    }

    /// The requests the open calls have in flight.
    #[cfg(any(test, feature = "check-invariants"))]
    pub fn in_flight_requests(&self) -> impl Iterator<Item = (CallId, RequestId)> + '_ {
        self.open.iter().filter_map(|(call, entry)| match entry.phase {
            CallPhase::InFlight(request) => Some((*call, request)),
            _ => None,
        })
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// The queue agrees with the phases.
    #[cfg(any(test, feature = "check-invariants"))]
    pub fn consistent(&self) -> bool {
        let waiting_phases = self.open.values().filter(|c| c.phase == CallPhase::Waiting).count();
        waiting_phases == self.waiting.len()
            && self.waiting.iter().all(|c| self.open.get(c).is_some_and(|e| e.phase == CallPhase::Waiting))
            && self.waiting.iter().zip(self.waiting.iter().skip(1)).all(|(a, b)| a < b)
    }
}

/// The event a call ends with: an API call's answer or failure, the userinfo claims (their
/// `sub` checked against the ID token's `claims`), or the profile.
pub(super) fn result_event(
    call: CallId,
    kind: CallKind,
    result: Result<(RequestId, HttpResponse), CallFailure>,
    claims: Option<&IdTokenClaims>,
) -> Event {
    match (kind, result) {
        (CallKind::Api, Ok((request, response))) => Event::CallCompleted { call, request, response },
        (CallKind::Api, Err(error)) => Event::CallFailed { call, error },
        (CallKind::UserInfo, Ok((_, response))) => match user_info_claims(&response, claims) {
            Ok(claims) => Event::UserInfoReceived { call, claims },
            Err(error) => Event::UserInfoFailed { call, error },
        },
        (CallKind::UserInfo, Err(error)) => Event::UserInfoFailed { call, error: UserInfoError::Call(error) },
        (CallKind::Profile, Ok((_, response))) => match profile_of(&response) {
            Ok(profile) => Event::ProfileReceived { call, profile },
            Err(error) => Event::ProfileFailed { call, error },
        },
        (CallKind::Profile, Err(error)) => Event::ProfileFailed { call, error: UserInfoError::Call(error) },
    }
}

/// A JSON object answered with 200.
fn document(response: &HttpResponse) -> Result<serde_json::Map<String, serde_json::Value>, UserInfoError> {
    if response.status != 200 {
        return Err(UserInfoError::Status { status: response.status });
    }
    if response.body.len() > MAX_USERINFO_BYTES {
        return Err(UserInfoError::Malformed);
    }
    Ok(Object::parse(&response.body).map_err(|_| UserInfoError::Malformed)?.rest())
}

/// The userinfo claims, for the ID token's subject.
fn user_info_claims(
    response: &HttpResponse,
    id_claims: Option<&IdTokenClaims>,
) -> Result<serde_json::Map<String, serde_json::Value>, UserInfoError> {
    let claims = document(response)?;
    let sub = claims.get("sub").and_then(serde_json::Value::as_str);
    match (id_claims, sub) {
        (Some(id), Some(sub)) if id.sub == sub => Ok(claims),
        (None, Some(_)) => Ok(claims),
        _ => Err(UserInfoError::SubjectMismatch),
    }
}

/// The profile document: a JSON object with a string `id`.
fn profile_of(response: &HttpResponse) -> Result<serde_json::Map<String, serde_json::Value>, UserInfoError> {
    let profile = document(response)?;
    match profile.get("id") {
        Some(serde_json::Value::String(id)) if !id.is_empty() => Ok(profile),
        _ => Err(UserInfoError::Malformed),
    }
}

/// The wait before a call answered 429 goes out again: exponential with "equal jitter", at
/// least the server's `Retry-After`; `None` when the server asks for longer than the timing
/// allows (the 429 then goes to the caller).
fn throttle_delay(
    timing: &Timing,
    attempt: u32,
    retry_after_secs: Option<u64>,
    rng: &mut dyn RandomSource,
) -> Option<u64> {
    let server = retry_after_secs.map_or(0, |secs| secs.saturating_mul(1000));
    if server > timing.throttle_retry_max_ms {
        return None;
    }
    let exponential = timing
        .throttle_retry_base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
        .min(timing.throttle_retry_max_ms);
    let half = exponential / 2;
    // Truncation is the intent: a fraction of at most `half` milliseconds.
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let jitter = (random::unit_fraction(rng) * half as f64) as u64;
    Some((half + jitter).max(server).max(1))
}
