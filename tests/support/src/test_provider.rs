//! Starts the test OpenID provider of `tests/idp/` (Node, oidc-provider) on an ephemeral
//! loopback port, and stops it when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running test provider.
pub struct TestProvider {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `http://127.0.0.1:PORT`: the "instance root".
    pub root: String,
}

/// The repository root (where `tests/idp/server.mjs` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

impl TestProvider {
    /// Starts it with access tokens living `access_ttl_secs`.
    pub fn start(access_ttl_secs: u64) -> Result<TestProvider, String> {
        let root = repo_root();
        let mut child = Command::new("node")
            .arg(root.join("tests/idp/server.mjs"))
            .args(["--access-ttl", &access_ttl_secs.to_string()])
            .current_dir(&root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start node tests/idp/server.mjs ({e}); run `make setup` first"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
        let ready: serde_json::Value = serde_json::from_str(&line).map_err(|_| {
            let _ = child.kill();
            format!("the test provider did not start: {line:?} (is node_modules installed? run `make setup`)")
        })?;
        let port = ready["port"].as_u64().and_then(|p| u16::try_from(p).ok()).ok_or("no port")?;
        Ok(TestProvider { child, port, root: format!("http://127.0.0.1:{port}") })
    }

    /// What the provider and its Domain API counted.
    pub fn stats(&self) -> Result<serde_json::Value, String> {
        let mut response = ureq::get(format!("{}/test/stats", self.root)).call().map_err(|e| e.to_string())?;
        response.body_mut().read_json().map_err(|e| e.to_string())
    }

    /// Makes the Domain API refuse the next call with 401 (a token revoked behind our back).
    pub fn reject_next_api_call(&self) -> Result<(), String> {
        ureq::post(format!("{}/test/reject-next", self.root)).send_empty().map(|_| ()).map_err(|e| e.to_string())
    }

    /// Revokes every grant, as a password change or an admin would.
    pub fn revoke_all(&self) -> Result<(), String> {
        ureq::post(format!("{}/test/revoke-all", self.root)).send_empty().map(|_| ()).map_err(|e| e.to_string())
    }
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
