//! The signed-in user of a request, as an axum extractor.

use std::ops::Deref;

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::response::Response;
use erpnet_auth::ApiRequest;

use super::{forward, Hold, ServerAuth, ServerError};
use crate::Client;

/// The signed-in user of the request: their session's authorized [`Client`] (it derefs to
/// it), which renews its token by itself.
///
/// As an extractor it needs `ServerAuth: FromRef<S>` (the `ServerAuth` as the router's
/// state, or a field of it). Without a signed-in session it rejects with `401`
/// `{"code":"not_signed_in"}` ([`ServerError::NotSignedIn`]); a page that rather shows
/// something else, or redirects to the sign-in, takes `Option<SignedIn>` instead (`None`
/// when not signed in). A store that is down rejects with `503` either way. Nothing is
/// created for a request that is not signed in.
///
/// While a handler holds it, the session's client stays in memory.
pub struct SignedIn {
    client: Client,
    _hold: Hold,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn").finish_non_exhaustive()
    }
}

impl SignedIn {
    pub(super) fn new(client: Client, hold: Hold) -> SignedIn {
        SignedIn { client, _hold: hold }
    }

    /// The user's client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Calls the Domain API as the user and hands the answer on to the browser
    /// ([`forward`]): `Ok` for every answer the API gave (a `404` too), `Err` when there was
    /// none (sign-in required, the API unreachable, …).
    pub async fn forward(&self, request: ApiRequest) -> Result<Response, ServerError> {
        Ok(forward(self.client.call(request).await?))
    }
}

impl Deref for SignedIn {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SignedIn
where
    ServerAuth: FromRef<S>,
{
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        ServerAuth::from_ref(state).user(&parts.headers).await?.ok_or(ServerError::NotSignedIn)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for SignedIn
where
    ServerAuth: FromRef<S>,
{
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        ServerAuth::from_ref(state).user(&parts.headers).await
    }
}
