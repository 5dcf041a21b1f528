//! The driver without the test provider: it is `Send`, and no request outlives the deadline
//! the session gave it (a token lock's lease is sized for that deadline).

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use erpnet_auth::{ApiRequest, CallFailure, Config, Session, Timing};
use erpnet_auth_blocking::store::{MemoryStore, SessionStore};
use erpnet_auth_blocking::{CallError, Driver, Exchange};

fn assert_send<T: Send>() {}

#[test]
fn the_driver_and_its_stores_are_send() {
    assert_send::<Driver>();
    assert_send::<MemoryStore>();
    assert_send::<Box<dyn SessionStore>>();
    #[cfg(feature = "redis")]
    assert_send::<erpnet_auth_blocking::store::RedisStore>();
}

/// A server that accepts connections and never answers (the requests' bytes are read and
/// dropped). Runs until the test process ends.
fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let root = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    root
}

#[test]
fn a_token_request_is_abandoned_at_its_deadline_not_at_an_http_timeout() {
    let root = silent_server();
    let mut timing = Timing::default();
    timing.request_timeout_ms = 500;
    timing.max_refresh_attempts = 1;
    let config = Config::erpnet(&root)
        .client_id("my.app")
        .client_secret("secret")
        .client_credentials()
        .discovery(false)
        .timing(timing)
        .build()
        .expect("config");
    // Moved to another thread, as a service would.
    let outcome = std::thread::spawn(move || {
        let mut driver = Driver::new(Session::new(config));
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&sent);
        driver.on_exchange(move |e| {
            if let Exchange::Request(request) = e {
                log.lock().unwrap().push(request.kind);
            }
        });
        let started = Instant::now();
        let result = driver.call(ApiRequest::get(format!("{root}/api/domain/odata/Crm_Customers")));
        let elapsed = started.elapsed();
        let sent = sent.lock().unwrap().clone();
        (result, elapsed, sent)
    })
    .join()
    .expect("the driver's thread");
    let (result, elapsed, sent) = outcome;
    assert!(sent.contains(&erpnet_auth::RequestKind::Token), "{sent:?}");
    assert!(
        matches!(result, Err(CallError::Failed(CallFailure::RenewalUnavailable(_)))),
        "{:?}",
        result.map(|r| r.status)
    );
    // The instance's sites and the token request, each at most 500 ms: nowhere near the 30 s
    // an API call may take.
    assert!(elapsed < Duration::from_millis(2 * 500 + 1_000), "took {elapsed:?}");
}
