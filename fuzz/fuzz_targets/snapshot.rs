//! A stored snapshot: read, then restored into a session that runs.
#![no_main]
use erpnet_auth::{Session, Snapshot};
use erpnet_auth_fuzz::{config, drain, Counting, T0};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(snapshot) = Snapshot::from_json(text) else { return };
    let Ok(mut session) = Session::restore(config(false, true), snapshot, Counting::default()) else { return };
    drain(&mut session);
    session.handle_timeout(T0 + 10_000_000).expect("drained");
    drain(&mut session);
});
