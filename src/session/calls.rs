//! The calls pipeline: every open call, the queue of calls waiting for a usable token, and
//! the rule that each call ends exactly once ([`Calls::close`] is the only way out).

use std::collections::VecDeque;

use crate::http::{CallId, Method, RequestId};
use crate::vec_map::VecMap;

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
            .field("url", &crate::http::redact_query(&self.url))
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

/// Where one call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallPhase {
    /// In the waiting queue, for a usable token.
    Waiting,
    /// Sent as this request.
    InFlight(RequestId),
    /// Answered 429: back into the queue at this time.
    Throttled { until: u64 },
}

#[derive(Debug)]
pub(super) struct Call {
    pub request: ApiRequest,
    pub kind: CallKind,
    /// A relative URL kept as given, resolved when the call goes out (the instance's sites
    /// were being discovered when it was made).
    pub resolve_when_sent: bool,
    /// Already replayed once after a 401: the next 401 goes to the caller.
    pub replayed: bool,
    /// How often it was answered 429 and sent again.
    pub throttled: u32,
    pub phase: CallPhase,
}

/// The open calls. Invariants: a call is in `waiting` exactly when its phase is `Waiting`,
/// and `waiting` is in call order (a call sent again, after a 401 or a 429, goes before the
/// calls made after it).
#[derive(Debug, Default)]
pub(super) struct Calls {
    open: VecMap<CallId, Call>,
    waiting: VecDeque<CallId>,
    last_id: u64,
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

    pub fn sent(&mut self, call: CallId, request: RequestId) {
        if let Some(entry) = self.open.get_mut(&call) {
            entry.phase = CallPhase::InFlight(request);
        }
    }

    /// Back into the queue for its one replay, ahead of every call made after it: it was sent
    /// before them (behind a burst it would wait for its new token to age).
    pub fn replay(&mut self, call: CallId) {
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

    /// Answered 429: waits until `until`, then goes back to the head of the queue.
    pub fn throttle(&mut self, call: CallId, until: u64) {
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

    #[cfg(any(test, feature = "check-invariants"))]
    pub fn iter(&self) -> impl Iterator<Item = (&CallId, &Call)> {
        self.open.iter()
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
