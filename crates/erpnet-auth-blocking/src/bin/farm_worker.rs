//! One process of a server farm, for the tests and the farm benchmark: `THREADS` threads,
//! each a driver of the same user's session kept in Redis (`REDIS_URL`, key `SESSION_KEY`),
//! against the instance `ROOT`. The process discovers the provider once and its sessions
//! share what it learned (one `Arc<Config>`, one `ProviderState`). Each line on stdin
//! starts a round: every thread makes `CALLS` calls; one JSON line answers with the statuses
//! and failures counted.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use erpnet_auth::{ApiRequest, Config, OsRandom, ProviderState, Session, Timing};
use erpnet_auth_blocking::store::RedisStore;
use erpnet_auth_blocking::{CallError, Driver};

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// One round's results of one thread.
#[derive(Default)]
struct Round {
    outcomes: BTreeMap<String, u64>,
    latencies_us: Vec<u128>,
}

fn config(root: &str) -> Result<Config, String> {
    let mut timing = Timing::default();
    timing.request_timeout_ms = 2_000;
    Config::erpnet(root)
        .client_id("my.trusted.app/first")
        .client_secret("my-plain-app-secret")
        .redirect_uri("http://localhost/signin-callback")
        .api_concurrency(Some(1))
        .timing(timing)
        // The provider is shared in memory, not stored with each user.
        .snapshot_provider(false)
        .build()
        .map_err(|e| e.to_string())
}

/// Discovers the provider (and the instance's sites) once for the whole process.
fn discover(config: &Arc<Config>) -> Result<ProviderState, String> {
    let mut driver = Driver::new(Session::new(Arc::clone(config)));
    driver.run().map_err(|e| e.to_string())?;
    if !driver.session.is_provider_ready() {
        return Err("discovery failed".to_owned());
    }
    Ok(driver.session.provider_state())
}

fn driver(config: Arc<Config>, provider: &ProviderState, redis_url: &str, key: &str) -> Result<Driver, String> {
    let session = Session::with_provider(config, provider, None, OsRandom).map_err(|e| e.to_string())?;
    let mut driver = Driver::new(session);
    let store = RedisStore::open(redis_url).map_err(|e| e.to_string())?;
    driver.share_in(Box::new(store), key).map_err(|e| e.to_string())?;
    driver.run().map_err(|e| e.to_string())?;
    if !driver.session.is_signed_in() {
        return Err("the session in Redis is not signed in".to_owned());
    }
    Ok(driver)
}

fn main() -> Result<(), String> {
    let root = setting("ROOT", "http://127.0.0.1:3000");
    let redis_url = setting("REDIS_URL", "redis://127.0.0.1:6379");
    let key = setting("SESSION_KEY", "farm");
    let threads: usize = setting("THREADS", "4").parse().map_err(|_| "THREADS")?;
    let calls: usize = setting("CALLS", "10").parse().map_err(|_| "CALLS")?;

    let config = Arc::new(config(&root)?);
    let provider = discover(&config)?;
    let (results_tx, results_rx) = mpsc::channel::<Result<Round, String>>();
    let mut starters = Vec::new();
    for _ in 0..threads {
        let (start_tx, start_rx) = mpsc::channel::<()>();
        starters.push(start_tx);
        let (config, provider) = (Arc::clone(&config), provider.clone());
        let (redis_url, key, results) = (redis_url.clone(), key.clone(), results_tx.clone());
        std::thread::spawn(move || {
            let mut driver = match driver(config, &provider, &redis_url, &key) {
                Ok(driver) => driver,
                Err(e) => return results.send(Err(e)).unwrap_or(()),
            };
            if results.send(Ok(Round::default())).is_err() {
                return;
            }
            while start_rx.recv().is_ok() {
                let mut round = Round::default();
                for _ in 0..calls {
                    let started = Instant::now();
                    let outcome = match driver.call(ApiRequest::get("Crm_Sales_Customers")) {
                        Ok(response) => response.status.to_string(),
                        Err(CallError::Failed(failure)) => failure.code().to_owned(),
                        Err(CallError::Refused(refusal)) => refusal.code().to_owned(),
                        Err(other) => other.to_string(),
                    };
                    round.latencies_us.push(started.elapsed().as_micros());
                    *round.outcomes.entry(outcome).or_default() += 1;
                }
                if results.send(Ok(round)).is_err() {
                    return;
                }
            }
        });
    }
    // Every thread restored the session before the first round.
    for _ in 0..threads {
        results_rx.recv().map_err(|e| e.to_string())??;
    }
    println!("{}", serde_json::json!({ "ready": true, "pid": std::process::id() }));
    for line in std::io::stdin().lock().lines() {
        if line.map_err(|e| e.to_string())?.trim() == "exit" {
            break;
        }
        for starter in &starters {
            starter.send(()).map_err(|e| e.to_string())?;
        }
        let mut outcomes = BTreeMap::<String, u64>::new();
        let mut latencies = Vec::new();
        for _ in 0..threads {
            let round = results_rx.recv().map_err(|e| e.to_string())??;
            for (outcome, n) in round.outcomes {
                *outcomes.entry(outcome).or_default() += n;
            }
            latencies.extend(round.latencies_us);
        }
        println!("{}", serde_json::json!({ "outcomes": outcomes, "latencies_us": latencies }));
    }
    Ok(())
}
