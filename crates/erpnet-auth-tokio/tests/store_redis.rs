//! The Redis store against a real `redis-server`: compare-and-swap, the leased lock, TTLs,
//! the npm `RedisStorage` layout (checked raw, and with Node reading and writing the same
//! session), and a frozen Redis giving typed errors within the command timeout.
//!
//! Needs `redis-server` (and Node with the built package in `pkg/` for the shared-session
//! test): `cargo test -p erpnet-auth-tokio --features redis --test store_redis -- --ignored`.
#![cfg(feature = "redis")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use erpnet_auth_test_support::redis_server::RedisServer;
use erpnet_auth_tokio::store::{RedisStore, SessionStore, StoreError, Write};
use redis::aio::MultiplexedConnection;

fn write(generation: u64, base_generation: u64) -> Option<Write> {
    Some(Write { generation, base_generation })
}

async fn raw(url: &str) -> MultiplexedConnection {
    redis::Client::open(url).expect("url").get_multiplexed_async_connection().await.expect("connect")
}

async fn hash(connection: &mut MultiplexedConnection, key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL").arg(key).query_async(connection).await.expect("HGETALL")
}

async fn pttl(connection: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(connection).await.expect("PTTL")
}

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn compare_and_swap_on_the_generation_in_the_npm_layout() {
    let server = RedisServer::start().expect("redis");
    let store = RedisStore::open(&server.url).await.expect("open");
    let mut redis = raw(&server.url).await;
    assert_eq!(store.get("session:a").await, Ok(None));
    assert_eq!(store.set("session:a", "one", write(1, 0)).await, Ok(true), "nothing stored: accepted");
    assert_eq!(store.set("session:a", "two", write(2, 1)).await, Ok(true), "derived from the stored state");
    assert_eq!(store.set("session:a", "stale", write(2, 1)).await, Ok(false), "stored 2 > base 1");
    assert_eq!(store.get("session:a").await, Ok(Some("two".to_owned())));
    assert_eq!(store.set("session:a", "two again", write(2, 2)).await, Ok(true), "an unchanged rewrite");
    // The npm layout: a hash under the prefix, `g` the generation, `v` the value.
    let stored = hash(&mut redis, "erpnet-auth:session:a").await;
    assert_eq!(stored, HashMap::from([("g".to_owned(), "2".to_owned()), ("v".to_owned(), "two again".to_owned())]));
    // Unconditional, as `RedisStorage` writes it: generation 0.
    assert_eq!(store.set("session:a", "copied", None).await, Ok(true));
    assert_eq!(hash(&mut redis, "erpnet-auth:session:a").await["g"], "0");
    store.remove("session:a").await.expect("remove");
    let exists: i64 = redis::cmd("EXISTS").arg("erpnet-auth:session:a").query_async(&mut redis).await.expect("EXISTS");
    assert_eq!(exists, 0);
    assert_eq!(store.set("session:a", "fresh", write(1, 0)).await, Ok(true), "removed with its generation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn keys_live_30_days_after_a_write_and_a_pending_sign_in_an_hour() {
    let server = RedisServer::start().expect("redis");
    let store = RedisStore::open(&server.url).await.expect("open");
    let mut redis = raw(&server.url).await;
    store.set("session:a", "v", write(1, 0)).await.expect("set");
    store.set("signin:b", "v", None).await.expect("set");
    let session = pttl(&mut redis, "erpnet-auth:session:a").await;
    let signin = pttl(&mut redis, "erpnet-auth:signin:b").await;
    println!("PTTL session: {session} ms, signin: {signin} ms");
    assert!((30 * 86_400_000 - 60_000..=30 * 86_400_000).contains(&session), "{session}");
    assert!((3_600_000 - 60_000..=3_600_000).contains(&signin), "{signin}");
    // A fixed TTL, and none at all.
    let fixed = RedisStore::open(&server.url).await.expect("open").ttl(Duration::from_secs(60));
    fixed.set("signin:c", "v", None).await.expect("set");
    assert!((50_000..=60_000).contains(&pttl(&mut redis, "erpnet-auth:signin:c").await));
    let forever = RedisStore::open(&server.url).await.expect("open").ttl_by_key(|_| Duration::ZERO);
    forever.set("session:d", "v", None).await.expect("set");
    assert_eq!(pttl(&mut redis, "erpnet-auth:session:d").await, -1, "no expiry");
    // Another prefix, on a connection manager the application made.
    let client = redis::Client::open(server.url.as_str()).expect("url");
    let manager = redis::aio::ConnectionManager::new(client).await.expect("manager");
    let other = RedisStore::new(manager).prefix("app:");
    other.set("session:a", "mine", write(1, 0)).await.expect("set");
    assert_eq!(hash(&mut redis, "app:session:a").await["v"], "mine");
    assert_eq!(store.get("session:a").await, Ok(Some("v".to_owned())), "prefixes keep stores apart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn the_lock_excludes_until_released_or_its_lease_ends() {
    let server = RedisServer::start().expect("redis");
    let store = RedisStore::open(&server.url).await.expect("open");
    let other = RedisStore::open(&server.url).await.expect("open");
    let mut redis = raw(&server.url).await;

    let lease = store.lock("a:token", Duration::from_secs(10), Duration::ZERO).await.expect("free");
    // `SET NX PX` with the holder's token, in the npm layout.
    let held: String = redis::cmd("GET").arg("erpnet-auth:lock:a:token").query_async(&mut redis).await.expect("GET");
    assert_eq!(held, lease.token());
    let left = pttl(&mut redis, "erpnet-auth:lock:a:token").await;
    assert!((9_000..=10_000).contains(&left), "{left}");
    let started = Instant::now();
    let refused = other.lock("a:token", Duration::from_secs(10), Duration::from_millis(200)).await;
    assert_eq!(refused.map(|_| ()), Err(StoreError::LockTimeout));
    println!("a taken lock gave up after {:?} (wait 200 ms)", started.elapsed());
    let waiter = tokio::spawn({
        let other = other.clone();
        async move { other.lock("a:token", Duration::from_secs(10), Duration::from_secs(5)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "still held");
    store.unlock("a:token", lease).await.expect("unlock");
    let second =
        tokio::time::timeout(Duration::from_secs(2), waiter).await.expect("released").expect("task").expect("lock");
    other.unlock("a:token", second).await.expect("unlock");

    // A holder that dies: the next one takes the lock when the lease ends.
    let first = store.lock("b:token", Duration::from_millis(300), Duration::ZERO).await.expect("free");
    let started = Instant::now();
    let second = other.lock("b:token", Duration::from_secs(10), Duration::from_secs(5)).await.expect("after the lease");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "taken after {waited:?}, before the lease ended");
    println!("a dead holder's lock (lease 300 ms) was taken after {waited:?}");
    // Its late release does not free the second holder's lock.
    store.unlock("b:token", first).await.expect("unlock");
    let held: String = redis::cmd("GET").arg("erpnet-auth:lock:b:token").query_async(&mut redis).await.expect("GET");
    assert_eq!(held, second.token());
    assert_eq!(
        store.lock("b:token", Duration::from_secs(1), Duration::from_millis(100)).await.map(|_| ()),
        Err(StoreError::LockTimeout)
    );
    other.unlock("b:token", second).await.expect("unlock");
    assert!(store.lock("b:token", Duration::from_secs(1), Duration::ZERO).await.is_ok());
}

/// The text of `const NAME = \`…\`;` in pkg-template/redis.js.
fn npm_script(source: &str, name: &str) -> String {
    let start = source.find(&format!("const {name} = `")).expect(name) + name.len() + 10;
    let length = source[start..].find("`;").expect("end");
    source[start..start + length].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn the_scripts_are_the_npm_packages_byte_for_byte() {
    let server = RedisServer::start().expect("redis");
    let store = RedisStore::open(&server.url).await.expect("open");
    let mut redis = raw(&server.url).await;
    store.set("session:a", "v", write(1, 0)).await.expect("set");
    let lease = store.lock("a:token", Duration::from_secs(1), Duration::ZERO).await.expect("lock");
    store.unlock("a:token", lease).await.expect("unlock");
    // Redis keeps each script under the SHA-1 of its text: the npm texts' must be loaded.
    let source = std::fs::read_to_string(repository_root().join("pkg-template/redis.js")).expect("redis.js");
    for name in ["COMPARE_AND_SWAP", "RELEASE"] {
        let text = npm_script(&source, name);
        let sha: String = redis::cmd("EVAL")
            .arg("return redis.sha1hex(ARGV[1])")
            .arg(0)
            .arg(&text)
            .query_async(&mut redis)
            .await
            .expect("sha1hex");
        let loaded: Vec<i64> =
            redis::cmd("SCRIPT").arg("EXISTS").arg(&sha).query_async(&mut redis).await.expect("EXISTS");
        assert_eq!(loaded, [1], "{name} differs from pkg-template/redis.js");
    }
}

// Node with the npm package's RedisStorage, on the same Redis: OPS is a list of operations,
// each answered by one JSON line.
const NODE_STORAGE: &str = r#"
import { createClient } from "redis";
import { RedisStorage } from "./pkg/redis.js";
const redis = createClient({ url: process.env.REDIS_URL, disableOfflineQueue: true });
redis.on("error", () => {});
await redis.connect();
const storage = new RedisStorage(redis);
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");
for (const op of JSON.parse(process.env.OPS)) {
  try {
    if ("get" in op) out({ value: await storage.get(op.get) });
    else if ("set" in op) out({ written: await storage.set(op.set, op.value, op.write) });
    else if ("lock" in op) {
      out(await storage.lock(op.lock, async () => {
        out({ locked: true });
        await new Promise((resolve) => setTimeout(resolve, op.holdMs ?? 0));
        return { released: true };
      }, { leaseMs: op.leaseMs, waitMs: op.waitMs }));
    }
  } catch (error) {
    out({ error: error.code ?? String(error) });
  }
}
await redis.close();
"#;

struct Node {
    child: Child,
    lines: BufReader<ChildStdout>,
}

impl Node {
    fn start(url: &str, ops: serde_json::Value) -> Node {
        let root = repository_root();
        assert!(root.join("pkg/redis.js").exists(), "the npm package is not built: run `make pkg`");
        let mut child = Command::new("node")
            .args(["--input-type=module", "-e", NODE_STORAGE])
            .current_dir(&root)
            .env("REDIS_URL", url)
            .env("OPS", ops.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node");
        let lines = BufReader::new(child.stdout.take().expect("stdout"));
        Node { child, lines }
    }

    fn line(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.lines.read_line(&mut line).expect("read");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("node said {line:?}"))
    }

    fn run(url: &str, ops: serde_json::Value) -> Vec<serde_json::Value> {
        let count = ops.as_array().expect("ops").len();
        let mut node = Node::start(url, ops);
        let answers = (0..count).map(|_| node.line()).collect();
        assert!(node.child.wait().expect("node").success());
        answers
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server, Node and the built npm package"]
async fn a_node_process_and_a_rust_process_share_one_session() {
    use serde_json::json;
    let server = RedisServer::start().expect("redis");
    let store = RedisStore::open(&server.url).await.expect("open");

    // Rust writes, Node reads and renews on top of it; Node's stale write is refused.
    let first = r#"{"version":1,"generation":1,"tokens":"first"}"#;
    let second = r#"{"version":1,"generation":2,"tokens":"second"}"#;
    assert_eq!(store.set("session:s", first, write(1, 0)).await, Ok(true));
    let answers = Node::run(
        &server.url,
        json!([
            { "get": "session:s" },
            { "set": "session:s", "value": second, "write": { "generation": 2, "baseGeneration": 1 } },
            { "set": "session:s", "value": "stale", "write": { "generation": 2, "baseGeneration": 1 } },
            { "set": "signin:p", "value": "pending" },
        ]),
    );
    assert_eq!(
        answers,
        [
            json!({ "value": first }),
            json!({ "written": true }),
            json!({ "written": false }),
            json!({ "written": true })
        ]
    );
    // Rust reads what Node wrote, and is refused the same way.
    assert_eq!(store.get("session:s").await, Ok(Some(second.to_owned())));
    assert_eq!(store.set("session:s", "stale", write(2, 1)).await, Ok(false));
    assert_eq!(store.get("signin:p").await, Ok(Some("pending".to_owned())));

    // One lock for both: Node waits for Rust's, Rust for Node's.
    let lease = store.lock("session:s:token", Duration::from_secs(5), Duration::ZERO).await.expect("lock");
    let answers = Node::run(&server.url, json!([{ "lock": "session:s:token", "leaseMs": 1000, "waitMs": 300 }]));
    assert_eq!(answers, [json!({ "error": "lock_timeout" })]);
    store.unlock("session:s:token", lease).await.expect("unlock");
    let mut node = Node::start(
        &server.url,
        json!([{ "lock": "session:s:token", "leaseMs": 5000, "waitMs": 1000, "holdMs": 1000 }]),
    );
    assert_eq!(node.line(), json!({ "locked": true }));
    assert_eq!(
        store.lock("session:s:token", Duration::from_secs(5), Duration::from_millis(200)).await.map(|_| ()),
        Err(StoreError::LockTimeout),
        "Node holds it"
    );
    let started = Instant::now();
    let lease =
        store.lock("session:s:token", Duration::from_secs(5), Duration::from_secs(5)).await.expect("after Node");
    println!("Rust waited {:?} for the lock Node held (1 s)", started.elapsed());
    assert_eq!(node.line(), json!({ "released": true }));
    assert!(node.child.wait().expect("node").success());
    store.unlock("session:s:token", lease).await.expect("unlock");
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

async fn timed<T>(what: &str, call: impl std::future::Future<Output = Result<T, StoreError>>) -> StoreError {
    let started = Instant::now();
    let outcome = call.await;
    let took = started.elapsed();
    println!("{what}: failed after {} ms", took.as_millis());
    let Err(error) = outcome else { panic!("{what} succeeded against a stopped Redis") };
    assert!(took < Duration::from_millis(300) + Duration::from_secs(1), "{what} took {took:?}");
    assert_eq!(error.code(), "storage_unavailable", "{what}: {error}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_stopped_redis_gives_typed_errors_within_the_command_timeout_and_the_store_recovers() {
    let server = RedisServer::start().expect("redis");
    let timeout = Duration::from_millis(300);
    let store = RedisStore::open_with_timeout(&server.url, timeout).await.expect("open");
    let mut redis = raw(&server.url).await;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut redis).await.expect("INFO");
    let pid: u32 = info
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .expect("process_id");
    assert_eq!(store.set("session:a", "before", write(1, 0)).await, Ok(true));
    let held = store.lock("held:token", Duration::from_secs(30), Duration::ZERO).await.expect("lock");

    // Accepts connections (the kernel does), never answers.
    signal(pid, "-STOP");
    let stopped = Stopped(pid);
    let error = timed("stopped redis: get", store.get("session:a")).await;
    assert_eq!(error, StoreError::Unavailable { command: "HGET", reason: "timed out".to_owned() });
    timed("stopped redis: set", store.set("session:b", "during", write(1, 0))).await;
    timed("stopped redis: remove", store.remove("session:c")).await;
    // The wait is long; the lock still fails at the first command that gets no answer.
    timed("stopped redis: lock", store.lock("frozen:token", Duration::from_secs(30), Duration::from_secs(10))).await;
    timed("stopped redis: unlock", store.unlock("held:token", held)).await;
    timed("stopped redis: open", RedisStore::open_with_timeout(&server.url, timeout)).await;
    // The message names the command and a category, never an argument.
    assert!(!error.to_string().contains("session:a"), "{error}");

    drop(stopped);
    let resumed = Instant::now();
    let value = loop {
        match store.get("session:a").await {
            Ok(value) => break value,
            Err(error) if resumed.elapsed() < Duration::from_secs(10) => println!("after SIGCONT: {error}"),
            Err(error) => panic!("the store did not recover: {error}"),
        }
    };
    println!("after SIGCONT the store answered in {} ms", resumed.elapsed().as_millis());
    assert_eq!(value.as_deref(), Some("before"));
    assert_eq!(store.set("session:a", "after", write(2, 1)).await, Ok(true));
    assert_eq!(store.get("session:a").await, Ok(Some("after".to_owned())));
    // The lock asked for while Redis was stopped ran once it woke, and was released after it.
    let left: i64 =
        redis::cmd("EXISTS").arg("erpnet-auth:lock:frozen:token").query_async(&mut redis).await.expect("EXISTS");
    assert_eq!(left, 0, "the lock taken late was left held");
    let lease = store.lock("frozen:token", Duration::from_secs(1), Duration::ZERO).await.expect("lock");
    store.unlock("frozen:token", lease).await.expect("unlock");
}

// `DEBUG SLEEP` is off in Redis 7 unless enabled; a long script blocks Redis the same way.
const BUSY: &str = "local started = redis.call('TIME')
repeat local now = redis.call('TIME')
until (now[1] - started[1]) * 1000000 + now[2] - started[2] > tonumber(ARGV[1]) * 1000
return 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_redis_busy_in_a_long_script_gives_a_typed_error_within_the_command_timeout() {
    let server = RedisServer::start().expect("redis");
    let store = RedisStore::open_with_timeout(&server.url, Duration::from_millis(300)).await.expect("open");
    store.set("session:a", "v", write(1, 0)).await.expect("set");
    // Without the client's own response timeout (500 ms by default): it waits for the script.
    let patient = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let client = redis::Client::open(server.url.as_str()).expect("url");
    let mut busy = client.get_multiplexed_async_connection_with_config(&patient).await.expect("connect");
    let blocking =
        tokio::spawn(async move { redis::cmd("EVAL").arg(BUSY).arg(0).arg(1500).query_async::<i64>(&mut busy).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    timed("get while Redis runs a script", store.get("session:a")).await;
    timed("lock while Redis runs a script", store.lock("a:token", Duration::from_secs(5), Duration::from_secs(5)))
        .await;
    assert_eq!(blocking.await.expect("task"), Ok(1), "the script ran");
    assert_eq!(store.get("session:a").await, Ok(Some("v".to_owned())));
}

#[tokio::test]
async fn a_redis_that_is_not_there_is_unavailable_not_a_panic() {
    // Port 1 on loopback: nothing listens.
    let error = RedisStore::open("redis://127.0.0.1:1").await.map(|_| ()).expect_err("nothing listens");
    assert_eq!(error.code(), "storage_unavailable");
    println!("{error}");
    let error = RedisStore::open("not a url").await.map(|_| ()).expect_err("not a url");
    assert_eq!(error.code(), "storage_unavailable");
}
