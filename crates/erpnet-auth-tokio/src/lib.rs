//! `erpnet-auth` on tokio: an async client that drives the sans-IO core over real HTTP.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod store;
