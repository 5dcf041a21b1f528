//! One process of a server farm, for the farm test: `CLIENTS` clients of the same user's
//! session kept in Redis (`REDIS_URL`, key `SESSION_KEY`), against the instance `ROOT`, on
//! one `SharedProvider` (discovery once per process) and one `RedisStore`.
//!
//! It speaks the Node farm worker's protocol (tests/farm/worker.mjs), so that a test drives
//! both alike: one JSON line on stdin per command, one JSON line on stdout per answer.
//!   {"burst": 10}  -> each client makes 10 concurrent calls:
//!                     {"statuses": {"200": 10}, "errors": {…}, "latencies": [ms, …]}
//!   {"exit": true}
//!
//! Needs the `redis` feature:
//! `cargo run -p erpnet-auth-tokio --features redis --example farm_worker`.

#[cfg(not(feature = "redis"))]
fn main() {
    eprintln!("the farm worker needs the `redis` feature (--features redis)");
    std::process::exit(2);
}

#[cfg(feature = "redis")]
fn main() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(worker::run())
}

#[cfg(feature = "redis")]
mod worker {
    use std::collections::BTreeMap;
    use std::io::BufRead;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use erpnet_auth_tokio::erpnet_auth::{ApiRequest, Config, Timing};
    use erpnet_auth_tokio::store::{RedisStore, SessionStore};
    use erpnet_auth_tokio::{Client, SharedProvider};
    use serde_json::{json, Value};

    fn setting(name: &str, default: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| default.to_owned())
    }

    fn number(name: &str, default: u64) -> Result<u64, String> {
        setting(name, &default.to_string()).parse().map_err(|_| format!("{name} is not a number"))
    }

    /// The farm's client, as the Node worker's: the seed's confidential client, one API
    /// request at a time. `REFRESH_ATTEMPTS` and `RETRY_MAX_MS` set how a renewal that cannot
    /// reach the store gives up (the calls waiting for it fail then, and for `RETRY_MAX_MS`).
    fn config(root: &str) -> Result<Config, String> {
        let mut timing = Timing::default();
        timing.request_timeout_ms = number("REQUEST_TIMEOUT_MS", 2_000)?;
        timing.retry_max_ms = number("RETRY_MAX_MS", 30_000)?;
        timing.max_refresh_attempts = u32::try_from(number("REFRESH_ATTEMPTS", 4)?).map_err(|e| e.to_string())?;
        Config::erpnet(root)
            .client_id("my.trusted.app/first")
            .client_secret("my-plain-app-secret")
            .redirect_uri("http://localhost/signin-callback")
            .api_concurrency(Some(1))
            .timing(timing)
            // The provider is shared in memory by the process, not stored with the user.
            .snapshot_provider(false)
            .build()
            .map_err(|e| e.to_string())
    }

    /// `calls` concurrent calls of one client, counted as the Node worker counts them.
    async fn burst(client: Client, calls: u64) -> Vec<(String, bool, f64)> {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..calls {
            let client = client.clone();
            tasks.spawn(async move {
                let started = Instant::now();
                let outcome = match client.call(ApiRequest::get("Crm_Sales_Customers")).await {
                    Ok(answer) => (answer.status.to_string(), true),
                    Err(error) => (error.code().to_owned(), false),
                };
                (outcome.0, outcome.1, started.elapsed().as_secs_f64() * 1000.0)
            });
        }
        let mut outcomes = Vec::new();
        while let Some(done) = tasks.join_next().await {
            outcomes.push(done.unwrap_or_else(|_| ("panicked".to_owned(), false, 0.0)));
        }
        outcomes
    }

    pub async fn run() -> Result<(), String> {
        let root = setting("ROOT", "http://127.0.0.1:3000");
        let redis_url = setting("REDIS_URL", "redis://127.0.0.1:6379");
        let key = setting("SESSION_KEY", "farm");
        let clients = number("CLIENTS", 1)?;
        let command_timeout = Duration::from_millis(number("COMMAND_TIMEOUT_MS", 2_000)?);

        let store: Arc<dyn SessionStore> =
            Arc::new(RedisStore::open_with_timeout(&redis_url, command_timeout).await.map_err(|e| e.to_string())?);
        let provider = SharedProvider::new(config(&root)?).map_err(|e| e.to_string())?;
        provider.ready().await.map_err(|e| e.to_string())?;
        let mut farm = Vec::new();
        for _ in 0..clients {
            let client = provider.client().store(Arc::clone(&store), key.clone()).build().map_err(|e| e.to_string())?;
            farm.push(client);
        }
        let mut signed_in = true;
        for client in &farm {
            signed_in &= client.is_signed_in().await;
        }
        println!("{}", json!({ "ready": true, "pid": std::process::id(), "signedIn": signed_in }));

        // stdin on a thread of its own: the runtime's threads never block on it.
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = lines.recv().await {
            let command: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
            if command["exit"] == true {
                break;
            }
            let calls = command["burst"].as_u64().ok_or("a command is {\"burst\": n} or {\"exit\": true}")?;
            let rounds: Vec<_> = farm.iter().map(|client| tokio::spawn(burst(client.clone(), calls))).collect();
            let mut statuses = BTreeMap::<String, u64>::new();
            let mut errors = BTreeMap::<String, u64>::new();
            let mut latencies = Vec::new();
            for round in rounds {
                for (outcome, answered, latency) in round.await.map_err(|e| e.to_string())? {
                    *(if answered { &mut statuses } else { &mut errors }).entry(outcome).or_default() += 1;
                    latencies.push(latency);
                }
            }
            println!("{}", json!({ "statuses": statuses, "errors": errors, "latencies": latencies }));
        }
        for client in &farm {
            client.close().await;
        }
        Ok(())
    }
}
