//! What the types promise at compile time: a client and a shared provider can live in an
//! axum state or a `static`, cross `.await`s and threads, and every operation's future can
//! be spawned on a multi-threaded runtime.

use std::future::Future;

use erpnet_auth_tokio::erpnet_auth::{ApiRequest, SignInOptions};
use erpnet_auth_tokio::{Client, ClientBuilder, Error, Events, SharedProvider};

fn shareable<T: Send + Sync + 'static>() {}
fn sendable<T: Send + 'static>() {}
fn send_future<F: Future + Send>(future: F) -> F {
    future
}

#[test]
fn handles_are_send_sync_and_static() {
    shareable::<Client>();
    shareable::<SharedProvider>();
    shareable::<Error>();
    sendable::<Events>();
    sendable::<ClientBuilder>();
}

fn config() -> erpnet_auth_tokio::erpnet_auth::Config {
    erpnet_auth_tokio::erpnet_auth::Config::erpnet("https://demodb.my.erp.net")
        .client_id("my.trusted.app/first")
        .client_secret("my-plain-app-secret")
        .redirect_uri("http://localhost/signin-callback")
        .build()
        .expect("config")
}

/// The futures are made and dropped unpolled: the point is that this compiles.
#[tokio::test]
async fn futures_are_send() {
    let client = Client::new(config()).expect("client");
    let provider = SharedProvider::new(config()).expect("provider");
    drop(send_future(client.sign_in(SignInOptions::new())));
    drop(send_future(client.handle_callback("http://localhost/signin-callback?code=c&state=s")));
    drop(send_future(client.handle_form_post("code=c&state=s")));
    drop(send_future(client.call(ApiRequest::get("Crm_Sales_Customers"))));
    drop(send_future(client.user_info()));
    drop(send_future(client.profile()));
    drop(send_future(client.sign_out(None)));
    drop(send_future(client.snapshot()));
    drop(send_future(client.is_signed_in()));
    drop(send_future(client.claims()));
    drop(send_future(client.close()));
    drop(send_future(provider.ready()));
    let mut events = client.events();
    drop(send_future(async move { events.next().await }));
}

#[test]
fn a_client_outside_a_runtime_is_refused() {
    assert_eq!(Client::new(config()).map(|_| ()).map_err(|e| e.code()), Err("no_runtime"));
}
