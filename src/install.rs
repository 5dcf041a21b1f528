//! Installing a trusted application in ERP.net: the link an administrator opens (the
//! instance's `/manage/apps/install` page with the application described in its query,
//! refusing the combinations ERP.net refuses), and the hash ERP.net stores of its secret.

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::urls::WebUrl;

use crate::setting::{check_redirect_uri, normalize_scope, parse_instance_root, ConfigError};

/// How the application authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstallClientType {
    /// Has a secret (a server-side web app, a service).
    Confidential,
    /// Has no secret and signs users in with PKCE (a single-page app).
    Public,
    /// Does not use the token endpoint (reference tokens only).
    None,
}

/// Whose identity the application may act with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Impersonation {
    /// Nobody's: the application acts only as itself.
    None,
    /// Internal users.
    Internal,
    /// Internal and external users.
    All,
}

/// How the application may reach the API as itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceAccess {
    /// Not at all.
    None,
    /// With the client credentials grant.
    ClientCredentials,
    /// With a service reference token.
    ReferenceToken,
}

/// Who may issue personal reference tokens for the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReferenceTokenIssuers {
    /// Nobody.
    None,
    /// Every signed-in user.
    AuthenticatedUsers,
    /// Administrators only.
    AdministratorsOnly,
}

/// A trusted application, as the install page takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustedApplication {
    /// The application URI: the client id.
    pub application_uri: String,
    /// The name shown to the administrator.
    pub application_name: Option<String>,
    /// Confidential, public or none.
    pub client_type: InstallClientType,
    /// The redirect URI, exactly as the application sends it.
    pub redirect_uri: Option<String>,
    /// Whose identity it may act with.
    pub impersonate: Impersonation,
    /// Ask ERP.net to generate a secret (confidential applications only).
    pub request_secret: bool,
    /// How it may reach the API as itself.
    pub service_access: ServiceAccess,
    /// Who may issue personal reference tokens for it.
    pub reference_tokens: ReferenceTokenIssuers,
    /// The scope it may ask for, space-separated.
    pub scope: Option<String>,
}

impl TrustedApplication {
    /// An application of `client_type` with nothing granted yet; set the fields it needs.
    pub fn new(application_uri: impl Into<String>, client_type: InstallClientType) -> Self {
        TrustedApplication {
            application_uri: application_uri.into(),
            application_name: None,
            client_type,
            redirect_uri: None,
            impersonate: Impersonation::None,
            request_secret: false,
            service_access: ServiceAccess::None,
            reference_tokens: ReferenceTokenIssuers::None,
            scope: None,
        }
    }
}

/// Why an install link was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstallLinkError {
    /// The instance root or the redirect URI is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A combination ERP.net refuses, and what to change.
    #[error("ERP.net refuses this application: {0}")]
    Refused(&'static str),
}

impl InstallLinkError {
    /// A stable code a caller can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            InstallLinkError::Config(e) => e.code(),
            InstallLinkError::Refused(_) => "install_refused",
        }
    }
}

/// The link to `{instance}/manage/apps/install` that installs `app`. ERP.net's rules: a
/// `Public` application needs a redirect URI and impersonation, and cannot request a secret;
/// only a `Confidential` one can; user sign-in (impersonation) needs a redirect URI.
pub fn install_link(instance_root: &str, app: &TrustedApplication) -> Result<String, InstallLinkError> {
    let root = parse_instance_root(instance_root)?;
    if app.application_uri.trim().is_empty() || app.application_uri.chars().any(char::is_control) {
        return Err(ConfigError::InvalidClientId.into());
    }
    if let Some(uri) = &app.redirect_uri {
        check_redirect_uri(uri)?;
    }
    match app.client_type {
        InstallClientType::Public if app.request_secret => {
            return Err(InstallLinkError::Refused("a Public application cannot request a secret"))
        }
        InstallClientType::Public if app.impersonate == Impersonation::None => {
            return Err(InstallLinkError::Refused("a Public application must impersonate users (internal or all)"))
        }
        InstallClientType::None if app.request_secret => {
            return Err(InstallLinkError::Refused("only a Confidential application can request a secret"))
        }
        InstallClientType::Public | InstallClientType::Confidential | InstallClientType::None => {}
    }
    if app.impersonate != Impersonation::None && app.redirect_uri.is_none() {
        return Err(InstallLinkError::Refused("signing users in (impersonation) needs a redirect URI"));
    }
    if app.service_access == ServiceAccess::ClientCredentials && app.client_type != InstallClientType::Confidential {
        return Err(InstallLinkError::Refused("client credentials need a Confidential application"));
    }
    if let Some(scope) = &app.scope {
        normalize_scope(scope)?;
    }

    let url: WebUrl = root
        .join("manage/apps/install")
        .map_err(|_| ConfigError::InvalidUrl { field: "instance root", reason: "it does not parse" })?;
    let client_type = match app.client_type {
        InstallClientType::Confidential => "Confidential",
        InstallClientType::Public => "Public",
        InstallClientType::None => "None",
    };
    let impersonate = match app.impersonate {
        Impersonation::None => "none",
        Impersonation::Internal => "internal",
        Impersonation::All => "all",
    };
    let service_access = match app.service_access {
        ServiceAccess::None => "none",
        ServiceAccess::ClientCredentials => "clientCredentials",
        ServiceAccess::ReferenceToken => "referenceToken",
    };
    let reference_tokens = match app.reference_tokens {
        ReferenceTokenIssuers::None => "none",
        ReferenceTokenIssuers::AuthenticatedUsers => "authenticatedUsers",
        ReferenceTokenIssuers::AdministratorsOnly => "administratorsOnly",
    };
    let pairs = [
        Some(("applicationUri", app.application_uri.as_str())),
        app.redirect_uri.as_deref().map(|uri| ("redirectUri", uri)),
        app.application_name.as_deref().map(|name| ("applicationName", name)),
        Some(("clientType", client_type)),
        Some(("impersonate", impersonate)),
        Some(("requestSecret", if app.request_secret { "true" } else { "false" })),
        Some(("serviceAccess", service_access)),
        Some(("referenceTokens", reference_tokens)),
        app.scope.as_deref().map(|scope| ("scope", scope)),
    ];
    let url = url.with_query_pairs(pairs.into_iter().flatten());
    Ok(url.map_err(|_| ConfigError::InvalidUrl { field: "instance root", reason: "it does not parse" })?.into())
}

/// The value ERP.net stores as a trusted application's `ApplicationSecretHash`:
/// `base64(sha256(utf8(secret)))`, standard alphabet with padding.
///
/// ```
/// assert_eq!(
///     erpnet_auth::install::application_secret_hash("secret"),
///     "K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="
/// );
/// ```
pub fn application_secret_hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}
