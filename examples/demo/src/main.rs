//! The seed scenario over real HTTP: sign in, call the Domain API, let the token expire,
//! renew it (proactively, then reactively after a 401), replay, succeed. Prints every
//! exchange in the seed page's notation with secrets redacted, then one summary line.
//!
//! It runs against the embedded test provider (oidc-provider, `tests/idp`), signing a demo
//! user in at its pages headlessly. The same driver against a real ERP.net instance, with
//! your own browser, is the console program:
//! `cargo run -p erpnet-auth-blocking --features console --bin console`.

use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use erpnet_auth::{ApiRequest, Callback, Config, Event, Session, SignInOptions, Timing};
use erpnet_auth_blocking::{now_ms, Driver, Exchange};
use erpnet_auth_test_support::provider_login::{sign_in_headless, BrowserReturn};
use erpnet_auth_test_support::test_provider::TestProvider;
use erpnet_auth_test_support::transcript;

const SEED_CLIENT: &str = "my.trusted.app/first";
const SEED_SECRET: &str = "my-plain-app-secret";
const SEED_SCOPE: &str = "openid profile offline_access DomainApi";
const ENTITY_SET: &str = "Crm_Customers?$top=10";

/// What the driver's observer saw, printed section by section (the demo is short: a few
/// dozen exchanges).
struct Printer {
    seen: Arc<Mutex<Vec<Exchange>>>,
    shown: usize,
}

impl Printer {
    fn attach(driver: &mut Driver) -> Printer {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        driver.on_exchange(move |exchange| {
            sink.lock().unwrap_or_else(PoisonError::into_inner).push(exchange.clone());
        });
        Printer { seen, shown: 0 }
    }

    fn seen(&self) -> MutexGuard<'_, Vec<Exchange>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn section(&mut self, title: &str) {
        println!("## {title}\n");
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        for exchange in seen.iter().skip(self.shown) {
            match exchange {
                Exchange::Request(request) => println!("{}", transcript::request(request)),
                Exchange::Response(response) => println!("{}", transcript::response(response)),
                Exchange::Failed(error) => println!("# no answer: {error:?}\n"),
                Exchange::Event(event) => println!("# event: {}\n", event_name(event)),
                other => println!("# {other:?}\n"),
            }
        }
        self.shown = seen.len();
    }

    fn count(&self, test: impl Fn(&Exchange) -> bool) -> usize {
        self.seen().iter().filter(|e| test(e)).count()
    }
}

fn event_name(event: &Event) -> String {
    format!("{event:?}").split([' ', '{', '(']).next().unwrap_or_default().to_owned()
}

fn api_call(driver: &mut Driver, failures: &mut u32) -> bool {
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
    // The defaults are made for hour-long tokens; scaled down here to fit 8-second ones.
    let mut timing = Timing::default();
    timing.min_renewal_interval_ms = 1_000;
    timing.rejection_cooldown_ms = 1_000;
    let config = Config::erpnet(&provider.root)
        .client_id(SEED_CLIENT)
        .client_secret(SEED_SECRET)
        .redirect_uri("http://localhost/signin-callback")
        .scope(SEED_SCOPE)
        .timing(timing)
        .build()
        .map_err(|e| e.to_string())?;
    let mut driver = Driver::new(Session::new(config));
    let mut out = Printer::attach(&mut driver);
    driver.run().map_err(|e| e.to_string())?;
    out.section("Discovery");

    let url = driver.session.sign_in(now_ms(), SignInOptions::new()).map_err(|e| e.to_string())?;
    driver.run().map_err(|e| e.to_string())?;
    println!("## Authorize endpoint\n\n{}", transcript::browser("GET", &url));
    let back = match sign_in_headless(&url, "demo")? {
        BrowserReturn::Redirect(back) => back,
        BrowserReturn::FormPost { .. } => return Err("unexpected form_post".into()),
    };
    println!("## Sign in callback\n\n{}", transcript::browser("GET", &back));
    driver.session.handle_callback(now_ms(), Callback::Url(&back)).map_err(|e| e.to_string())?;
    driver.run().map_err(|e| e.to_string())?;
    out.section("Token endpoint");

    let mut failures = 0;
    let first = api_call(&mut driver, &mut failures);
    out.section("Authorized Domain API call");

    // The host sleeps until the session's wake-up time: the proactive renewal.
    let started = Instant::now();
    driver.sleep_until_due(None).map_err(|e| e.to_string())?;
    let second = api_call(&mut driver, &mut failures);
    out.section(&format!("Access token renewal, proactive (after {:.1} s)", started.elapsed().as_secs_f64()));

    // A token the API refuses right after it was issued goes to the caller (a refresh would
    // not help); past the (scaled-down) cooldown, a 401 means "renew and replay".
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    provider.reject_next_api_call()?;
    let third = api_call(&mut driver, &mut failures);
    out.section("Access token renewal, reactive (the API refused the token: 401 -> refresh -> replay)");

    let stats = provider.stats()?;
    let requests = out.count(|e| matches!(e, Exchange::Request(_)));
    failures += u32::try_from(out.count(|e| {
        matches!(
            e,
            Exchange::Event(Event::SignInFailed { .. } | Event::SignInRequired { .. } | Event::CallFailed { .. })
        )
    }))
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

fn main() -> ExitCode {
    match embedded() {
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
