//! The in-memory store: compare-and-swap on the generation, the leased lock, sharing by clones.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use erpnet_auth_tokio::store::{MemoryStore, SessionStore, StoreError, Write};

fn unix_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis()).expect("ms")
}

fn write(generation: u64, base_generation: u64) -> Option<Write> {
    Some(Write { generation, base_generation })
}

#[tokio::test]
async fn a_write_is_refused_when_the_store_holds_a_newer_generation() {
    let store = MemoryStore::new();
    assert_eq!(store.get("k").await, Ok(None));
    assert_eq!(store.set("k", "one", write(1, 0)).await, Ok(true), "nothing stored: accepted");
    assert_eq!(store.set("k", "two", write(2, 1)).await, Ok(true), "derived from the stored state");
    // Another process renewed from generation 1 too, and lost the race.
    assert_eq!(store.set("k", "stale", write(2, 1)).await, Ok(false));
    assert_eq!(store.get("k").await, Ok(Some("two".to_owned())));
    // An unchanged rewrite (a pending sign-in, provider data: base = generation) is accepted.
    assert_eq!(store.set("k", "two again", write(2, 2)).await, Ok(true));
    assert_eq!(store.get("k").await, Ok(Some("two again".to_owned())));
}

#[tokio::test]
async fn an_unconditional_write_keeps_the_generation_its_json_carries() {
    let store = MemoryStore::new();
    assert_eq!(store.set("k", r#"{"version":1,"generation":5}"#, None).await, Ok(true));
    assert_eq!(store.set("k", "older", write(5, 4)).await, Ok(false), "stored 5 > base 4");
    assert_eq!(store.set("k", "newer", write(6, 5)).await, Ok(true));
    // Not a snapshot: generation 0, any write replaces it.
    assert_eq!(store.set("k", "not json", None).await, Ok(true));
    assert_eq!(store.set("k", "any", write(1, 0)).await, Ok(true));
}

#[tokio::test]
async fn remove_forgets_the_key_and_clones_share_the_store() {
    let store = MemoryStore::new();
    let clone = store.clone();
    store.set("k", "v", write(3, 2)).await.expect("set");
    assert_eq!(clone.get("k").await, Ok(Some("v".to_owned())));
    clone.remove("k").await.expect("remove");
    assert_eq!(store.get("k").await, Ok(None));
    // Generation forgotten with it: a write from any base is accepted.
    assert_eq!(store.set("k", "v", write(1, 0)).await, Ok(true));
    store.remove("absent").await.expect("removing nothing is fine");
}

#[tokio::test]
async fn the_lock_excludes_until_released() {
    let store = MemoryStore::new();
    let other = store.clone();
    let asked = unix_ms();
    let lease = store.lock("k:token", Duration::from_secs(10), Duration::ZERO).await.expect("free");
    assert!(
        (asked + 10_000..=unix_ms() + 10_000).contains(&lease.expires_at_ms),
        "the lease counts from before it was asked for"
    );
    let started = Instant::now();
    let refused = other.lock("k:token", Duration::from_secs(10), Duration::from_millis(200)).await;
    assert_eq!(refused.map(|_| ()), Err(StoreError::LockTimeout));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200), "waited {waited:?}, the whole wait");
    println!("a taken lock gave up after {waited:?} (wait 200 ms)");
    // Another name is another lock.
    let unrelated = other.lock("j:token", Duration::from_secs(10), Duration::ZERO).await.expect("free");
    other.unlock("j:token", unrelated).await.expect("unlock");

    // A waiter gets it as soon as the holder releases.
    let waiter = tokio::spawn({
        let other = other.clone();
        async move { other.lock("k:token", Duration::from_secs(10), Duration::from_secs(5)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "still held");
    store.unlock("k:token", lease).await.expect("unlock");
    let taken = tokio::time::timeout(Duration::from_secs(2), waiter).await.expect("released").expect("task");
    assert!(taken.is_ok());
}

#[tokio::test]
async fn a_lease_ends_by_itself_and_a_late_release_does_not_free_the_next_holders_lock() {
    let store = MemoryStore::new();
    let first = store.lock("k:token", Duration::from_millis(300), Duration::ZERO).await.expect("free");
    let started = Instant::now();
    // The first holder "died": the second waits out its lease.
    let second = store.lock("k:token", Duration::from_secs(10), Duration::from_secs(5)).await.expect("after the lease");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "took it after {waited:?}, before the lease ended");
    println!("a dead holder's lock (lease 300 ms) was taken after {waited:?}");
    // The first holder comes back and releases: the second's lock stays.
    store.unlock("k:token", first).await.expect("unlock");
    let third = store.lock("k:token", Duration::from_secs(10), Duration::from_millis(100)).await;
    assert_eq!(third.map(|_| ()), Err(StoreError::LockTimeout));
    store.unlock("k:token", second).await.expect("unlock");
    assert!(
        store.lock("k:token", Duration::from_secs(10), Duration::ZERO).await.is_ok(),
        "free once its holder released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_excludes_between_concurrent_tasks() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let inside = Arc::new(AtomicUsize::new(0));
    let most_inside = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (store, inside, most_inside) = (store.clone(), inside.clone(), most_inside.clone());
            tokio::spawn(async move {
                for _ in 0..5 {
                    let lease =
                        store.lock("k:token", Duration::from_secs(10), Duration::from_secs(10)).await.expect("lock");
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most_inside.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    store.unlock("k:token", lease).await.expect("unlock");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(most_inside.load(Ordering::SeqCst), 1, "two holders at once");
}

#[test]
fn errors_have_the_npm_codes_and_name_no_value() {
    let unavailable = StoreError::Unavailable { command: "HGET", reason: "timed out".to_owned() };
    assert_eq!(unavailable.code(), "storage_unavailable");
    assert_eq!(unavailable.to_string(), "the session store did not answer HGET (timed out)");
    assert_eq!(StoreError::LockTimeout.code(), "lock_timeout");
}

#[tokio::test]
async fn the_store_is_shareable_and_its_futures_are_send() {
    fn shareable<T: Send + Sync + 'static>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    shareable(&store);
    send(&store.get("k"));
    send(&store.lock("k", Duration::ZERO, Duration::ZERO));
    // Debug shows no value (a snapshot holds tokens).
    let memory = MemoryStore::new();
    memory.set("k", "secret-token", None).await.expect("set");
    let shown = format!("{memory:?}");
    assert!(shown.contains("entries: 1") && !shown.contains("secret"), "{shown}");
}
