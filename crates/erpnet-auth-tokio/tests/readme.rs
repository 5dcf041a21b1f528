//! The README's Rust example as a new user gets it: its text copied into a fresh cargo
//! project that depends on this crate by path, built, and run against the real test provider
//! (tests/idp) through its standard input and output: the seed scenario. Needs Node and the
//! npm tools: `make e2e` runs it (`-- --ignored`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use erpnet_auth_test_support::provider_login::{sign_in_headless, BrowserReturn};
use erpnet_auth_test_support::test_provider::{repo_root, TestProvider};

/// The most lines of its own code the example may have (the issue's "≤ 40 lines").
const MAX_LINES: usize = 40;
/// Access tokens live this long at the provider.
const ACCESS_TTL_SECS: u64 = 4;
/// How long one line of the program's output may take (its build is before this).
const LINE_WAIT: Duration = Duration::from_secs(30);

/// The first ```rust block of the README, as written.
fn readme_example() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let mut lines = readme.lines().skip_while(|line| !line.starts_with("```rust"));
    assert!(lines.next().is_some(), "the README has a ```rust block");
    let block: Vec<&str> = lines.take_while(|line| !line.starts_with("```")).collect();
    block.join("\n") + "\n"
}

/// The workspace's `[profile.*]` sections: with the same settings the fresh project's
/// dependencies are the ones the workspace already compiled.
fn workspace_profiles() -> String {
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("Cargo.toml");
    let mut in_profile = false;
    let mut profiles = String::new();
    for line in manifest.lines() {
        if line.starts_with('[') {
            in_profile = line.starts_with("[profile.");
        }
        if in_profile {
            profiles.push_str(line);
            profiles.push('\n');
        }
    }
    profiles
}

/// The target directory this test was built in (`…/target/debug/deps/readme-…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors().nth(3).expect("the target directory").to_path_buf()
}

/// A new cargo project holding `main_rs`, built in the workspace's target directory; the
/// path of its executable.
fn build_project(dir: &Path, main_rs: &str) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = format!(
        r#"[package]
name = "readme-example"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
erpnet-auth-tokio = {{ path = "{}" }}
tokio = {{ version = "1.40", features = ["rt-multi-thread", "macros", "io-std", "io-util"] }}

# A project of its own, wherever the temporary directory is.
[workspace]

{}"#,
        crate_dir.display(),
        workspace_profiles()
    );
    std::fs::create_dir_all(dir.join("src")).expect("project directory");
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("Cargo.toml");
    std::fs::write(dir.join("src/main.rs"), main_rs).expect("main.rs");
    // The workspace's versions, so that its compiled dependencies are reused.
    std::fs::copy(repo_root().join("Cargo.lock"), dir.join("Cargo.lock")).expect("Cargo.lock");
    let target = target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo");
    assert!(built.status.success(), "the README example does not build:\n{}", String::from_utf8_lossy(&built.stderr));
    target.join("debug").join("readme-example")
}

/// The running example: its input, and its output line by line.
struct Program {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Program {
    fn start(executable: &Path, provider: &TestProvider) -> Program {
        let mut child = Command::new(executable)
            .env("ERP_INSTANCE", &provider.root)
            .env("ERP_SECRET", "my-plain-app-secret")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the example starts");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        Program { child, stdin, lines }
    }

    fn read_line(&mut self) -> String {
        match self.lines.recv_timeout(LINE_WAIT) {
            Ok(line) => line,
            Err(_) => panic!("no line from the example within {LINE_WAIT:?}; it said: {}", self.stderr()),
        }
    }

    fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("the example reads its input");
    }

    /// One more line of input: the program calls the API and prints the answer's status
    /// and body.
    fn call(&mut self) -> String {
        self.write_line("");
        self.read_line()
    }

    /// Closes its input; its exit status within `limit`.
    fn finish(&mut self, limit: Duration) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(started.elapsed() < limit, "the example did not end at the end of its input");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&mut self) -> String {
        let _ = self.child.kill();
        let mut text = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        }
        text
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped, even by a failing test.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn count(stats: &serde_json::Value, name: &str) -> u64 {
    stats[name].as_u64().unwrap_or(0)
}

fn assert_answered(line: &str, what: &str) {
    assert!(
        line.starts_with("200 ") && line.contains("C-0001"),
        "{what}: expected a 200 with the customers, got {line:?}"
    );
}

#[test]
#[ignore = "needs the test provider and builds a cargo project: make e2e"]
fn the_readme_example_runs_the_seed_scenario_as_a_new_cargo_project() {
    let example = readme_example();
    let own_lines = example.lines().filter(|line| !line.trim().is_empty()).count();
    assert!(own_lines <= MAX_LINES, "the README's example has {own_lines} lines of code, more than {MAX_LINES}");

    let dir = TempDir(std::env::temp_dir().join(format!("erpnet-auth-readme-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let executable = build_project(&dir.0, &example);

    let provider = TestProvider::start(ACCESS_TTL_SECS).expect("the test provider (run `make setup`)");
    let mut program = Program::start(&executable, &provider);

    // Discovery, then the sign-in URL; the user signs in at the provider's own pages.
    let url = program.read_line();
    assert!(url.starts_with(&format!("{}/id/connect/authorize?", provider.root)), "a sign-in URL: {url:?}");
    let back = match sign_in_headless(&url, "alice").expect("login at the provider") {
        BrowserReturn::Redirect(back) => back,
        other => panic!("expected a redirect, got {other:?}"),
    };
    program.write_line(&back);
    assert_answered(&program.read_line(), "the first call after the code exchange");

    // The API refuses the (valid) token once: the client refreshes and replays.
    provider.reject_next_api_call().expect("reject-next");
    assert_answered(&program.call(), "the call answered 401");

    // Past the token's expiry: the client renews before calling.
    std::thread::sleep(Duration::from_secs(ACCESS_TTL_SECS) + Duration::from_millis(500));
    assert_answered(&program.call(), "the call after expiry");

    let status = program.finish(Duration::from_secs(10));
    assert!(status.success(), "the example ends cleanly at the end of its input: {status}");

    let stats = provider.stats().expect("stats");
    assert_eq!(count(&stats, "codeExchanges"), 1, "{stats}");
    assert_eq!(count(&stats, "refreshes"), 2, "one refresh for the 401, one for the expiry: {stats}");
    assert_eq!(count(&stats, "refreshFailures"), 0, "{stats}");
    assert_eq!(count(&stats, "grantsRevoked"), 0, "{stats}");
    assert_eq!(count(&stats, "apiUnauthorized"), 1, "{stats}");
    assert_eq!(count(&stats, "apiRequests"), 4, "three calls, one of them replayed: {stats}");
}
