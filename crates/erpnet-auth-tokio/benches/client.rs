//! Prints what the async client adds to an authorized Domain API call, side by side in one
//! run: the same reqwest client calling the same loopback server (axum) directly with its own
//! Bearer header, and `Client::call` of a signed-in client; sequential and 200 at once, on a
//! multi-thread runtime as a service would run them. Then the memory of 10,000 idle
//! signed-in clients of one `SharedProvider`, counted by the allocator: restored from
//! snapshots of the loopback provider, after one call each, and restored from a snapshot of
//! the real test provider (tests/idp, with an ID token; skipped without Node).
//!
//! `cargo bench -p erpnet-auth-tokio --bench client` (part of `make bench`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use erpnet_auth_test_support::provider_login::{sign_in_headless, BrowserReturn};
use erpnet_auth_test_support::test_provider::TestProvider;
use erpnet_auth_tokio::erpnet_auth::{config::ProviderMetadata, ApiRequest, Config, SignInOptions, Snapshot};
use erpnet_auth_tokio::{Client, SharedProvider};

/// Counts live heap bytes and blocks, and allocations made, while switched on.
///
/// Written here rather than taken from `stats_alloc`: that one counts every allocation of
/// the process all the time, with atomic counters shared by the runtime's threads, and the
/// call timings run in this same process. Here they run with the counting off, at the cost
/// of one relaxed load per allocation for both sides alike.
struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicIsize = AtomicIsize::new(0);

fn count(bytes: isize, blocks: isize, allocations: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_add(blocks, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(allocations, Ordering::Relaxed);
    }
}

// SAFETY: every method hands its arguments to `System` unchanged and returns its result;
// the counters only observe.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let block = unsafe { System.alloc(layout) };
        if !block.is_null() {
            count(layout.size() as isize, 1, 1);
        }
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let block = unsafe { System.alloc_zeroed(layout) };
        if !block.is_null() {
            count(layout.size() as isize, 1, 1);
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        unsafe { System.dealloc(block, layout) };
        count(-(layout.size() as isize), -1, 0);
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(block, layout, new_size) };
        if !moved.is_null() {
            count(new_size as isize - layout.size() as isize, 0, 1);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// What the allocator counted so far.
#[derive(Clone, Copy)]
struct Heap {
    bytes: isize,
    blocks: isize,
    allocations: isize,
}

fn heap() -> Heap {
    Heap {
        bytes: LIVE_BYTES.load(Ordering::SeqCst),
        blocks: LIVE_BLOCKS.load(Ordering::SeqCst),
        allocations: ALLOCATIONS.load(Ordering::SeqCst),
    }
}

/// Calls per round and way: short rounds, many of them, alternating, so that both ways see
/// the same machine (it is shared, and others compile on it).
const SEQUENTIAL_CALLS: usize = 1_000;
const CONCURRENCY: usize = 200;
const CONCURRENT_CALLS: usize = 4_000;
const ROUNDS: usize = 21;
const IDLE_SESSIONS: usize = 10_000;
const API_PATH: &str = "Crm_Sales_Customers?$top=10";
const API_BODY: &str = r#"{"value":[{"Id":"C-0001","Name":"Contoso"}]}"#;
/// Opaque tokens of the length oidc-provider and ERP.net issue (43 characters).
const ACCESS_TOKEN: &str = "bSSxLdFzAxWmkQ4DqCk9TkqQ1kO0b8E3pUuVJsn0w2Y";
const REFRESH_TOKEN: &str = "Zq1vF9m8oXo3t9aGdB7LrYcW2sKp5nHjUeQ0iTgM4xE";

/// The provider's token endpoint: every code and refresh token is good for an hour.
async fn token_endpoint() -> ([(header::HeaderName, &'static str); 1], String) {
    let body = format!(
        r#"{{"access_token":"{ACCESS_TOKEN}","token_type":"Bearer","expires_in":3600,"refresh_token":"{REFRESH_TOKEN}","scope":"offline_access read"}}"#
    );
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// The Domain API: a small OData answer to any bearer of a token.
async fn api(headers: HeaderMap) -> (StatusCode, [(header::HeaderName, &'static str); 1], &'static str) {
    let status = if headers.contains_key(header::AUTHORIZATION) { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
    (status, [(header::CONTENT_TYPE, "application/json")], API_BODY)
}

/// Starts the provider and API on a loopback port, on a runtime of their own (one thread):
/// the client's runtime is left to the client, as a separate server process would leave it.
fn serve() -> String {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("server runtime");
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let root = format!("http://{}", listener.local_addr().expect("address"));
    let app = axum::Router::new()
        .route("/token", post(token_endpoint))
        .route("/api/domain/odata/Crm_Sales_Customers", get(api));
    std::thread::spawn(move || runtime.block_on(async { axum::serve(listener, app).await.expect("serve") }));
    root
}

fn config(root: &str) -> Config {
    let metadata: ProviderMetadata = serde_json::from_value(serde_json::json!({
        "issuer": root,
        "authorization_endpoint": format!("{root}/authorize"),
        "token_endpoint": format!("{root}/token"),
    }))
    .expect("metadata");
    Config::with_endpoints(metadata)
        .client_id("bench.app/first")
        .client_secret("bench-secret")
        .redirect_uri("http://localhost/signin-callback")
        // Plain OAuth: no ID token, so the figures are the client's, not a signature check's.
        .scope("offline_access read")
        .api_root(format!("{root}/api/domain/odata/"))
        .snapshot_provider(false)
        .build()
        .expect("config")
}

async fn signed_in(provider: &SharedProvider) -> Client {
    let client = provider.client().build().expect("client");
    let url = client.sign_in(SignInOptions::new()).await.expect("sign-in URL");
    let state = url.split("state=").nth(1).and_then(|rest| rest.split('&').next()).expect("state");
    client
        .handle_callback(&format!("http://localhost/signin-callback?code=bench-code&state={state}"))
        .await
        .expect("signed in");
    client
}

/// One way of making the authorized call.
#[derive(Clone)]
enum Caller {
    /// reqwest with the Bearer header set by hand.
    Direct { http: reqwest::Client, url: Arc<str>, authorization: Arc<str> },
    /// The async client.
    Client(Client),
}

impl Caller {
    async fn call(&self) -> u16 {
        match self {
            Caller::Direct { http, url, authorization } => {
                let response =
                    http.get(&**url).header(header::AUTHORIZATION, &**authorization).send().await.expect("answer");
                let status = response.status().as_u16();
                std::hint::black_box(response.bytes().await.expect("body"));
                status
            }
            Caller::Client(client) => {
                let response = client.call(ApiRequest::get(API_PATH)).await.expect("answer");
                std::hint::black_box(&response.body);
                response.status
            }
        }
    }

    /// Per call over `calls` calls, one after another, from a task of the runtime.
    async fn sequential(&self, calls: usize) -> Sample {
        let caller = self.clone();
        tokio::spawn(async move {
            let started = Sample::start();
            for _ in 0..calls {
                assert_eq!(caller.call().await, 200);
            }
            started.per_call(calls)
        })
        .await
        .expect("sequential run")
    }

    /// Per call over `calls` calls made by `CONCURRENCY` tasks at once.
    async fn concurrent(&self, calls: usize) -> Sample {
        let started = Sample::start();
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let caller = self.clone();
                tokio::spawn(async move {
                    for _ in 0..calls / CONCURRENCY {
                        assert_eq!(caller.call().await, 200);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("concurrent run");
        }
        started.per_call(calls / CONCURRENCY * CONCURRENCY)
    }

    /// Heap allocations per call (counting on: a diagnostic, not timed).
    async fn allocations(&self, calls: usize) -> f64 {
        let before = heap();
        COUNTING.store(true, Ordering::SeqCst);
        self.sequential(calls).await;
        COUNTING.store(false, Ordering::SeqCst);
        (heap().allocations - before.allocations) as f64 / calls as f64
    }
}

/// CPU time of every thread of this process so far, in ns (Linux: each thread's
/// schedstat). Unlike wall time it does not grow while other programs have the cores.
fn cpu_ns() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Wall time and CPU time (all threads: the client's runtime and the server's) per call, µs.
#[derive(Clone, Copy)]
struct Sample {
    wall: f64,
    cpu: Option<f64>,
}

/// When a run started.
struct Started {
    wall: Instant,
    cpu: Option<u64>,
}

impl Sample {
    fn start() -> Started {
        Started { wall: Instant::now(), cpu: cpu_ns() }
    }
}

impl Started {
    fn per_call(&self, calls: usize) -> Sample {
        let wall = self.wall.elapsed().as_secs_f64() * 1e6 / calls as f64;
        let cpu = match (self.cpu, cpu_ns()) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 / 1e3 / calls as f64),
            _ => None,
        };
        Sample { wall, cpu }
    }
}

fn fastest(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The heap of one idle client, on average.
struct PerClient {
    bytes: isize,
    blocks: isize,
}

impl PerClient {
    fn between(before: Heap, after: Heap) -> PerClient {
        let clients = IDLE_SESSIONS as isize;
        PerClient { bytes: (after.bytes - before.bytes) / clients, blocks: (after.blocks - before.blocks) / clients }
    }
}

/// What idle signed-in clients cost: restored from their snapshots, and (when the API
/// takes any token) once more after one call each (their renewal timers then armed).
struct IdleMemory {
    stored_bytes: usize,
    token_bytes: usize,
    restored: PerClient,
    after_a_call: Option<PerClient>,
}

/// `IDLE_SESSIONS` clients of `provider`, each restored from `snapshot` with an access
/// token of its own, counted by the allocator once their tasks are idle.
async fn idle_memory(provider: &SharedProvider, snapshot: &Snapshot, call_each: bool) -> IdleMemory {
    let tokens = snapshot.tokens().expect("a signed-in snapshot");
    let access = tokens.access_token().secret();
    let token_bytes = access.len()
        + tokens.refresh_token().map_or(0, |token| token.secret().len())
        + snapshot.id_token().map_or(0, |token| token.secret().len());
    let json = snapshot.to_json();
    // Made before counting and kept until after: each user's stored snapshot, as a store holds it.
    let stored: Vec<String> =
        (0..IDLE_SESSIONS).map(|i| json.replace(access, &format!("{}{i:06}", &access[..access.len() - 6]))).collect();
    let mut clients = Vec::with_capacity(IDLE_SESSIONS);

    let before = heap();
    COUNTING.store(true, Ordering::SeqCst);
    for json in &stored {
        let snapshot = Snapshot::from_json(json).expect("snapshot");
        clients.push(provider.client().snapshot(snapshot).build().expect("client"));
    }
    for client in &clients {
        assert!(client.is_signed_in().await);
    }
    // Each task goes back to waiting (and lets go of its command slot) after the last reply.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restored = PerClient::between(before, heap());
    let mut after_a_call = None;
    if call_each {
        for client in &clients {
            assert_eq!(client.call(ApiRequest::get(API_PATH)).await.expect("answer").status, 200);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        after_a_call = Some(PerClient::between(before, heap()));
    }
    COUNTING.store(false, Ordering::SeqCst);
    drop(clients);
    tokio::time::sleep(Duration::from_millis(300)).await;
    IdleMemory { stored_bytes: json.len(), token_bytes, restored, after_a_call }
}

/// The same with a real provider's snapshot (tests/idp: the ERP.net preset, an ID token and
/// its claims, the instance's sites), as the npm package's figure is measured. `None`
/// without Node and the test provider.
async fn idle_memory_at_test_provider() -> Option<IdleMemory> {
    let provider = tokio::task::spawn_blocking(|| TestProvider::start(3_600)).await.expect("join").ok()?;
    let config = Config::erpnet(&provider.root)
        .client_id("my.trusted.app/first")
        .client_secret("my-plain-app-secret")
        .redirect_uri("http://localhost/signin-callback")
        .snapshot_provider(false)
        .build()
        .expect("config");
    let shared = SharedProvider::new(config).expect("provider");
    shared.ready().await.expect("discovery");
    let client = shared.client().build().expect("client");
    let url = client.sign_in(SignInOptions::new()).await.expect("sign-in URL");
    let back = tokio::task::spawn_blocking(move || sign_in_headless(&url, "alice")).await.expect("join").ok()?;
    let BrowserReturn::Redirect(back) = back else { return None };
    client.handle_callback(&back).await.expect("signed in");
    assert_eq!(client.call(ApiRequest::get(API_PATH)).await.expect("answer").status, 200);
    let snapshot = client.snapshot().await.expect("snapshot");
    client.close().await;
    // No calls: the provider's API would refuse the altered access tokens.
    let memory = idle_memory(&shared, &snapshot, false).await;
    drop(provider);
    Some(memory)
}

fn main() {
    let root = serve();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("client runtime");
    let workers = runtime.metrics().num_workers();
    runtime.block_on(async {
        let http = erpnet_auth_tokio::default_http_client().expect("reqwest client");
        let provider = SharedProvider::with_http(config(&root), http.clone());
        provider.ready().await.expect("provider");
        let client = signed_in(&provider).await;
        let snapshot = client.snapshot().await.expect("snapshot");


        let direct = Caller::Direct {
            http,
            url: format!("{root}/api/domain/odata/{API_PATH}").into(),
            authorization: format!("Bearer {ACCESS_TOKEN}").into(),
        };
        let ours = Caller::Client(client.clone());
        // Warm-up: connections opened, code paths paged in.
        for caller in [&direct, &ours] {
            caller.sequential(SEQUENTIAL_CALLS).await;
            caller.concurrent(CONCURRENT_CALLS).await;
        }
        let (mut sequential, mut concurrent) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // Each way goes first in every other round.
            let (base, with_client) = if round % 2 == 0 {
                (direct.sequential(SEQUENTIAL_CALLS).await, ours.sequential(SEQUENTIAL_CALLS).await)
            } else {
                let with_client = ours.sequential(SEQUENTIAL_CALLS).await;
                (direct.sequential(SEQUENTIAL_CALLS).await, with_client)
            };
            sequential.push((base, with_client));
            let (base, with_client) = if round % 2 == 0 {
                (direct.concurrent(CONCURRENT_CALLS).await, ours.concurrent(CONCURRENT_CALLS).await)
            } else {
                let with_client = ours.concurrent(CONCURRENT_CALLS).await;
                (direct.concurrent(CONCURRENT_CALLS).await, with_client)
            };
            concurrent.push((base, with_client));
        }
        let allocations = (direct.allocations(1_000).await, ours.allocations(1_000).await);
        // After the timings: the test provider's helper threads (spawn_blocking) come and go.
        let loopback = idle_memory(&provider, &snapshot, true).await;
        let test_provider = idle_memory_at_test_provider().await;

        println!("erpnet-auth-tokio: Client::call against reqwest calling the same loopback API directly");
        println!(
            "  runtime: tokio multi-thread, {workers} worker threads ({} cores); the API server (axum) on a runtime of its own, 1 thread",
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        println!("  the same reqwest::Client (erpnet_auth_tokio::default_http_client) for both; {ROUNDS} alternating rounds");
        println!(
            "  wall time per call, median (fastest round)  reqwest direct     Client::call       added by the client"
        );
        for (label, runs) in [
            (format!("sequential ({SEQUENTIAL_CALLS} calls a round)"), &sequential),
            (format!("{CONCURRENCY} concurrent ({CONCURRENT_CALLS} calls a round)"), &concurrent),
        ] {
            let base: Vec<f64> = runs.iter().map(|r: &(Sample, Sample)| r.0.wall).collect();
            let with_client: Vec<f64> = runs.iter().map(|r| r.1.wall).collect();
            let added = median(runs.iter().map(|r| r.1.wall - r.0.wall).collect());
            println!(
                "  {label:<38} {:>6.1} µs ({:>5.1}) {:>6.1} µs ({:>5.1}) {:>8.1} µs ({:>4.1})",
                median(base.clone()),
                fastest(&base),
                median(with_client.clone()),
                fastest(&with_client),
                added,
                fastest(&with_client) - fastest(&base),
            );
        }
        if sequential.iter().chain(&concurrent).all(|r| r.0.cpu.is_some() && r.1.cpu.is_some()) {
            println!("  CPU time per call, all threads of the process (the client's runtime and the server), medians:");
            for (label, runs) in [("sequential", &sequential), ("200 concurrent", &concurrent)] {
                let cpu = |sample: &Sample| sample.cpu.unwrap_or(0.0);
                println!(
                    "  {label:<38} {:>6.1} µs         {:>6.1} µs         {:>8.1} µs",
                    median(runs.iter().map(|r| cpu(&r.0)).collect()),
                    median(runs.iter().map(|r| cpu(&r.1)).collect()),
                    median(runs.iter().map(|r| cpu(&r.1) - cpu(&r.0)).collect()),
                );
            }
        }
        println!("  goal: ≤ 10 µs added per call; moonshot: ≤ 3 µs");
        println!(
            "  heap allocations per call: reqwest direct {:.1}, Client::call {:.1}",
            allocations.0, allocations.1
        );
        println!(
            "memory: {IDLE_SESSIONS} idle signed-in clients of one SharedProvider, each restored from its own snapshot"
        );
        println!("  (heap bytes asked of the allocator, per client)         bytes  blocks  tokens  beyond the tokens  stored snapshot");
        let row = |label: &str, memory: &IdleMemory, heap: &PerClient| {
            println!(
                "  {label:<52} {:>7} {:>7} {:>7} {:>18} {:>16}",
                heap.bytes,
                heap.blocks,
                memory.token_bytes,
                heap.bytes - memory.token_bytes as isize,
                memory.stored_bytes
            );
        };
        row("loopback provider, no ID token: restored", &loopback, &loopback.restored);
        if let Some(after) = &loopback.after_a_call {
            row("  the same after one API call each", &loopback, after);
        }
        match &test_provider {
            Some(memory) => row("tests/idp, ERP.net preset, ID token: restored", memory, &memory.restored),
            None => println!("  tests/idp: skipped (no Node or test provider; run `make setup`)"),
        }
        println!("  goal: ≤ 2 KB beyond the tokens; moonshot: ≤ 1 KB");
        client.close().await;
    });
}
