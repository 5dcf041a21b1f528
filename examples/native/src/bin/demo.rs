//! The seed scenario over real HTTP: sign in, call the Domain API, let the token expire,
//! renew it (proactively, then reactively after a 401), replay, succeed. Prints every
//! exchange in the seed page's notation with secrets redacted, then one summary line.
//!
//! ```text
//! demo                                   # against the embedded test provider (oidc-provider)
//! demo --instance https://demodb.my.erp.net --client-id my.trusted.app/first \
//!      --client-secret SECRET --redirect-uri http://localhost:8765/signin-callback
//! ```
//!
//! With `--instance` it is the seed's console application: it prints (and tries to open) the
//! sign-in URL, catches the browser's redirect on the loopback port, and goes on the same way.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use erpnet_auth::{ApiRequest, Callback, Config, Event, Session, SignInOptions};
use erpnet_auth_native::provider_login::{sign_in_headless, BrowserReturn};
use erpnet_auth_native::test_provider::TestProvider;
use erpnet_auth_native::{now_ms, transcript, Exchange, NativeDriver};

const SEED_CLIENT: &str = "my.trusted.app/first";
const SEED_SECRET: &str = "my-plain-app-secret";
const SEED_SCOPE: &str = "openid profile offline_access DomainApi";
const ENTITY_SET: &str = "Crm_Customers?$top=10";

struct Printer {
    shown: usize,
}

impl Printer {
    fn section(&mut self, driver: &NativeDriver, title: &str) {
        println!("## {title}\n");
        self.flush(driver);
    }

    fn flush(&mut self, driver: &NativeDriver) {
        for exchange in &driver.log[self.shown..] {
            match exchange {
                Exchange::Request(request) => println!("{}", transcript::request(request)),
                Exchange::Response(response) => println!("{}", transcript::response(response)),
                Exchange::Failed(error) => println!("# no answer: {error:?}\n"),
                Exchange::Event(event) => println!("# event: {}\n", event_name(event)),
            }
        }
        self.shown = driver.log.len();
    }
}

fn event_name(event: &Event) -> String {
    format!("{event:?}").split([' ', '{', '(']).next().unwrap_or_default().to_owned()
}

fn api_call(driver: &mut NativeDriver, failures: &mut u32) -> bool {
    match driver.call(ApiRequest::get(ENTITY_SET)) {
        Ok(response) if response.status == 200 => true,
        Ok(response) => {
            *failures += 1;
            eprintln!("the Domain API answered {}", response.status);
            false
        }
        Err(e) => {
            *failures += 1;
            eprintln!("the call failed: {e}");
            false
        }
    }
}

fn embedded() -> Result<bool, String> {
    // Access tokens live 8 s: renewal comes at half-life, 4 s after each token arrives.
    let provider = TestProvider::start(8)?;
    println!("# test provider (oidc-provider) at {}/id, access tokens live 8 s\n", provider.root);
    let config = Config::erpnet(&provider.root)
        .client_id(SEED_CLIENT)
        .client_secret(SEED_SECRET)
        .redirect_uri("http://localhost/signin-callback")
        .scope(SEED_SCOPE)
        .build()
        .map_err(|e| e.to_string())?;
    let mut driver = NativeDriver::new(Session::new(config));
    let mut out = Printer { shown: 0 };
    out.section(&driver, "Discovery");

    let url = driver.session.sign_in(now_ms(), SignInOptions::new()).map_err(|e| e.to_string())?;
    driver.drain();
    println!("## Authorize endpoint\n\n{}", transcript::browser("GET", &url));
    let back = match sign_in_headless(&url, "demo")? {
        BrowserReturn::Redirect(back) => back,
        BrowserReturn::FormPost { .. } => return Err("unexpected form_post".into()),
    };
    println!("## Sign in callback\n\n{}", transcript::browser("GET", &back));
    driver.session.handle_callback(now_ms(), Callback::Url(&back)).map_err(|e| e.to_string())?;
    driver.run();
    out.section(&driver, "Token endpoint");

    let mut failures = 0;
    let first = api_call(&mut driver, &mut failures);
    out.section(&driver, "Authorized Domain API call");

    // The host sleeps until the session's wake-up time: the proactive renewal.
    let started = Instant::now();
    driver.sleep_until_due(None);
    let second = api_call(&mut driver, &mut failures);
    out.section(&driver, &format!("Access token renewal, proactive (after {:.1} s)", started.elapsed().as_secs_f64()));

    provider.reject_next_api_call()?;
    let third = api_call(&mut driver, &mut failures);
    out.section(&driver, "Access token renewal, reactive (the API refused the token: 401 -> refresh -> replay)");

    let stats = provider.stats()?;
    let requests = driver.log.iter().filter(|e| matches!(e, Exchange::Request(_))).count();
    failures += u32::try_from(
        driver
            .log
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Exchange::Event(
                        Event::SignInFailed { .. } | Event::SignInRequired { .. } | Event::CallFailed { .. }
                    )
                )
            })
            .count(),
    )
    .unwrap_or(u32::MAX);
    println!(
        "summary: {requests} requests ({} token requests and {} Domain API requests counted by the provider), {} refreshes, {} API 401, {failures} failures",
        stats["tokenRequests"], stats["apiRequests"], stats["refreshes"], stats["apiUnauthorized"]
    );
    Ok(first
        && second
        && third
        && failures == 0
        && stats["refreshes"] == 2
        && stats["refreshFailures"] == 0
        && stats["grantsRevoked"] == 0)
}

fn value(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// The seed's console application against a real ERP.net instance.
fn real(args: &[String]) -> Result<bool, String> {
    let instance = value(args, "--instance").ok_or("--instance is required")?;
    let redirect =
        value(args, "--redirect-uri").ok_or("--redirect-uri http://localhost:PORT/signin-callback is required")?;
    let mut builder = Config::erpnet(&instance)
        .client_id(value(args, "--client-id").ok_or("--client-id is required")?)
        .redirect_uri(&redirect);
    if let Some(secret) = value(args, "--client-secret") {
        builder = builder.client_secret(secret);
    }
    if let Some(scope) = value(args, "--scope") {
        builder = builder.scope(scope);
    }
    let config = builder.build().map_err(|e| e.to_string())?;
    let redirect_url = url::Url::parse(&redirect).map_err(|e| e.to_string())?;
    let listen = format!(
        "{}:{}",
        redirect_url.host_str().unwrap_or("127.0.0.1"),
        redirect_url.port_or_known_default().unwrap_or(80)
    );
    let server = tiny_http::Server::http(&listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;

    let mut driver = NativeDriver::new(Session::new(config));
    let mut out = Printer { shown: 0 };
    out.section(&driver, "Discovery");
    let url = driver.session.sign_in(now_ms(), SignInOptions::new()).map_err(|e| e.to_string())?;
    driver.drain();
    println!("Open this URL to sign in (trying to open it for you):\n\n{url}\n");
    let _ = std::process::Command::new("xdg-open").arg(&url).spawn();

    let deadline = Instant::now() + Duration::from_secs(600);
    let back = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let request = server.recv_timeout(left).map_err(|e| e.to_string())?.ok_or("no sign-in within 10 minutes")?;
        let full = redirect_url.join(request.url()).map_err(|e| e.to_string())?;
        if full.path() != redirect_url.path() {
            let _ = request.respond(tiny_http::Response::from_string("not found").with_status_code(404));
            continue;
        }
        let _ = request.respond(tiny_http::Response::from_string("Signed in. You can close this window."));
        break full.to_string();
    };
    println!("{}", transcript::browser("GET", &back));
    driver.session.handle_callback(now_ms(), Callback::Url(&back)).map_err(|e| e.to_string())?;
    driver.run();
    out.section(&driver, "Token endpoint");
    let mut failures = 0;
    let ok = api_call(&mut driver, &mut failures);
    out.section(&driver, "Authorized Domain API call");
    if args.iter().any(|a| a == "--wait-for-renewal") {
        println!("# waiting for the proactive renewal (a minute before expiry)…\n");
        driver.sleep_until_due(None);
        let again = api_call(&mut driver, &mut failures);
        out.section(&driver, "Access token renewal");
        return Ok(ok && again);
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = if args.iter().any(|a| a == "--instance") { real(&args) } else { embedded() };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("the scenario did not go as the seed page says");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}
