//! The seed's "web based external application" on axum: a confidential client whose users
//! sign in through ERP.net; the browser holds one HttpOnly session cookie, never a token.
//!
//! ```text
//! ERP_INSTANCE=https://demodb.my.erp.net ERP_CLIENT_ID=my.trusted.app/first ERP_SECRET=… \
//! ERP_REDIRECT_URI=http://localhost:3000/signin-callback PORT=3000 cargo run -p axum-webapp
//! ```
//!
//! Several processes: `REDIS_URL=redis://…` shares the sessions and `ERP_SEALING_KEY` (32
//! bytes, base64url) must be the same in all of them. Prints `{"port": N}` once listening.

#[tokio::main]
async fn main() {
    if let Err(error) = axum_webapp::serve_from_env().await {
        eprintln!("axum-webapp: {error}");
        std::process::exit(1);
    }
}
