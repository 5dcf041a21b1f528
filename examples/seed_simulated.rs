//! The seed page's scenario against the in-process simulated ERP.net identity server, on a
//! fake clock: authorize → callback → code exchange → Domain API call → the token expires →
//! 401 → refresh → replay. Prints every exchange in the seed page's notation, secrets
//! redacted, and exits non-zero unless everything went as the seed says.

use erpnet_auth::{ApiRequest, Config, Event, Session};
use erpnet_auth_sim::{Entry, SimDriver, SimIdp};
use erpnet_auth_test_support::transcript;

const ROOT: &str = "https://demodb.my.erp.net";
const CLIENT_ID: &str = "my.trusted.app/first";
const SECRET: &str = "my-plain-app-secret";

fn print_from(driver: &SimDriver, from: usize) {
    for entry in &driver.log[from..] {
        match entry {
            Entry::Browser(url) => println!("{}", transcript::browser("GET", url)),
            Entry::Request(req) => println!("{}", transcript::request(req)),
            Entry::Response(_, resp) => println!("{}", transcript::response(resp)),
            Entry::Event(event) => println!("# event: {}\n", event_name(event)),
            Entry::Persist(_) => {}
        }
    }
}

fn event_name(event: &Event) -> String {
    format!("{event:?}").split([' ', '{', '(']).next().unwrap_or_default().to_owned()
}

fn main() {
    let config = match Config::erpnet(ROOT)
        .client_id(CLIENT_ID)
        .client_secret(SECRET)
        .redirect_uri("http://localhost/signin-callback")
        .scope("openid profile offline_access DomainApi")
        .discovery(false)
        .build()
    {
        Ok(config) => config,
        Err(e) => {
            eprintln!("configuration refused: {e}");
            std::process::exit(2);
        }
    };
    let start = 1_655_057_724_000;
    let mut driver = SimDriver::new(Session::new(config), SimIdp::new(ROOT, CLIENT_ID, Some(SECRET)), start);

    println!("## Authorize endpoint, sign-in callback, token endpoint\n");
    let mark = driver.log.len();
    if let Err(e) = driver.sign_in() {
        eprintln!("sign-in failed: {e}");
        std::process::exit(1);
    }
    print_from(&driver, mark);

    println!("## Authorized Domain API call\n");
    let mark = driver.log.len();
    let first = driver.call(ApiRequest::get("Crm_Customers?$top=10"));
    print_from(&driver, mark);

    println!("## Access token renewal (the API refuses the token: 401)\n");
    driver.idp.revoke_access_tokens();
    let mark = driver.log.len();
    driver.now = start + 30 * 60_000;
    let second = driver.call(ApiRequest::get("Crm_Customers?$top=10"));
    print_from(&driver, mark);

    let ok = |call: &Result<erpnet_auth::CallId, String>| {
        call.as_ref()
            .ok()
            .and_then(|c| driver.results.get(c))
            .is_some_and(|e| matches!(e, Event::CallCompleted { response, .. } if response.status == 200))
    };
    let stats = &driver.idp.stats;
    let failures = driver
        .events()
        .iter()
        .filter(|e| matches!(e, Event::CallFailed { .. } | Event::SignInFailed { .. } | Event::SignInRequired { .. }))
        .count();
    println!(
        "summary: {} requests ({} token, {} API), {} refresh, {} API 401, {} failures",
        stats.token_requests + stats.api_requests,
        stats.token_requests,
        stats.api_requests,
        stats.refreshes,
        stats.api_unauthorized,
        failures
    );
    let as_the_seed_says =
        ok(&first) && ok(&second) && stats.refreshes == 1 && stats.api_unauthorized == 1 && failures == 0;
    if !as_the_seed_says {
        eprintln!("the scenario did not go as the seed page says");
        std::process::exit(1);
    }
}
