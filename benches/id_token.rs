//! Prints what checking one RS256 ID token costs natively: a hybrid callback handled with
//! validation on, minus the same with validation off. Run with `make bench`.

use std::time::Instant;

use base64::Engine;
use erpnet_auth::config::ResponseType;
use erpnet_auth::error::RandomUnavailable;
use erpnet_auth::*;
use rand_core::OsRng;
use rsa::signature::{SignatureEncoding, Signer};

const ROOT: &str = "https://demodb.my.erp.net";
const T0: u64 = 1_700_000_000_000;

/// The same bytes for every draw: every sign-in has the same state and nonce, so one signed
/// token answers them all.
struct Fixed;
impl RandomSource for Fixed {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), RandomUnavailable> {
        dest.fill(7);
        Ok(())
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn drain(session: &mut Session) -> Vec<HttpRequest> {
    let mut requests = Vec::new();
    loop {
        match session.poll() {
            Output::Http(r) => requests.push(r),
            Output::WaitUntil(_) | Output::Idle => return requests,
            _ => {}
        }
    }
}

/// The time of one callback: the hybrid flow's (its front-channel RS256 ID token checked) or,
/// as the baseline, the code flow's (no ID token at the callback).
fn run(hybrid: bool, n: usize, token: &str, jwks: &str) -> f64 {
    let response_type = if hybrid { ResponseType::CodeIdToken } else { ResponseType::Code };
    let config = Config::erpnet(ROOT)
        .client_id("my.trusted.app/first")
        .client_secret("s")
        .redirect_uri("http://localhost/signin-callback")
        .response_type(response_type)
        .discovery(false)
        .build()
        .expect("config");
    let mut session = Session::with_random(config, Fixed);
    let state = b64(&[7u8; 32]);
    let callback = if hybrid {
        format!("http://localhost/signin-callback#code=c1&id_token={token}&state={state}")
    } else {
        format!("http://localhost/signin-callback?code=c1&state={state}")
    };
    let mut spent = 0.0;
    for _ in 0..n {
        session.sign_in(T0, SignInOptions::new()).expect("sign-in");
        for request in drain(&mut session) {
            session.handle_response(T0, request.id, HttpResponse::new(200, jwks)).expect("keys");
            drain(&mut session);
        }
        let start = Instant::now();
        session.handle_callback(T0, Callback::Url(&callback)).expect("callback");
        let requests = drain(&mut session);
        spent += start.elapsed().as_secs_f64();
        // Free the single-flight slot for the next round (not timed).
        for request in requests {
            session
                .handle_response(T0, request.id, HttpResponse::new(400, r#"{"error":"invalid_grant"}"#))
                .expect("answer");
            drain(&mut session);
        }
    }
    spent / n as f64
}

fn main() {
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("key");
    let public = key.to_public_key();
    let jwks = format!(
        r#"{{"keys":[{{"kty":"RSA","kid":"k1","n":"{}","e":"{}"}}]}}"#,
        b64(&public.n().to_bytes_be()),
        b64(&public.e().to_bytes_be())
    );
    let hash = |v: &str| {
        use sha2::Digest;
        b64(&sha2::Sha256::digest(v.as_bytes())[..16])
    };
    let claims = format!(
        r#"{{"iss":"{ROOT}/id","sub":"admin","aud":"my.trusted.app/first","exp":{},"iat":{},"nonce":"{}","c_hash":"{}"}}"#,
        T0 / 1000 + 300,
        T0 / 1000,
        b64(&[7u8; 32]),
        hash("c1")
    );
    let input = format!("{}.{}", b64(br#"{"alg":"RS256","kid":"k1"}"#), b64(claims.as_bytes()));
    let signature = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key).sign(input.as_bytes()).to_vec();
    let token = format!("{input}.{}", b64(&signature));

    let n = 2_000;
    run(true, 200, &token, &jwks); // warm-up
    let with = run(true, n, &token, &jwks);
    let without = run(false, n, &token, &jwks);
    println!(
        "RS256 ID token check, native (hybrid callback minus code-flow callback, {n} rounds): {:.1} µs (hybrid {:.1} µs, code flow {:.1} µs)",
        (with - without) * 1e6,
        with * 1e6,
        without * 1e6
    );
}
