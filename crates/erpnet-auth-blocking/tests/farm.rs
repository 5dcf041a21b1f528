//! Two Rust processes (4 threads each, every thread its own driver; one provider state per
//! process) share one user's session in a real Redis, against the real test provider with rotation and reuse detection: at
//! each expiry exactly one refresh across all of them, no grant revoked, every call 200.
//! Needs Node, npm tools and redis-server: `make e2e` runs it (`--ignored`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use erpnet_auth::{Callback, Config, Session, SignInOptions};
use erpnet_auth_blocking::store::RedisStore;
use erpnet_auth_blocking::{now_ms, Driver};
use erpnet_auth_test_support::provider_login::{sign_in_headless, BrowserReturn};
use erpnet_auth_test_support::redis_server::RedisServer;
use erpnet_auth_test_support::test_provider::TestProvider;

const TTL_SECS: u64 = 3;

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn start(root: &str, redis: &str, key: &str) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_farm_worker"))
            .env("ROOT", root)
            .env("REDIS_URL", redis)
            .env("SESSION_KEY", key)
            .env("THREADS", "4")
            .env("CALLS", "10")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("farm_worker");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut worker = Worker { child, stdin, stdout };
        assert_eq!(worker.line()["ready"], true);
        worker
    }

    fn line(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("worker said {line:?}"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs the test provider and redis-server: make e2e"]
fn two_rust_processes_share_one_session_one_refresh_per_expiry() {
    let provider = TestProvider::start(TTL_SECS).expect("provider");
    let redis = RedisServer::start().expect("redis");
    // The user signs in once; the session goes to Redis.
    let config = Config::erpnet(&provider.root)
        .client_id("my.trusted.app/first")
        .client_secret("my-plain-app-secret")
        .redirect_uri("http://localhost/signin-callback")
        .build()
        .expect("config");
    let mut driver = Driver::new(Session::new(config));
    driver.share_in(Box::new(RedisStore::open(&redis.url).expect("redis url")), "rust-farm").expect("store");
    driver.run().expect("discovery");
    let url = driver.session.sign_in(now_ms(), SignInOptions::new()).expect("sign-in");
    driver.run().expect("run");
    let BrowserReturn::Redirect(back) = sign_in_headless(&url, "alice").expect("login") else { panic!("form_post") };
    driver.session.handle_callback(now_ms(), Callback::Url(&back)).expect("callback");
    driver.run().expect("run");
    assert!(driver.session.is_signed_in());
    drop(driver);

    let discoveries = |stats: &serde_json::Value| stats["discoveryRequests"].as_u64().unwrap_or(0);
    let before_start = provider.stats().expect("stats");
    let mut workers = [
        Worker::start(&provider.root, &redis.url, "rust-farm"),
        Worker::start(&provider.root, &redis.url, "rust-farm"),
    ];
    let started = provider.stats().expect("stats");
    // Each process discovers once and its 4 sessions share it (Session::with_provider).
    assert_eq!(discoveries(&started) - discoveries(&before_start), 2, "one discovery per process, not per session");
    for expiry in 1..=3 {
        std::thread::sleep(Duration::from_millis(TTL_SECS * 1000 + 300));
        let before = provider.stats().expect("stats");
        for worker in &mut workers {
            writeln!(worker.stdin, "go").expect("go");
        }
        let results: Vec<_> = workers.iter_mut().map(Worker::line).collect();
        let after = provider.stats().expect("stats");
        for result in &results {
            assert_eq!(result["outcomes"], serde_json::json!({ "200": 40 }), "expiry {expiry}: {result}");
        }
        let refreshes = after["refreshes"].as_u64().unwrap_or(0) - before["refreshes"].as_u64().unwrap_or(0);
        assert_eq!(refreshes, 1, "expiry {expiry}: exactly one refresh across 2 processes × 4 threads");
        assert_eq!(after["grantsRevoked"], 0);
        assert_eq!(after["refreshFailures"], before["refreshFailures"]);
        println!("# rust farm, expiry {expiry}: 2 processes × 4 drivers × 10 calls -> 80 × 200, {refreshes} refresh, 0 grants revoked");
    }
}
