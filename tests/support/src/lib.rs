//! Test and demo support, kept apart from the drivers: the launcher of the test OpenID
//! provider (`tests/idp`, oidc-provider), a headless login at its development pages, and a
//! printer of exchanges in the seed page's HTTP notation with secrets redacted.

pub mod provider_login;
pub mod test_provider;
pub mod transcript;
