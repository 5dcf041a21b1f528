//! Observability (feature `tracing`): a span per token request and events for renewal,
//! replays, backoff, lock waits and storage conflicts. Fields are kinds, statuses,
//! durations, counts and ids only: never a URL, a header value, a body, a token, a code, a
//! verifier, a state or a nonce. Without the feature every function here is empty.

#[cfg(feature = "tracing")]
mod on {
    use erpnet_auth::{HttpResponse, TransportError};
    use std::time::Instant;

    /// One token request, from send to answer.
    pub(crate) struct TokenSpan {
        span: tracing::Span,
        started: Instant,
    }

    impl TokenSpan {
        pub(crate) fn start(grant: &'static str, attempt: u32, request: u64) -> TokenSpan {
            let span = tracing::info_span!(
                target: "erpnet_auth_tokio",
                "token_request",
                grant,
                attempt,
                request,
                status = tracing::field::Empty,
                error = tracing::field::Empty,
                duration_ms = tracing::field::Empty,
            );
            TokenSpan { span, started: Instant::now() }
        }

        pub(crate) fn finish(self, result: &Result<HttpResponse, TransportError>) {
            let duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.span.record("duration_ms", duration_ms);
            match result {
                Ok(response) => {
                    self.span.record("status", response.status);
                }
                Err(error) => {
                    self.span.record("error", error.code());
                }
            }
            self.span.in_scope(|| tracing::info!(target: "erpnet_auth_tokio", duration_ms, "token request answered"));
        }
    }

    pub(crate) fn renewed(expires_in_ms: Option<u64>) {
        tracing::info!(target: "erpnet_auth_tokio", expires_in_ms, "tokens renewed");
    }

    pub(crate) fn renewal_deferred(code: &'static str, attempt: u32, retry_in_ms: u64) {
        tracing::warn!(target: "erpnet_auth_tokio", error = code, attempt, retry_in_ms, "renewal deferred");
    }

    pub(crate) fn renewal_failed(code: &'static str) {
        tracing::warn!(target: "erpnet_auth_tokio", error = code, "renewal failed");
    }

    pub(crate) fn sign_in_required(code: &'static str) {
        tracing::warn!(target: "erpnet_auth_tokio", reason = code, "sign-in required");
    }

    pub(crate) fn resent(call: u64, after_status: u16, send: u32) {
        match after_status {
            401 => tracing::info!(target: "erpnet_auth_tokio", call, send, "call replayed after 401"),
            429 => tracing::info!(target: "erpnet_auth_tokio", call, send, "call sent again after 429 backoff"),
            _ => tracing::debug!(target: "erpnet_auth_tokio", call, send, after_status, "call sent again"),
        }
    }

    pub(crate) fn throttled(call: u64, request: u64) {
        tracing::info!(target: "erpnet_auth_tokio", call, request, "api answered 429");
    }

    pub(crate) fn lock_wait(waited_ms: u64, outcome: &'static str) {
        tracing::info!(target: "erpnet_auth_tokio", waited_ms, outcome, "token lock wait");
    }

    pub(crate) fn not_sent(request: u64, reason: &'static str) {
        tracing::info!(target: "erpnet_auth_tokio", request, reason, "token request not sent");
    }

    pub(crate) fn storage_conflict(generation: u64) {
        tracing::warn!(target: "erpnet_auth_tokio", generation, "snapshot write lost to a newer one; adopting it");
    }

    pub(crate) fn storage_error(code: &'static str, operation: &'static str) {
        tracing::error!(target: "erpnet_auth_tokio", error = code, operation, "session store failed");
    }

    pub(crate) fn snapshot_discarded(code: &'static str) {
        tracing::warn!(target: "erpnet_auth_tokio", error = code, "stored snapshot not usable; ignored");
    }

    pub(crate) fn driver_bug(code: &'static str) {
        tracing::error!(target: "erpnet_auth_tokio", error = code, "driver broke the loop contract");
    }
}

#[cfg(not(feature = "tracing"))]
mod on {
    use erpnet_auth::{HttpResponse, TransportError};

    pub(crate) struct TokenSpan;

    impl TokenSpan {
        pub(crate) fn start(_grant: &'static str, _attempt: u32, _request: u64) -> TokenSpan {
            TokenSpan
        }

        pub(crate) fn finish(self, _result: &Result<HttpResponse, TransportError>) {}
    }

    pub(crate) fn renewed(_expires_in_ms: Option<u64>) {}
    pub(crate) fn renewal_deferred(_code: &'static str, _attempt: u32, _retry_in_ms: u64) {}
    pub(crate) fn renewal_failed(_code: &'static str) {}
    pub(crate) fn sign_in_required(_code: &'static str) {}
    pub(crate) fn resent(_call: u64, _after_status: u16, _send: u32) {}
    pub(crate) fn throttled(_call: u64, _request: u64) {}
    pub(crate) fn lock_wait(_waited_ms: u64, _outcome: &'static str) {}
    pub(crate) fn not_sent(_request: u64, _reason: &'static str) {}
    pub(crate) fn storage_conflict(_generation: u64) {}
    pub(crate) fn storage_error(_code: &'static str, _operation: &'static str) {}
    pub(crate) fn snapshot_discarded(_code: &'static str) {}
    pub(crate) fn driver_bug(_code: &'static str) {}
}

pub(crate) use on::*;

/// The grant of a token request, read from its form body (`grant_type` is not a secret).
pub(crate) fn grant_of(body: Option<&[u8]>) -> &'static str {
    let Some(body) = body else { return "unknown" };
    for part in body.split(|&b| b == b'&') {
        match part {
            b"grant_type=refresh_token" => return "refresh_token",
            b"grant_type=authorization_code" => return "authorization_code",
            b"grant_type=client_credentials" => return "client_credentials",
            _ => {}
        }
    }
    "other"
}
