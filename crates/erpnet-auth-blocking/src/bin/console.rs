//! The seed's "console based external application" against a real ERP.net instance: prints
//! (and tries to open) the sign-in URL, catches the browser's redirect on the loopback port,
//! exchanges the code, calls the Domain API, and with `--wait-for-renewal` sleeps until the
//! proactive renewal and calls again.
//!
//! ```text
//! ERP_CLIENT_SECRET=… console --instance https://demodb.my.erp.net --client-id my.trusted.app/first \
//!     --redirect-uri http://localhost:8765/signin-callback [--scope …] [--wait-for-renewal]
//! ```
//!
//! The client secret is read from `ERP_CLIENT_SECRET`, or from standard input when
//! `--client-secret-stdin` is given; never from the command line, where other users of the
//! machine can read it. Without either, the client is public (PKCE, no secret).

use std::io::BufRead;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use erpnet_auth::{ApiRequest, Callback, Config, Session, SignInOptions};
use erpnet_auth_blocking::{now_ms, Driver, Exchange};

const ENTITY_SET: &str = "Crm_Sales_Customers?$top=10";

fn value(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn client_secret(args: &[String]) -> Result<Option<String>, String> {
    if args.iter().any(|a| a == "--client-secret") {
        return Err("--client-secret is not accepted: set ERP_CLIENT_SECRET or use --client-secret-stdin".into());
    }
    if args.iter().any(|a| a == "--client-secret-stdin") {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("cannot read the secret: {e}"))?;
        return Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()));
    }
    Ok(std::env::var("ERP_CLIENT_SECRET").ok().filter(|s| !s.is_empty()))
}

/// Prints what the driver does: each request and answer in one line, events by name.
fn print(exchange: &Exchange) {
    match exchange {
        Exchange::Request(request) => {
            let path = request.url.split('?').next().unwrap_or_default();
            println!("-> {} {path}", request.method.as_str());
        }
        Exchange::Response(response) => println!("<- {}", response.status),
        Exchange::Failed(error) => println!("<- no answer ({})", error.code()),
        Exchange::Event(event) => {
            let name = format!("{event:?}");
            println!("# {}", name.split([' ', '{', '(']).next().unwrap_or_default());
        }
        Exchange::Store(error) => println!("! {error}"),
        Exchange::Conflict { generation } => println!("! generation {generation} lost to a newer one, adopted"),
        _ => {}
    }
}

/// Waits for the browser's redirect to `redirect` on its loopback port.
fn catch_redirect(redirect: &url::Url) -> Result<String, String> {
    let listen =
        format!("{}:{}", redirect.host_str().unwrap_or("127.0.0.1"), redirect.port_or_known_default().unwrap_or(80));
    let server = tiny_http::Server::http(&listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let request = server.recv_timeout(left).map_err(|e| e.to_string())?.ok_or("no sign-in within 10 minutes")?;
        let full = redirect.join(request.url()).map_err(|e| e.to_string())?;
        let (status, text) = if full.path() == redirect.path() {
            (200, "Signed in. You can close this window.")
        } else {
            (404, "not found")
        };
        if let Err(e) = request.respond(tiny_http::Response::from_string(text).with_status_code(status)) {
            eprintln!("could not answer the browser: {e}");
        }
        if status == 200 {
            return Ok(full.to_string());
        }
    }
}

fn run(args: &[String]) -> Result<bool, String> {
    let instance = value(args, "--instance").ok_or("--instance https://… is required")?;
    let redirect =
        value(args, "--redirect-uri").ok_or("--redirect-uri http://localhost:PORT/signin-callback is required")?;
    let mut builder = Config::erpnet(&instance)
        .client_id(value(args, "--client-id").ok_or("--client-id is required")?)
        .redirect_uri(&redirect);
    if let Some(secret) = client_secret(args)? {
        builder = builder.client_secret(secret);
    }
    if let Some(scope) = value(args, "--scope") {
        builder = builder.scope(scope);
    }
    let config = builder.build().map_err(|e| e.to_string())?;
    let redirect_url = url::Url::parse(&redirect).map_err(|e| e.to_string())?;

    let mut driver = Driver::new(Session::new(config));
    driver.on_exchange(print);
    driver.run().map_err(|e| e.to_string())?;
    let url = driver.session.sign_in(now_ms(), SignInOptions::new()).map_err(|e| e.to_string())?;
    driver.run().map_err(|e| e.to_string())?;
    println!("\nOpen this URL to sign in (trying to open it for you):\n\n{url}\n");
    if let Err(e) = std::process::Command::new("xdg-open").arg(&url).spawn() {
        eprintln!("(could not open a browser: {e})");
    }
    let back = catch_redirect(&redirect_url)?;
    driver.session.handle_callback(now_ms(), Callback::Url(&back)).map_err(|e| e.to_string())?;
    driver.run().map_err(|e| e.to_string())?;
    if !driver.session.is_signed_in() {
        return Ok(false);
    }
    let mut ok = call(&mut driver);
    if args.iter().any(|a| a == "--wait-for-renewal") {
        println!("# waiting for the proactive renewal (a minute before expiry)…");
        driver.sleep_until_due(None).map_err(|e| e.to_string())?;
        ok &= call(&mut driver);
    }
    Ok(ok)
}

fn call(driver: &mut Driver) -> bool {
    match driver.call(ApiRequest::get(ENTITY_SET)) {
        Ok(response) => {
            println!("{}", String::from_utf8_lossy(&response.body));
            response.status == 200
        }
        Err(e) => {
            eprintln!("the call failed: {e}");
            false
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("console: {e}");
            ExitCode::FAILURE
        }
    }
}
