//! Prints the `ApplicationSecretHash` ERP.net stores for a trusted application's secret:
//! `base64(sha256(utf8(secret)))`.
//!
//! ```text
//! cargo run --example secret_hash            # reads the secret from standard input
//! cargo run --example secret_hash -- SECRET  # or takes it as the argument
//! ```

use std::io::BufRead;

fn main() {
    let secret = match std::env::args().nth(1) {
        Some(secret) => secret,
        None => {
            eprintln!("secret (read from standard input, not echoed anywhere):");
            let mut line = String::new();
            if std::io::stdin().lock().read_line(&mut line).is_err() {
                eprintln!("could not read standard input");
                std::process::exit(2);
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    println!("{}", erpnet_auth::install::application_secret_hash(&secret));
}
