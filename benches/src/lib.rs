//! Benchmarks only: see `session.rs` and `id_token.rs`.
