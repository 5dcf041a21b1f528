//! PKCE (RFC 7636) with the `S256` method only: a missing method means `plain`.

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::secret::PkceVerifier;

/// `BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`.
pub fn s256_challenge(verifier: &PkceVerifier) -> String {
    let digest = Sha256::digest(verifier.secret().as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// The value ERP.net stores as a trusted application's `ApplicationSecretHash`:
/// `base64(sha256(utf8(secret)))`, standard alphabet with padding.
///
/// ```
/// assert_eq!(
///     erpnet_auth::application_secret_hash("secret"),
///     "K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="
/// );
/// ```
pub fn application_secret_hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}
