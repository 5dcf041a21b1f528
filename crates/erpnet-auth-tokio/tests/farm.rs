//! A farm: 4 Rust processes (examples/farm_worker.rs, the async client on one RedisStore and
//! one SharedProvider each) and 1 Node process (tests/farm/worker.mjs, the npm package's
//! RedisStorage) serve one user's session in a real Redis, against the real test provider
//! (refresh-token rotation with reuse detection, ERP.net's per-session request limit).
//! At each of 3 expiries: exactly one refresh across the five, no grant revoked, every call
//! 200. Then Redis is stopped (SIGSTOP) with the token expired: every call ends with a typed
//! error, the Rust ones within the store's command timeout; after SIGCONT service resumes
//! without a new sign-in.
//!
//! Needs Node, the npm tools, the built npm package (`make pkg`) and redis-server:
//! `cargo test -p erpnet-auth-tokio --features redis --test farm -- --ignored --nocapture`
//! (it builds the worker example itself).
#![cfg(feature = "redis")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use erpnet_auth_test_support::provider_login::{sign_in_headless, BrowserReturn};
use erpnet_auth_test_support::redis_server::RedisServer;
use erpnet_auth_test_support::test_provider::{repo_root, TestProvider};
use erpnet_auth_tokio::erpnet_auth::{Config, SignInOptions};
use erpnet_auth_tokio::store::{RedisStore, SessionStore};
use erpnet_auth_tokio::SharedProvider;
use serde_json::{json, Value};

const TTL_SECS: u64 = 3;
const KEY: &str = "session:farm";
const COMMAND_TIMEOUT_MS: u64 = 300;
const RETRY_MAX_MS: u64 = 2_000;
const CALLS: u64 = 10;

/// Builds the worker example (the same profile and target directory as this test) and
/// returns its path.
fn farm_worker() -> PathBuf {
    let output = Command::new(env!("CARGO"))
        .args(["build", "-p", "erpnet-auth-tokio", "--features", "redis", "--example", "farm_worker"])
        .args(["--message-format", "json"])
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo");
    assert!(output.status.success(), "the farm worker did not build");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|message| message["target"]["name"] == "farm_worker" && message["executable"].is_string())
        .and_then(|message| message["executable"].as_str().map(PathBuf::from))
        .expect("the worker's executable")
}

/// A worker process: one JSON command in, one JSON answer out.
struct Worker {
    name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn start(name: String, mut command: Command) -> Worker {
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("worker");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut worker = Worker { name, child, stdin, stdout };
        let ready = worker.line();
        assert_eq!(ready["signedIn"], true, "{}: the session restored from Redis: {ready}", worker.name);
        worker
    }

    fn send(&mut self, command: &Value) {
        writeln!(self.stdin, "{command}").expect("send");
    }

    fn line(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("{} said {line:?}", self.name))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({ "exit": true }));
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every worker makes `calls` calls per client at once; their answers, in worker order.
fn burst(farm: &mut [Worker], calls: u64) -> Vec<Value> {
    for worker in farm.iter_mut() {
        worker.send(&json!({ "burst": calls }));
    }
    farm.iter_mut().map(Worker::line).collect()
}

fn merge(answers: &[Value], field: &str) -> BTreeMap<String, u64> {
    let mut total = BTreeMap::new();
    for answer in answers {
        for (name, count) in answer[field].as_object().into_iter().flatten() {
            *total.entry(name.clone()).or_default() += count.as_u64().unwrap_or(0);
        }
    }
    total
}

fn slowest_ms(answer: &Value) -> f64 {
    answer["latencies"].as_array().into_iter().flatten().filter_map(Value::as_f64).fold(0.0, f64::max)
}

fn count(stats: &Value, name: &str) -> u64 {
    stats[name].as_u64().unwrap_or(0)
}

fn seed_config(root: &str) -> Config {
    Config::erpnet(root)
        .client_id("my.trusted.app/first")
        .client_secret("my-plain-app-secret")
        .redirect_uri("http://localhost/signin-callback")
        .snapshot_provider(false)
        .build()
        .expect("config")
}

/// The user signs in once, through a Rust client; the session goes to Redis under `KEY`.
fn sign_in_once(root: &str, redis_url: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store: Arc<dyn SessionStore> = Arc::new(RedisStore::open(redis_url).await.expect("redis"));
        let provider = SharedProvider::new(seed_config(root)).expect("provider");
        let client = provider.client().store(store, KEY).build().expect("client");
        let url = client.sign_in(SignInOptions::new()).await.expect("sign-in URL");
        let back = tokio::task::spawn_blocking(move || sign_in_headless(&url, "alice")).await.expect("join");
        let BrowserReturn::Redirect(back) = back.expect("login") else { panic!("expected a redirect") };
        client.handle_callback(&back).await.expect("callback");
        assert!(client.is_signed_in().await);
        // The token lock is released just after the tokens are stored: a `close` at once
        // aborts that release today, and the others would wait out the signer's lease.
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.close().await;
    });
}

fn lock_held(url: &str) -> bool {
    let client = redis::Client::open(url).expect("url");
    let mut connection = client.get_connection().expect("connect");
    let lock = format!("erpnet-auth:lock:{KEY}:token");
    redis::cmd("EXISTS").arg(lock).query::<i64>(&mut connection).expect("EXISTS") == 1
}

fn redis_pid(url: &str) -> u32 {
    let client = redis::Client::open(url).expect("url");
    let mut connection = client.get_connection().expect("connect");
    let info: String = redis::cmd("INFO").arg("server").query(&mut connection).expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .expect("process_id")
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").args([name, &pid.to_string()]).status().expect("kill");
    assert!(status.success(), "kill {name} {pid}");
}

/// Continues a stopped redis-server however the test ends.
struct Stopped(u32);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

#[test]
#[ignore = "needs the test provider, the built npm package and redis-server"]
fn four_rust_processes_and_one_node_process_share_one_session() {
    let worker = farm_worker();
    let provider = TestProvider::start(TTL_SECS).expect("provider");
    let redis = RedisServer::start().expect("redis");
    assert!(repo_root().join("pkg/redis.js").exists(), "the npm package is not built: run `make pkg`");
    sign_in_once(&provider.root, &redis.url);
    assert!(!lock_held(&redis.url), "the signer's token lock outlived it");
    let before_start = provider.stats().expect("stats");
    let mut farm: Vec<Worker> = (1..=4)
        .map(|n| {
            let mut command = Command::new(&worker);
            command
                .env("ROOT", &provider.root)
                .env("REDIS_URL", &redis.url)
                .env("SESSION_KEY", KEY)
                .env("COMMAND_TIMEOUT_MS", COMMAND_TIMEOUT_MS.to_string())
                .env("RETRY_MAX_MS", RETRY_MAX_MS.to_string())
                // A renewal that cannot reach the store gives up at once: the calls waiting
                // for it fail with the store's error instead of waiting out the backoff.
                .env("REFRESH_ATTEMPTS", "1");
            Worker::start(format!("rust {n}"), command)
        })
        .collect();
    let mut node = Command::new("node");
    node.arg(repo_root().join("tests/farm/worker.mjs"))
        .current_dir(repo_root())
        .env("ROOT", &provider.root)
        .env("REDIS_URL", &redis.url)
        .env("SESSION_KEY", KEY)
        .env("RETRY_MAX_MS", RETRY_MAX_MS.to_string());
    farm.push(Worker::start("node".to_owned(), node));
    let started = provider.stats().expect("stats");
    assert_eq!(count(&started, "codeExchanges"), count(&before_start, "codeExchanges"), "nobody signed in again");
    let mut last = started;

    for expiry in 1..=3 {
        std::thread::sleep(Duration::from_millis(TTL_SECS * 1000 + 300));
        let before = provider.stats().expect("stats");
        let answers = burst(&mut farm, CALLS);
        let after = provider.stats().expect("stats");
        let statuses = merge(&answers, "statuses");
        assert_eq!(
            statuses,
            BTreeMap::from([("200".to_owned(), 5 * CALLS)]),
            "expiry {expiry}: {statuses:?} {answers:?}; provider before {before}, after {after}"
        );
        let refreshes = count(&after, "refreshes") - count(&before, "refreshes");
        let between = count(&before, "refreshes") - count(&last, "refreshes");
        assert_eq!(refreshes, 1, "expiry {expiry}: exactly one refresh across the 5 processes");
        assert_eq!(count(&after, "grantsRevoked"), 0);
        assert_eq!(count(&after, "refreshFailures"), count(&before, "refreshFailures"));
        println!(
            "# tokio farm, expiry {expiry}: 4 Rust + 1 Node processes × {CALLS} calls -> {} × 200, {refreshes} refresh \
             ({between} between the rounds), {} API requests, {} 429, 0 grants revoked",
            5 * CALLS,
            count(&after, "apiRequests") - count(&before, "apiRequests"),
            count(&after, "apiTooMany") - count(&before, "apiTooMany"),
        );
        last = after;
    }

    // Redis stops answering while the token is expired: every renewal needs it.
    std::thread::sleep(Duration::from_millis(TTL_SECS * 1000 + 300));
    let before = provider.stats().expect("stats");
    let pid = redis_pid(&redis.url);
    signal(pid, "-STOP");
    let stopped = Stopped(pid);
    let frozen_at = Instant::now();
    let answers = burst(&mut farm, CALLS);
    let all_ended = frozen_at.elapsed();
    for (worker, answer) in farm.iter().zip(&answers) {
        let errors = merge(std::slice::from_ref(answer), "errors");
        let slowest = slowest_ms(answer);
        println!("# Redis stopped: {} -> {errors:?}, slowest call {slowest:.0} ms", worker.name);
        assert_eq!(
            merge(std::slice::from_ref(answer), "statuses"),
            BTreeMap::new(),
            "{}: sent with an expired token?",
            worker.name
        );
        assert_eq!(errors.values().sum::<u64>(), CALLS, "{}: every call ended", worker.name);
        if worker.name.starts_with("rust") {
            assert_eq!(errors.keys().collect::<Vec<_>>(), ["storage_unavailable"], "{}", worker.name);
            assert!(slowest < (COMMAND_TIMEOUT_MS + 1_000) as f64, "{}: {slowest} ms", worker.name);
        } else {
            for code in errors.keys() {
                assert!(
                    ["storage_unavailable", "renewal_unavailable", "transport", "lock_timeout"]
                        .contains(&code.as_str()),
                    "node: {code}"
                );
            }
        }
    }
    println!("# Redis stopped: all 5 processes' calls ended within {} ms", all_ended.as_millis());

    drop(stopped);
    // The sessions' wait after a failed renewal ends (RETRY_MAX_MS).
    std::thread::sleep(Duration::from_millis(RETRY_MAX_MS + 500));
    let resumed_at = Instant::now();
    let answers = burst(&mut farm, CALLS);
    let after = provider.stats().expect("stats");
    let statuses = merge(&answers, "statuses");
    assert_eq!(
        statuses,
        BTreeMap::from([("200".to_owned(), 5 * CALLS)]),
        "after SIGCONT: {:?}",
        merge(&answers, "errors")
    );
    assert_eq!(count(&after, "codeExchanges"), count(&before, "codeExchanges"), "no new sign-in");
    assert_eq!(count(&after, "grantsRevoked"), 0);
    println!(
        "# Redis continued: {} × 200 in {} ms, {} refresh(es), no new sign-in, 0 grants revoked",
        5 * CALLS,
        resumed_at.elapsed().as_millis(),
        count(&after, "refreshes") - count(&before, "refreshes")
    );
}
