//! Test and demo support, kept apart from the drivers: the launcher of the test OpenID
//! provider (`tests/idp`, oidc-provider), a headless login at its development pages, and a
//! printer of exchanges in the seed page's HTTP notation with secrets redacted, and a real
//! Redis on a free loopback port.

pub mod provider_login;
pub mod redis_server;
pub mod test_provider;
pub mod transcript;
