//! Prints the link an ERP.net administrator opens to install a trusted application, and,
//! when the application brings its own secret (read from standard input, never an
//! argument), the `ApplicationSecretHash` to store with it.
//!
//! ```text
//! cargo run --example install_link -- https://demodb.my.erp.net my.spa Public \
//!     --redirect-uri https://app.example/ --impersonate internal --scope "openid profile offline_access read"
//! echo "$SECRET" | cargo run --example install_link -- https://demodb.my.erp.net my.app Confidential --secret-from-stdin
//! ```
//!
//! Options: `--name`, `--redirect-uri`, `--impersonate none|internal|all`, `--request-secret`,
//! `--service-access none|clientCredentials|referenceToken`,
//! `--reference-tokens none|authenticatedUsers|administratorsOnly`, `--scope`,
//! `--secret-from-stdin`.

use std::io::BufRead;

use erpnet_auth::install::{
    install_link, Impersonation, InstallClientType, ReferenceTokenIssuers, ServiceAccess, TrustedApplication,
};

fn fail(message: &str) -> ! {
    eprintln!("install_link: {message}");
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(root), Some(uri), Some(kind)) = (args.next(), args.next(), args.next()) else {
        fail("usage: install_link INSTANCE_ROOT APPLICATION_URI Confidential|Public|None [options]")
    };
    let client_type = match kind.as_str() {
        "Confidential" => InstallClientType::Confidential,
        "Public" => InstallClientType::Public,
        "None" => InstallClientType::None,
        _ => fail("the client type is Confidential, Public or None"),
    };
    let mut app = TrustedApplication::new(uri, client_type);
    let mut secret_from_stdin = false;
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--name" => app.application_name = Some(value()),
            "--redirect-uri" => app.redirect_uri = Some(value()),
            "--scope" => app.scope = Some(value()),
            "--request-secret" => app.request_secret = true,
            "--secret-from-stdin" => secret_from_stdin = true,
            "--impersonate" => {
                app.impersonate = match value().as_str() {
                    "none" => Impersonation::None,
                    "internal" => Impersonation::Internal,
                    "all" => Impersonation::All,
                    _ => fail("--impersonate is none, internal or all"),
                }
            }
            "--service-access" => {
                app.service_access = match value().as_str() {
                    "none" => ServiceAccess::None,
                    "clientCredentials" => ServiceAccess::ClientCredentials,
                    "referenceToken" => ServiceAccess::ReferenceToken,
                    _ => fail("--service-access is none, clientCredentials or referenceToken"),
                }
            }
            "--reference-tokens" => {
                app.reference_tokens = match value().as_str() {
                    "none" => ReferenceTokenIssuers::None,
                    "authenticatedUsers" => ReferenceTokenIssuers::AuthenticatedUsers,
                    "administratorsOnly" => ReferenceTokenIssuers::AdministratorsOnly,
                    _ => fail("--reference-tokens is none, authenticatedUsers or administratorsOnly"),
                }
            }
            other => fail(&format!("unknown option {other}")),
        }
    }
    match install_link(&root, &app) {
        Ok(url) => println!("{url}"),
        Err(error) => fail(&format!("{error} ({})", error.code())),
    }
    if secret_from_stdin {
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line).is_err() {
            fail("could not read the secret from standard input");
        }
        let secret = line.trim_end_matches(['\r', '\n']);
        println!("ApplicationSecretHash: {}", erpnet_auth::install::application_secret_hash(secret));
    }
}
