//! The requests the session emitted and has not seen answered: what each is for, the
//! deadlines of those it times, and the token slot, the single-flight rule (at most one token
//! request, a code exchange or a renewal, or an abandoned one whose answer is still
//! outstanding, at a time).

use crate::config::TokenRequestParts;
use crate::http::{CallId, HttpRequest, Method, RequestId, RequestKind};
use crate::usage::UsageError;
use crate::vec_map::VecMap;

/// What an emitted request is for, so its answer goes to the right pipeline. The data a
/// step needs lives in that pipeline's phase, not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Discovery,
    Sites,
    Keys,
    Exchange,
    Renewal,
    Revocation,
    Call {
        call: CallId,
        /// The access token's generation it carried: a 401 is a verdict on that token.
        generation: u64,
    },
    /// Answer ignored: the call was cancelled or the session signed out.
    Abandoned,
    /// A token request whose answer no longer matters; it keeps the slot until answered.
    AbandonedToken,
    /// Past its deadline: it counted as a timeout, and its late answer is ignored.
    TimedOut,
}

impl Purpose {
    fn is_token_request(self) -> bool {
        matches!(self, Purpose::Exchange | Purpose::Renewal | Purpose::AbandonedToken)
    }
}

/// The outstanding requests.
#[derive(Debug, Default)]
pub(super) struct Requests {
    last: u64,
    open: VecMap<RequestId, Purpose>,
    /// The deadlines of the outstanding token, discovery, auto-discovery, key-set and
    /// revocation requests. Before the clock starts they are durations, made instants by
    /// [`start_clock`](Self::start_clock).
    deadlines: VecMap<RequestId, u64>,
    /// The one token request in flight.
    slot: Option<RequestId>,
}

/// A request to emit, without its id.
pub(super) struct Outgoing {
    pub kind: RequestKind,
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Outgoing {
    /// A `GET` that asks for JSON.
    pub fn json_get(kind: RequestKind, url: String) -> Outgoing {
        let headers = vec![("Accept".to_owned(), "application/json".to_owned())];
        Outgoing { kind, method: Method::Get, url, headers, body: None }
    }

    /// A form `POST` to the token or revocation endpoint, client authentication included.
    pub fn form_post(kind: RequestKind, url: String, parts: TokenRequestParts) -> Outgoing {
        Outgoing { kind, method: Method::Post, url, headers: parts.headers, body: Some(parts.body) }
    }
}

impl Requests {
    /// Registers `request` for `purpose`; a code exchange or renewal takes the token slot.
    /// Token, discovery, auto-discovery, key-set and revocation requests get a deadline
    /// `timeout_ms` after `now`; before the first input (`clock_started` false) the session
    /// does not know the time: it still counts the deadline (from that input on) and cannot
    /// tell the host an instant, but the host can time the request from when it sends it.
    pub fn emit(
        &mut self,
        request: Outgoing,
        purpose: Purpose,
        now: u64,
        clock_started: bool,
        timeout_ms: u64,
    ) -> HttpRequest {
        self.last += 1;
        let id = RequestId(self.last);
        let call = match purpose {
            Purpose::Call { call, .. } => Some(call),
            _ => None,
        };
        self.open.insert(id, purpose);
        if matches!(purpose, Purpose::Exchange | Purpose::Renewal) {
            self.slot = Some(id);
        }
        let Outgoing { kind, method, url, headers, body } = request;
        let (deadline, timeout_ms) = match kind {
            RequestKind::Token
            | RequestKind::Discovery
            | RequestKind::Sites
            | RequestKind::Keys
            | RequestKind::Revocation => {
                let at = now.saturating_add(timeout_ms);
                self.deadlines.insert(id, at);
                (clock_started.then_some(at), Some(timeout_ms))
            }
            RequestKind::UserInfo | RequestKind::Profile | RequestKind::Api => (None, None),
        };
        HttpRequest { id, kind, call, method, url, headers, body, deadline, timeout_ms }
    }

    /// The first input brought the time: deadlines counted until now become instants.
    pub fn start_clock(&mut self, now: u64) {
        for deadline in self.deadlines.values_mut() {
            *deadline = deadline.saturating_add(now);
        }
    }

    /// The answer to `id` arrived: what it was for. Refused for a request never emitted or
    /// already answered.
    pub fn take(&mut self, id: RequestId) -> Result<Purpose, UsageError> {
        self.deadlines.remove(&id);
        match self.open.remove(&id) {
            Some(purpose) => {
                self.free_slot(id);
                Ok(purpose)
            }
            None if id.0 > 0 && id.0 <= self.last => Err(UsageError::AlreadyAnswered(id)),
            None => Err(UsageError::UnknownRequest(id)),
        }
    }

    /// The requests past their deadline at `now`.
    pub fn due(&self, now: u64) -> Vec<RequestId> {
        self.deadlines.iter().filter(|(_, at)| **at <= now).map(|(id, _)| *id).collect()
    }

    /// Request `id` timed out: it counts as answered by a timeout (its late answer is ignored).
    /// Returns what it was for.
    pub fn time_out(&mut self, id: RequestId) -> Option<Purpose> {
        self.deadlines.remove(&id);
        let purpose = self.open.insert(id, Purpose::TimedOut)?;
        self.free_slot(id);
        Some(purpose)
    }

    fn free_slot(&mut self, id: RequestId) {
        if self.slot == Some(id) {
            self.slot = None;
        }
    }

    /// The answer to `id` will be ignored. A token request keeps the slot until answered.
    pub fn abandon(&mut self, id: RequestId) {
        if let Some(purpose) = self.open.get_mut(&id) {
            *purpose = if purpose.is_token_request() { Purpose::AbandonedToken } else { Purpose::Abandoned };
        }
    }

    /// Whether request `id` is outstanding and its answer still matters.
    pub fn is_wanted(&self, id: RequestId) -> bool {
        self.open
            .get(&id)
            .is_some_and(|p| !matches!(p, Purpose::Abandoned | Purpose::AbandonedToken | Purpose::TimedOut))
    }

    /// The token request holding the slot.
    pub fn slot(&self) -> Option<RequestId> {
        self.slot
    }

    /// The deadline of `id` when it is a code exchange or a renewal that may still be sent.
    pub fn token_request_deadline(&self, id: RequestId) -> Option<u64> {
        if !matches!(self.open.get(&id), Some(Purpose::Exchange | Purpose::Renewal)) {
            return None;
        }
        self.deadlines.get(&id).copied()
    }

    /// The soonest deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.values().min().copied()
    }

    #[cfg(any(test, feature = "check-invariants"))]
    pub fn purpose(&self, id: RequestId) -> Option<Purpose> {
        self.open.get(&id).copied()
    }

    /// The calls whose requests are outstanding.
    #[cfg(any(test, feature = "check-invariants"))]
    pub fn calls(&self) -> impl Iterator<Item = CallId> + '_ {
        self.open.values().filter_map(|p| match p {
            Purpose::Call { call, .. } => Some(*call),
            _ => None,
        })
    }

    /// The table's own invariants: one token request at most, the slot naming it, deadlines
    /// only for requests still outstanding.
    #[cfg(any(test, feature = "check-invariants"))]
    pub fn check(&self) {
        let token_requests: Vec<RequestId> =
            self.open.iter().filter(|(_, p)| p.is_token_request()).map(|(id, _)| *id).collect();
        assert!(token_requests.len() <= 1, "two token requests in flight: {token_requests:?}");
        assert_eq!(token_requests.first().copied(), self.slot, "the token slot disagrees with the requests");
        for id in self.deadlines.keys() {
            let purpose = self.open.get(id);
            assert!(purpose.is_some_and(|p| *p != Purpose::TimedOut), "a deadline for a request not outstanding");
        }
    }
}
