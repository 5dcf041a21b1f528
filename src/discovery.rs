//! Provider metadata: the endpoints a session needs, from discovery or from configuration.

use serde::{Deserialize, Serialize};

use crate::http::MAX_DISCOVERY_BYTES;
use crate::json::{Object, Wrong};
use crate::setting::{parse_endpoint, ConfigError};
use crate::urls::WebUrl;

/// What the session keeps of a provider's OpenID discovery document. Cached in snapshots
/// so a restored session does not fetch it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "typescript", derive(tsify::Tsify))]
#[non_exhaustive]
pub struct ProviderMetadata {
    /// The issuer identifier.
    pub issuer: String,
    /// Where the browser is sent to sign in.
    pub authorization_endpoint: String,
    /// Where codes and refresh tokens are redeemed.
    pub token_endpoint: String,
    /// RP-initiated logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub end_session_endpoint: Option<String>,
    /// Token revocation (RFC 7009).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub revocation_endpoint: Option<String>,
    /// The userinfo endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub userinfo_endpoint: Option<String>,
    /// The provider's signing keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub jwks_uri: Option<String>,
    /// Client authentication methods the token endpoint accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// PKCE methods the provider accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// The provider always sends `iss` on the authorization response (RFC 9207).
    #[serde(default)]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub authorization_response_iss_parameter_supported: bool,
}

impl<'de> Deserialize<'de> for ProviderMetadata {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Object::deserialize(d)?.read(ProviderMetadata::from_object)
    }
}

impl ProviderMetadata {
    pub(crate) fn from_object(mut m: Object) -> Result<ProviderMetadata, Wrong> {
        Ok(ProviderMetadata {
            issuer: m.required_string("issuer")?,
            authorization_endpoint: m.required_string("authorization_endpoint")?,
            token_endpoint: m.required_string("token_endpoint")?,
            end_session_endpoint: m.string("end_session_endpoint")?,
            revocation_endpoint: m.string("revocation_endpoint")?,
            userinfo_endpoint: m.string("userinfo_endpoint")?,
            jwks_uri: m.string("jwks_uri")?,
            token_endpoint_auth_methods_supported: m.strings("token_endpoint_auth_methods_supported")?,
            code_challenge_methods_supported: m.strings("code_challenge_methods_supported")?,
            authorization_response_iss_parameter_supported: m
                .boolean("authorization_response_iss_parameter_supported")?
                .unwrap_or(false),
        })
    }

    /// The field names, as in a discovery document, for hosts that refuse unknown names.
    pub const FIELDS: [&'static str; 10] = [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "end_session_endpoint",
        "revocation_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "token_endpoint_auth_methods_supported",
        "code_challenge_methods_supported",
        "authorization_response_iss_parameter_supported",
    ];

    /// Explicit endpoints for a provider without discovery.
    pub fn new(
        issuer: impl Into<String>,
        authorization_endpoint: impl Into<String>,
        token_endpoint: impl Into<String>,
    ) -> Self {
        ProviderMetadata {
            issuer: issuer.into(),
            authorization_endpoint: authorization_endpoint.into(),
            token_endpoint: token_endpoint.into(),
            end_session_endpoint: None,
            revocation_endpoint: None,
            userinfo_endpoint: None,
            jwks_uri: None,
            token_endpoint_auth_methods_supported: None,
            code_challenge_methods_supported: None,
            authorization_response_iss_parameter_supported: false,
        }
    }

    /// Sets the end-session endpoint.
    pub fn with_end_session_endpoint(mut self, url: impl Into<String>) -> Self {
        self.end_session_endpoint = Some(url.into());
        self
    }

    /// Sets the revocation endpoint.
    pub fn with_revocation_endpoint(mut self, url: impl Into<String>) -> Self {
        self.revocation_endpoint = Some(url.into());
        self
    }

    /// The documented fixed paths of an ERP.net identity server at `{root}/id`.
    pub(crate) fn erpnet_fixed(root: &str) -> Self {
        let id = format!("{root}/id");
        ProviderMetadata {
            end_session_endpoint: Some(format!("{id}/connect/endsession")),
            revocation_endpoint: Some(format!("{id}/connect/revocation")),
            userinfo_endpoint: Some(format!("{id}/connect/userinfo")),
            jwks_uri: Some(format!("{id}/.well-known/openid-configuration/jwks")),
            ..ProviderMetadata::new(id.clone(), format!("{id}/connect/authorize"), format!("{id}/connect/token"))
        }
    }

    /// The first endpoint (by its field name) that is not on the issuer's origin; the
    /// issuer's own name when the issuer does not parse.
    fn first_endpoint_off_issuer_origin(&self) -> Option<&'static str> {
        let origin = |u: &str| WebUrl::parse(u).map(|u| u.origin()).ok();
        let Some(issuer) = origin(&self.issuer) else { return Some("issuer") };
        [
            ("authorization_endpoint", Some(&self.authorization_endpoint)),
            ("token_endpoint", Some(&self.token_endpoint)),
            ("end_session_endpoint", self.end_session_endpoint.as_ref()),
            ("revocation_endpoint", self.revocation_endpoint.as_ref()),
            ("userinfo_endpoint", self.userinfo_endpoint.as_ref()),
            ("jwks_uri", self.jwks_uri.as_ref()),
        ]
        .into_iter()
        .find(|(_, url)| url.is_some_and(|u| origin(u).as_ref() != Some(&issuer)))
        .map(|(field, _)| field)
    }

    /// Every endpoint must be absolute and HTTPS (or loopback).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        parse_endpoint("issuer", &self.issuer)?;
        parse_endpoint("authorization_endpoint", &self.authorization_endpoint)?;
        parse_endpoint("token_endpoint", &self.token_endpoint)?;
        let optional = [
            ("end_session_endpoint", &self.end_session_endpoint),
            ("revocation_endpoint", &self.revocation_endpoint),
            ("userinfo_endpoint", &self.userinfo_endpoint),
            ("jwks_uri", &self.jwks_uri),
        ];
        for (field, value) in optional {
            if let Some(value) = value {
                parse_endpoint(field, value)?;
            }
        }
        Ok(())
    }
}

/// Why a discovery document was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The server answered with a status other than 200.
    #[error("the discovery endpoint answered HTTP {0}")]
    Status(u16),
    /// The host could not reach the server.
    #[error("the discovery endpoint could not be reached")]
    Transport,
    /// The body is not the JSON document expected.
    #[error("the discovery document is not valid JSON metadata")]
    Malformed,
    /// The document names another issuer (OpenID Connect Discovery §4.3): possibly an attack.
    #[error("the discovery document names another issuer than the one configured")]
    IssuerMismatch,
    /// An endpoint is relative or not HTTPS.
    #[error("the discovery document has an unusable endpoint: {0}")]
    BadEndpoint(ConfigError),
    /// With the ERP.net preset: an endpoint off the instance's origin, where the client
    /// secret, a code or a token would go (possibly an attack; no fallback is used).
    #[error("the discovery document puts {field} off the ERP.net instance's origin")]
    ForeignEndpoint {
        /// The endpoint's field name in the document (`token_endpoint`, `jwks_uri`, …).
        field: &'static str,
    },
}

impl DiscoveryError {
    /// A stable code a caller can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            DiscoveryError::Status(_) => "discovery_status",
            DiscoveryError::Transport => "transport",
            DiscoveryError::Malformed => "discovery_malformed",
            DiscoveryError::IssuerMismatch => "discovery_issuer_mismatch",
            DiscoveryError::BadEndpoint(_) => "discovery_bad_endpoint",
            DiscoveryError::ForeignEndpoint { .. } => "discovery_foreign_endpoint",
        }
    }
}

/// Where a provider document came from. What the session requires of it follows from this
/// alone ([`trust`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Provenance<'a> {
    /// Fetched from the configured issuer's discovery endpoint; `on_issuer_origin` under the
    /// ERP.net preset, whose identity server lives on the instance.
    Discovered { issuer: &'a str, on_issuer_origin: bool },
    /// Someone else's word: learned by another session of this process, or read from a
    /// store.
    Secondhand { issuer: &'a str },
}

/// The one rule for provider metadata the session did not write itself. Every endpoint is
/// absolute and HTTPS (or loopback), as the configuration's own are (it checks them with
/// [`ProviderMetadata::validate`] when it is built); the document names the configured
/// issuer (OpenID Connect Discovery §4.3); and every endpoint is on the issuer's origin
/// unless the session fetched the document from a non-ERP.net issuer itself: the client
/// secret, codes and tokens go nowhere else on a document's word.
pub(crate) fn trust(metadata: &ProviderMetadata, from: Provenance<'_>) -> Result<(), DiscoveryError> {
    let (issuer, on_issuer_origin) = match from {
        Provenance::Discovered { issuer, on_issuer_origin } => (issuer, on_issuer_origin),
        Provenance::Secondhand { issuer } => (issuer, true),
    };
    if metadata.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(DiscoveryError::IssuerMismatch);
    }
    metadata.validate().map_err(DiscoveryError::BadEndpoint)?;
    if on_issuer_origin {
        if let Some(field) = metadata.first_endpoint_off_issuer_origin() {
            return Err(DiscoveryError::ForeignEndpoint { field });
        }
    }
    Ok(())
}

/// Reads a discovery document fetched for `expected_issuer`; with `on_issuer_origin` (the
/// ERP.net preset) every endpoint must be on the issuer's origin.
pub(crate) fn parse_discovery(
    expected_issuer: &str,
    on_issuer_origin: bool,
    status: u16,
    body: &[u8],
) -> Result<ProviderMetadata, DiscoveryError> {
    if status != 200 {
        return Err(DiscoveryError::Status(status));
    }
    if body.len() > MAX_DISCOVERY_BYTES {
        return Err(DiscoveryError::Malformed);
    }
    let metadata = Object::parse(body).ok().and_then(|m| ProviderMetadata::from_object(m).ok());
    let metadata = metadata.ok_or(DiscoveryError::Malformed)?;
    trust(&metadata, Provenance::Discovered { issuer: expected_issuer, on_issuer_origin })?;
    Ok(metadata)
}

pub(crate) fn discovery_url(issuer: &str) -> String {
    format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))
}
