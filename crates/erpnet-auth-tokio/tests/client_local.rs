//! The client's own behaviour on loopback, without Node: its life cycle (close is final,
//! dropping the last handle ends it), waiting for the provider, and the transport's rules
//! (deadline, body cap, redirects) seen through what the session reports.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use erpnet_auth_tokio::erpnet_auth::{Config, ConfigBuilder, DiscoveryError, Event, SignInOptions, Timing};
use erpnet_auth_tokio::{Client, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a fake server answers every connection.
#[derive(Clone, Copy)]
enum Answer {
    /// Reads the request and never answers.
    Never,
    /// Closes the connection at once.
    Hangup,
    /// A redirect to another loopback port.
    Redirect(u16),
    /// 200 with a body that does not end.
    Endless,
}

struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
    /// Connections whose client went away (read returned end of stream).
    closed_by_client: Arc<AtomicUsize>,
}

async fn serve(answer: Answer) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let closed_by_client = Arc::new(AtomicUsize::new(0));
    let (count, closed) = (Arc::clone(&connections), Arc::clone(&closed_by_client));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(answer_one(stream, answer, Arc::clone(&closed)));
        }
    });
    Server { port, connections, closed_by_client }
}

async fn answer_one(mut stream: TcpStream, answer: Answer, closed: Arc<AtomicUsize>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&byte[..n]),
        }
    }
    match answer {
        Answer::Never => {
            // Until the client lets go.
            while let Ok(n) = stream.read(&mut byte).await {
                if n == 0 {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            closed.fetch_add(1, Ordering::SeqCst);
        }
        Answer::Hangup => {}
        Answer::Redirect(port) => {
            let response = format!(
                "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{port}/id/.well-known/openid-configuration\r\ncontent-length: 0\r\n\r\n"
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
        Answer::Endless => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"issuer\":\"").await;
            let chunk = vec![b'a'; 64 * 1024];
            let mut sent = 0usize;
            while stream.write_all(&chunk).await.is_ok() {
                sent += chunk.len();
                if sent > 64 * 1024 * 1024 {
                    return;
                }
            }
            closed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A plain OpenID Connect client of the fake server (no ERP.net fallback paths).
fn oidc(port: u16, request_timeout_ms: u64) -> ConfigBuilder {
    let mut timing = Timing::default();
    timing.request_timeout_ms = request_timeout_ms;
    Config::discover(&format!("http://127.0.0.1:{port}/id"))
        .client_id("my.trusted.app/first")
        .client_secret("my-plain-app-secret")
        .redirect_uri("http://localhost/signin-callback")
        .timing(timing)
}

/// The ERP.net preset at a port where nothing listens: discovery fails at once and the
/// documented fixed paths stand in.
fn erpnet_offline() -> Config {
    Config::erpnet("http://127.0.0.1:9")
        .client_id("my.trusted.app/first")
        .client_secret("my-plain-app-secret")
        .redirect_uri("http://localhost/signin-callback")
        .build()
        .expect("config")
}

async fn within<T>(limit: Duration, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, future).await.expect("in time")
}

#[tokio::test]
async fn sign_in_waits_for_discovery_instead_of_failing() {
    let client = Client::new(erpnet_offline()).expect("client");
    // Called at once: the provider is not known yet, and the fallback arrives meanwhile.
    let url = within(Duration::from_secs(10), client.sign_in(SignInOptions::new())).await.expect("a URL");
    assert!(url.starts_with("http://127.0.0.1:9/id/connect/authorize?"), "{url}");
    assert!(!client.is_signed_in().await);
}

#[tokio::test]
async fn a_failed_discovery_fails_sign_in_and_the_next_sign_in_tries_again() {
    let server = serve(Answer::Hangup).await;
    let client = Client::new(oidc(server.port, 5_000).build().expect("config")).expect("client");
    let error = within(Duration::from_secs(10), client.sign_in(SignInOptions::new())).await.expect_err("no provider");
    assert_eq!(error, Error::Discovery(DiscoveryError::Transport));
    let tried = server.connections.load(Ordering::SeqCst);
    let again = within(Duration::from_secs(10), client.sign_in(SignInOptions::new())).await.expect_err("still none");
    assert_eq!(again.code(), "transport");
    assert!(server.connections.load(Ordering::SeqCst) > tried, "discovery was asked for again");
}

#[tokio::test]
async fn the_deadline_aborts_a_request_that_never_answers() {
    let server = serve(Answer::Never).await;
    let client = Client::new(oidc(server.port, 300).build().expect("config")).expect("client");
    let started = tokio::time::Instant::now();
    let error = within(Duration::from_secs(10), client.sign_in(SignInOptions::new())).await.expect_err("timed out");
    assert_eq!(error, Error::Discovery(DiscoveryError::Transport));
    assert!(started.elapsed() < Duration::from_secs(5), "failed at the deadline, not at a default timeout");
    // The connection itself was let go, not left hanging.
    within(Duration::from_secs(5), async {
        while server.closed_by_client.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn an_endless_answer_is_cut_at_the_session_limit() {
    let server = serve(Answer::Endless).await;
    let client = Client::new(oidc(server.port, 10_000).build().expect("config")).expect("client");
    let error = within(Duration::from_secs(10), client.sign_in(SignInOptions::new())).await.expect_err("refused");
    assert_eq!(error, Error::Discovery(DiscoveryError::Malformed), "read up to the limit and refused");
    within(Duration::from_secs(5), async {
        while server.closed_by_client.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let elsewhere = serve(Answer::Never).await;
    let server = serve(Answer::Redirect(elsewhere.port)).await;
    let client = Client::new(oidc(server.port, 5_000).build().expect("config")).expect("client");
    let error = within(Duration::from_secs(10), client.sign_in(SignInOptions::new())).await.expect_err("a 302");
    assert_eq!(error, Error::Discovery(DiscoveryError::Status(302)));
    assert_eq!(elsewhere.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn close_is_final() {
    let server = serve(Answer::Never).await;
    let client = Client::new(oidc(server.port, 30_000).build().expect("config")).expect("client");
    let mut events = client.events();
    // A sign-in waiting for a discovery that does not answer.
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.sign_in(SignInOptions::new()).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    within(Duration::from_secs(5), client.close()).await;
    assert_eq!(within(Duration::from_secs(5), waiting).await.expect("join"), Err(Error::Closed));
    assert_eq!(client.sign_in(SignInOptions::new()).await, Err(Error::Closed));
    assert_eq!(client.snapshot().await.map(|_| ()), Err(Error::Closed));
    assert_eq!(client.user_info().await.map_err(|e| e.code()), Err("closed"));
    assert!(!client.is_signed_in().await);
    assert!(client.claims().await.is_none());
    assert_eq!(within(Duration::from_secs(5), events.next()).await, None);
    assert!(client.events().next().await.is_none());
    // Closing again is harmless.
    client.close().await;
    // The discovery in flight was aborted.
    within(Duration::from_secs(5), async {
        while server.closed_by_client.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn dropping_the_last_handle_ends_the_task_and_its_requests() {
    let server = serve(Answer::Never).await;
    let client = Client::new(oidc(server.port, 30_000).build().expect("config")).expect("client");
    let mut events = client.events();
    let clone = client.clone();
    within(Duration::from_secs(5), async {
        while server.connections.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    drop(client);
    // A clone keeps it alive.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.closed_by_client.load(Ordering::SeqCst), 0);
    drop(clone);
    assert_eq!(within(Duration::from_secs(5), events.next()).await, None);
    within(Duration::from_secs(5), async {
        while server.closed_by_client.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn events_reach_every_subscriber() {
    let client = Client::new(erpnet_offline()).expect("client");
    let (mut first, mut second) = (client.events(), client.events());
    client.sign_in(SignInOptions::new()).await.expect("a URL");
    for events in [&mut first, &mut second] {
        let event = within(Duration::from_secs(5), async {
            loop {
                match events.next().await {
                    Some(event @ Event::ProviderReady { .. }) => return event,
                    Some(_) => {}
                    None => panic!("ended"),
                }
            }
        })
        .await;
        assert_eq!(event, Event::ProviderReady { discovered: false });
    }
}

#[tokio::test]
async fn calls_before_sign_in_are_refused_with_nothing_sent() {
    let client = Client::new(erpnet_offline()).expect("client");
    let error = client.call(erpnet_auth_tokio::erpnet_auth::ApiRequest::get("Crm_Sales_Customers")).await;
    assert_eq!(error.map(|_| ()).map_err(|e| e.code()), Err("not_signed_in"));
    let foreign = client.call(erpnet_auth_tokio::erpnet_auth::ApiRequest::get("https://elsewhere.example/x")).await;
    assert!(matches!(foreign, Err(Error::Refused(_))));
    assert_eq!(foreign.map(|_| ()).map_err(|e| e.code()), Err("foreign_origin"));
}

#[tokio::test]
async fn an_applications_own_token_is_not_shared_through_a_store() {
    let config = Config::erpnet("http://127.0.0.1:9")
        .client_id("my.trusted.app/first")
        .client_secret("my-plain-app-secret")
        .client_credentials()
        .build()
        .expect("config");
    let store = Arc::new(erpnet_auth_tokio::store::MemoryStore::new());
    let refused = Client::builder(config).store(store, "app").build();
    assert_eq!(refused.map(|_| ()).map_err(|e| e.code()), Err("shared_store_not_allowed"));
}
