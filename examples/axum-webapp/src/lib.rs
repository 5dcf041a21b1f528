//! The seed's web application on axum, built on `erpnet_auth_tokio::server`:
//!
//! ```text
//! GET  /                -> sign-in link, or who is signed in
//! GET  /login           -> redirect to the ERP.net sign-in page (the pending sign-in sealed in a cookie)
//! GET  /signin-callback -> completes the sign-in under a new session id
//! GET  /customers       -> calls the Domain API as the user; the token renews by itself
//! POST /logout          -> revokes, forgets the session, ends the provider session
//! ```
//!
//! Configured from the environment (see [`Settings::from_env`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::Arc;

use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use erpnet_auth_tokio::erpnet_auth::{ApiRequest, Config};
use erpnet_auth_tokio::server::{ServerAuth, ServerError, SignedIn};
use erpnet_auth_tokio::store::{RedisStore, SessionStore};
use erpnet_auth_tokio::SharedProvider;

/// The application's settings.
#[derive(Clone)]
pub struct Settings {
    /// `ERP_INSTANCE`: the ERP.net instance root (the ERP.net preset), unless `ERP_ISSUER`
    /// names another OpenID provider.
    pub instance: Option<String>,
    /// `ERP_ISSUER`: any OpenID Connect issuer (discovered) instead of an ERP.net instance.
    pub issuer: Option<String>,
    /// `ERP_API_ROOT`: the API root with `ERP_ISSUER` (the ERP.net preset knows its own).
    pub api_root: Option<String>,
    /// `ERP_CLIENT_ID`: the trusted application's ApplicationUri.
    pub client_id: String,
    /// `ERP_SECRET`: the client secret (required: this is a confidential client).
    pub client_secret: String,
    /// `ERP_REDIRECT_URI`: exactly as registered.
    pub redirect_uri: String,
    /// `ERP_SCOPE`: the scope, if not the preset's.
    pub scope: Option<String>,
    /// `ERP_POST_LOGOUT_REDIRECT_URI`: where the provider sends the browser after sign-out.
    pub post_logout_redirect_uri: Option<String>,
    /// `REDIS_URL`: sessions shared by several processes.
    pub redis_url: Option<String>,
    /// `ERP_SEALING_KEY`: 32 bytes, base64url; required with `REDIS_URL`.
    pub sealing_key: Option<[u8; 32]>,
    /// `PORT` (default 3000) on 127.0.0.1.
    pub port: u16,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("instance", &self.instance)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Why the application could not start.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

impl Settings {
    /// Reads the environment.
    pub fn from_env() -> Result<Settings, StartError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let sealing_key = match var("ERP_SEALING_KEY") {
            Some(text) => {
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(text.trim_end_matches('='))
                    .map_err(|_| "ERP_SEALING_KEY must be base64url")?;
                Some(<[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| "ERP_SEALING_KEY must be 32 bytes")?)
            }
            None => None,
        };
        let issuer = var("ERP_ISSUER");
        Ok(Settings {
            instance: if issuer.is_some() {
                None
            } else {
                Some(var("ERP_INSTANCE").unwrap_or_else(|| "https://demodb.my.erp.net".to_owned()))
            },
            issuer,
            api_root: var("ERP_API_ROOT"),
            client_id: var("ERP_CLIENT_ID").unwrap_or_else(|| "my.trusted.app/first".to_owned()),
            client_secret: var("ERP_SECRET").ok_or("ERP_SECRET is required (a confidential client)")?,
            redirect_uri: var("ERP_REDIRECT_URI").unwrap_or_else(|| "http://localhost:3000/signin-callback".to_owned()),
            scope: var("ERP_SCOPE"),
            post_logout_redirect_uri: var("ERP_POST_LOGOUT_REDIRECT_URI"),
            redis_url: var("REDIS_URL"),
            sealing_key,
            port: var("PORT").map(|p| p.parse()).transpose().map_err(|_| "PORT must be a port number")?.unwrap_or(3000),
        })
    }

    /// The client configuration.
    pub fn config(&self) -> Result<Config, StartError> {
        let builder = match (&self.issuer, &self.instance) {
            (Some(issuer), _) => {
                let builder = Config::discover(issuer);
                match &self.api_root {
                    Some(root) => builder.api_root(root),
                    None => builder,
                }
            }
            (None, Some(instance)) => Config::erpnet(instance),
            (None, None) => return Err("ERP_INSTANCE or ERP_ISSUER is required".into()),
        };
        let builder = builder
            .client_id(&self.client_id)
            .client_secret(&self.client_secret)
            .redirect_uri(&self.redirect_uri)
            // The process shares the provider's documents: users' snapshots hold only theirs.
            .snapshot_provider(false);
        let builder = match &self.scope {
            Some(scope) => builder.scope(scope),
            None => builder,
        };
        Ok(builder.build()?)
    }

    /// The server layer on these settings, with `store` (default: Redis at `REDIS_URL`, or
    /// this process's memory).
    pub async fn server_auth(&self, store: Option<Arc<dyn SessionStore>>) -> Result<ServerAuth, StartError> {
        let store = match (store, &self.redis_url) {
            (Some(store), _) => Some(store),
            (None, Some(url)) => {
                if self.sealing_key.is_none() {
                    return Err("with REDIS_URL, set ERP_SEALING_KEY (the same 32 bytes in every process)".into());
                }
                Some(Arc::new(RedisStore::open(url).await?) as Arc<dyn SessionStore>)
            }
            (None, None) => None,
        };
        let mut builder =
            ServerAuth::builder(SharedProvider::new(self.config()?)?, &self.redirect_uri).after_sign_in("/customers");
        if let Some(store) = store {
            builder = builder.store(store);
        }
        if let Some(key) = self.sealing_key {
            builder = builder.sealing_key(key);
        }
        if let Some(uri) = &self.post_logout_redirect_uri {
            builder = builder.post_logout_redirect_uri(uri);
        }
        Ok(builder.build()?)
    }
}

/// The application's routes on `auth`.
pub fn app(auth: ServerAuth) -> Router {
    Router::new().route("/", get(home)).route("/customers", get(customers)).merge(auth.router()).with_state(auth)
}

async fn home(user: Option<SignedIn>) -> Response {
    let Some(user) = user else {
        return Html(r#"<a href="/login">Sign in with ERP.net</a>"#).into_response();
    };
    let claims = user.claims().await;
    let name = claims.as_ref().map(|c| c.name.clone().unwrap_or_else(|| c.sub.clone())).unwrap_or_default();
    Html(format!(
        r#"Signed in as {}. <a href="/customers">Customers</a> <form method="post" action="/logout"><button>Sign out</button></form>"#,
        escape_html(&name)
    ))
    .into_response()
}

/// The Domain API as the user, handed on with only the headers that still describe it.
async fn customers(user: SignedIn) -> Result<Response, ServerError> {
    user.forward(ApiRequest::get("Crm_Sales_Customers?$top=10")).await
}

fn escape_html(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' | '<' | '>' | '"' | '\'' => format!("&#{};", u32::from(c)),
            c => c.to_string(),
        })
        .collect()
}

/// Reads the environment, listens on `127.0.0.1:PORT` and serves until Ctrl-C; prints
/// `{"port": N}` once listening.
pub async fn serve_from_env() -> Result<(), StartError> {
    let settings = Settings::from_env()?;
    let auth = settings.server_auth(None).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port)).await?;
    println!("{}", serde_json::json!({ "port": listener.local_addr()?.port() }));
    axum::serve(listener, app(auth.clone()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    auth.close().await;
    Ok(())
}
