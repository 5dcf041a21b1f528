//! Newtypes for every value that must never be printed.
//!
//! Each type serializes to its plain value (snapshots and wire formats need it) but its
//! `Debug` prints only the type name and `[redacted]`, and none implements `Display`.
//! Reading the value is explicit: [`secret()`](ClientSecret::secret).

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

macro_rules! secret_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a plain value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The plain value. Named so that every place that reveals it is easy to find.
            pub fn secret(&self) -> &str {
                &self.0
            }

            /// Compares with another value in time independent of where they differ.
            pub fn constant_time_eq(&self, other: &str) -> bool {
                self.0.as_bytes().ct_eq(other.as_bytes()).into()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret_string!(
    /// The plain client secret (the value whose hash ERP.net stores as `ApplicationSecretHash`).
    ClientSecret
);
secret_string!(
    /// An access token. Treated as opaque: ERP.net personal access tokens are not JWTs.
    AccessToken
);
secret_string!(
    /// A refresh token.
    RefreshToken
);
secret_string!(
    /// An ID token (a compact JWS).
    IdToken
);
secret_string!(
    /// An authorization code received on the callback.
    AuthorizationCode
);
secret_string!(
    /// The PKCE code verifier (RFC 7636), 43 characters of base64url.
    PkceVerifier
);
secret_string!(
    /// The `state` value binding a callback to the sign-in that started it.
    CsrfState
);
secret_string!(
    /// The OpenID Connect `nonce` binding an ID token to the sign-in that started it.
    Nonce
);

impl PkceVerifier {
    /// The PKCE challenge for this verifier with the `S256` method (RFC 7636 §4.2, the only
    /// method sent: a missing method means `plain`): `BASE64URL(SHA256(ASCII(verifier)))`.
    pub fn s256_challenge(&self) -> String {
        let digest = Sha256::digest(self.secret().as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    }
}
