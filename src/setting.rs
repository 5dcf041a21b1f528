//! What a setting's value must look like: the rules for endpoint, issuer and redirect URLs
//! and for scopes, shared by the configuration, the provider documents it trusts and the
//! install link, and [`ConfigError`], which names the setting that broke one.

use crate::urls::{UrlError, WebUrl};

/// A configuration that cannot be used, and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting is absent.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A URL that does not parse or is relative.
    #[error("{field} must be an absolute URL such as https://demodb.my.erp.net ({reason})")]
    InvalidUrl {
        /// Which setting.
        field: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Plain `http` for a host that is not loopback.
    #[error("{field} must use https:// (plain http:// is accepted only for 127.0.0.1, [::1] and localhost)")]
    InsecureUrl {
        /// Which setting.
        field: &'static str,
    },
    /// `code id_token` cannot travel in a query.
    #[error("response_type \"code id_token\" cannot use response_mode \"query\"; use \"fragment\" or \"form_post\"")]
    HybridWithQuery,
    /// A public client was given a secret.
    #[error("a public client (client authentication \"none\") must not have a client secret; remove the secret or use client_secret_post")]
    PublicClientWithSecret,
    /// A secret-based method without a secret.
    #[error("client authentication {0} needs a client secret")]
    SecretRequired(&'static str),
    /// PKCE may only be switched off for the hybrid flow.
    #[error("PKCE can be switched off only with response_type \"code id_token\"")]
    PkceRequired,
    /// The hybrid flow's front-channel ID token is always checked, which needs `openid` in
    /// the scope.
    #[error("response_type \"code id_token\" needs \"openid\" in the scope")]
    HybridWithoutOpenid,
    /// A client id with control characters (RFC 6749 Appendix A.1: VSCHAR only).
    #[error("client_id must not contain control characters")]
    InvalidClientId,
    /// An empty scope, or one with characters OAuth does not allow.
    #[error("scope must be a non-empty, space-separated list of printable ASCII words without '\"' or '\\\\'")]
    InvalidScope,
    /// A reference token that is empty or not a header-safe ASCII string.
    #[error("the reference token must be a non-empty string of visible ASCII characters")]
    InvalidReferenceToken,
    /// An API concurrency limit of zero would never send a call.
    #[error("the API concurrency limit must be at least 1 (or none)")]
    ZeroApiConcurrency,
}

impl ConfigError {
    /// A stable code a caller can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::Missing(_) => "missing_setting",
            ConfigError::InvalidUrl { .. } => "invalid_url",
            ConfigError::InsecureUrl { .. } => "insecure_url",
            ConfigError::HybridWithQuery => "hybrid_with_query",
            ConfigError::PublicClientWithSecret => "public_client_with_secret",
            ConfigError::SecretRequired(_) => "secret_required",
            ConfigError::PkceRequired => "pkce_required",
            ConfigError::InvalidScope => "invalid_scope",
            ConfigError::InvalidClientId => "invalid_client_id",
            ConfigError::HybridWithoutOpenid => "hybrid_without_openid",
            ConfigError::ZeroApiConcurrency => "zero_api_concurrency",
            ConfigError::InvalidReferenceToken => "invalid_reference_token",
        }
    }
}

/// A scope as sent: RFC 6749 §3.3 words, one space apart.
pub(crate) fn normalize_scope(scope: &str) -> Result<String, ConfigError> {
    // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    let words: Vec<&str> = scope.split(' ').filter(|w| !w.is_empty()).collect();
    let valid = |w: &&str| w.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
    if words.is_empty() || !words.iter().all(valid) {
        return Err(ConfigError::InvalidScope);
    }
    Ok(words.join(" "))
}

/// An absolute `https` URL, or `http` on loopback.
pub(crate) fn parse_endpoint(field: &'static str, value: &str) -> Result<WebUrl, ConfigError> {
    let url = WebUrl::parse(value).map_err(|e| ConfigError::InvalidUrl {
        field,
        reason: match e {
            UrlError::Relative => "it is relative",
            UrlError::NoHost => "it has no host",
            UrlError::Invalid => "it does not parse",
        },
    })?;
    match url.scheme() {
        "https" => {}
        "http" if url.is_loopback() => {}
        "http" => return Err(ConfigError::InsecureUrl { field }),
        _ => return Err(ConfigError::InvalidUrl { field, reason: "its scheme is not https" }),
    }
    if url.host_str().is_none() {
        return Err(ConfigError::InvalidUrl { field, reason: "it has no host" });
    }
    if url.fragment().is_some() {
        return Err(ConfigError::InvalidUrl { field, reason: "it has a fragment" });
    }
    Ok(url)
}

/// An issuer (or an ERP.net instance root, from which the issuer is made): RFC 8414 §2
/// allows neither a query nor a fragment, and a control character is never part of one.
pub(crate) fn parse_issuer(field: &'static str, value: &str) -> Result<WebUrl, ConfigError> {
    if value.chars().any(char::is_control) {
        return Err(ConfigError::InvalidUrl { field, reason: "it has control characters" });
    }
    let url = parse_endpoint(field, value)?;
    if url.query().is_some() {
        return Err(ConfigError::InvalidUrl { field, reason: "an issuer has no query" });
    }
    Ok(url)
}

/// An ERP.net instance root, ending in `/` so that paths join below it.
pub(crate) fn parse_instance_root(value: &str) -> Result<WebUrl, ConfigError> {
    directory("instance root", parse_issuer("instance root", value)?)
}

pub(crate) fn directory(field: &'static str, url: WebUrl) -> Result<WebUrl, ConfigError> {
    url.into_directory().map_err(|_| ConfigError::InvalidUrl { field, reason: "it does not parse" })
}

/// Checks a redirect URI's shape (as the configuration does).
pub(crate) fn check_redirect_uri(value: &str) -> Result<(), ConfigError> {
    parse_redirect_uri(value).map(|_| ())
}

/// The redirect URI is sent exactly as given: only its shape is checked (absolute, `https`
/// or loopback `http`, no fragment, no control characters).
pub(crate) fn parse_redirect_uri(value: &str) -> Result<String, ConfigError> {
    const FIELD: &str = "redirect_uri";
    // URL parsing drops tabs and line breaks silently, but the value is sent as given.
    if value.chars().any(char::is_control) {
        return Err(ConfigError::InvalidUrl { field: FIELD, reason: "it has control characters" });
    }
    let url = WebUrl::parse(value)
        .map_err(|_| ConfigError::InvalidUrl { field: FIELD, reason: "it is relative or does not parse" })?;
    // The browser brings the code and the state here: only to a web origin over TLS (or
    // this machine), never to script (`javascript:`), a document (`data:`) or another program.
    match url.scheme() {
        "https" => {}
        "http" if url.is_loopback() => {}
        "http" => return Err(ConfigError::InsecureUrl { field: FIELD }),
        _ => return Err(ConfigError::InvalidUrl { field: FIELD, reason: "its scheme is not https" }),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::InvalidUrl { field: FIELD, reason: "it has no host" });
    }
    if url.fragment().is_some() {
        return Err(ConfigError::InvalidUrl { field: FIELD, reason: "it has a fragment" });
    }
    Ok(value.to_owned())
}
