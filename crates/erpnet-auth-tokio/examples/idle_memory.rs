//! Prints the heap bytes an idle signed-in client costs, counted by the allocator: 10,000
//! clients of one `SharedProvider`, each restored from its own snapshot, once as a server
//! restores them (no call yet) and once after one API call each (the renewal timer is then
//! armed), beside the core sessions alone (`Session::with_provider` from the same
//! snapshots), so that the driver's own share shows.
//!
//! `cargo run --release -p erpnet-auth-tokio --example idle_memory` (`IDLE_CLIENTS=n` for
//! another count).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use erpnet_auth_tokio::erpnet_auth::{
    config::ProviderMetadata, ApiRequest, Config, HttpResponse, OsRandom, Output, Session, SignInOptions, Snapshot,
};
use erpnet_auth_tokio::{Client, SharedProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counts the live heap bytes and blocks of the whole process.
struct CountingAllocator;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method hands its arguments to `System` unchanged and returns its result; the
// counters only observe.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let block = unsafe { System.alloc(layout) };
        if !block.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let block = unsafe { System.alloc_zeroed(layout) };
        if !block.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        unsafe { System.dealloc(block, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(block, layout, new_size) };
        if !moved.is_null() {
            LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn heap() -> (isize, isize) {
    (LIVE_BYTES.load(Ordering::SeqCst), LIVE_BLOCKS.load(Ordering::SeqCst))
}

/// Opaque tokens of the length oidc-provider and ERP.net issue (43 characters).
const ACCESS_TOKEN: &str = "bSSxLdFzAxWmkQ4DqCk9TkqQ1kO0b8E3pUuVJsn0w2Y";
const REFRESH_TOKEN: &str = "Zq1vF9m8oXo3t9aGdB7LrYcW2sKp5nHjUeQ0iTgM4xE";

/// A loopback stand-in for the token endpoint and the Domain API: every request on a kept-alive
/// connection gets a fixed answer (tokens for `/token`, a small OData page otherwise).
async fn answer(mut stream: TcpStream) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < end + 4 + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body = if head.starts_with("post /token") {
            format!(
                r#"{{"access_token":"{ACCESS_TOKEN}","token_type":"Bearer","expires_in":3600,"refresh_token":"{REFRESH_TOKEN}","scope":"offline_access read"}}"#
            )
        } else {
            r#"{"value":[{"Id":"C-0001","Name":"Contoso"}]}"#.to_owned()
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        buffer.drain(..end + 4 + length);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

async fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let root = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream));
        }
    });
    root
}

fn config(root: &str) -> Config {
    let metadata = ProviderMetadata::new(root.to_owned(), format!("{root}/authorize"), format!("{root}/token"));
    Config::with_endpoints(metadata)
        .client_id("memory.app/first")
        .client_secret("memory-secret")
        .redirect_uri("http://localhost/signin-callback")
        // Plain OAuth: no ID token, so what is counted is the session's own state.
        .scope("offline_access read")
        .api_root(format!("{root}/api/"))
        .snapshot_provider(false)
        .build()
        .expect("config")
}

/// Bytes and blocks per item of `count` made by `make`, held until counted; `settle` runs
/// before the count (the clients' tasks go back to waiting).
async fn per_item<T>(count: usize, mut make: impl FnMut(usize) -> T, settle: impl AsyncFnOnce(&[T])) -> (isize, isize) {
    let before = heap();
    // Counted too: the slot that holds each (a session inline, a client's pointer).
    let mut items = Vec::with_capacity(count);
    for i in 0..count {
        items.push(make(i));
    }
    settle(&items).await;
    let after = heap();
    drop(items);
    // Dropped clients end their tasks on the runtime: not in the next count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let count = count as isize;
    ((after.0 - before.0) / count, (after.1 - before.1) / count)
}

fn main() {
    let count: usize = std::env::var("IDLE_CLIENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let root = serve().await;
        let provider = SharedProvider::new(config(&root)).expect("provider");
        provider.ready().await.expect("provider");
        let first = provider.client().build().expect("client");
        let url = first.sign_in(SignInOptions::new()).await.expect("sign-in URL");
        let state = url.split("state=").nth(1).and_then(|rest| rest.split('&').next()).expect("state");
        first
            .handle_callback(&format!("http://localhost/signin-callback?code=memory-code&state={state}"))
            .await
            .expect("signed in");
        let json = first.snapshot().await.expect("snapshot").to_json();
        first.close().await;
        // Each user's stored snapshot, made before counting: what a store holds is not the client's.
        let stored: Vec<String> =
            (0..count).map(|i| json.replace(ACCESS_TOKEN, &format!("{}{i:06}", &ACCESS_TOKEN[..37]))).collect();
        let token_bytes = ACCESS_TOKEN.len() + REFRESH_TOKEN.len();
        let state = provider.state();
        let config = std::sync::Arc::clone(provider.config());

        let restore = |i: usize| Snapshot::from_json(&stored[i]).expect("snapshot");
        let sessions = per_item(
            count,
            |i| {
                Session::with_provider(std::sync::Arc::clone(&config), &state, Some(restore(i)), OsRandom)
                    .expect("session")
            },
            async |_: &[Session]| {},
        )
        .await;
        // The same, driven by hand through one call (answered 200), as a driver would.
        let sessions_used = per_item(
            count,
            |i| {
                let mut session =
                    Session::with_provider(std::sync::Arc::clone(&config), &state, Some(restore(i)), OsRandom)
                        .expect("session");
                let now = now_ms();
                session.call_api(now, ApiRequest::get("Crm_Sales_Customers")).expect("call");
                let mut sent = None;
                loop {
                    match session.poll() {
                        Output::Http(request) => sent = Some(request.id),
                        Output::WaitUntil(_) | Output::Idle => break,
                        _ => {}
                    }
                }
                let answer = HttpResponse::new(200, r#"{"value":[]}"#);
                session.handle_response(now, sent.expect("sent"), answer).expect("answered");
                while !matches!(session.poll(), Output::WaitUntil(_) | Output::Idle) {}
                session
            },
            async |_: &[Session]| {},
        )
        .await;
        let settle = Duration::from_millis(300);
        let restored = per_item(
            count,
            |i| provider.client().snapshot(restore(i)).build().expect("client"),
            async |clients: &[Client]| {
                for client in clients {
                    assert!(client.is_signed_in().await);
                }
                tokio::time::sleep(settle).await;
            },
        )
        .await;
        let used = per_item(
            count,
            |i| provider.client().snapshot(restore(i)).build().expect("client"),
            async |clients: &[Client]| {
                for client in clients {
                    assert_eq!(client.call(ApiRequest::get("Crm_Sales_Customers")).await.expect("call").status, 200);
                }
                tokio::time::sleep(settle).await;
            },
        )
        .await;

        println!("{count} idle signed-in clients of one SharedProvider; tokens {token_bytes} bytes each");
        println!("                               bytes/client  blocks/client  beyond tokens  driver's own");
        for (label, (bytes, blocks), core) in [
            ("core Session, restored", sessions, None),
            ("client, restored (no call)", restored, Some(sessions.0)),
            ("core Session, one call", sessions_used, None),
            ("client, after one call", used, Some(sessions_used.0)),
        ] {
            let own = core.map_or_else(String::new, |core| (bytes - core).to_string());
            println!("  {label:<28} {bytes:>12}  {blocks:>13}  {:>13}  {own:>12}", bytes - token_bytes as isize);
        }
    });
}
