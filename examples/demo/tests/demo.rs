//! `make demo` end to end: the demo program against the real test provider. Needs Node and
//! the npm tools: `make e2e` runs it (`--ignored`).

use std::process::Command;

#[test]
#[ignore = "needs the test provider: make e2e"]
fn demo_runs_the_seed_scenario_against_the_real_provider() {
    let output = Command::new(env!("CARGO_BIN_EXE_demo")).output().expect("demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for expected in [
        "code_challenge_method=S256",
        "grant_type=authorization_code",
        "grant_type=refresh_token",
        "HTTP/1.1 401",
        "2 refreshes, 1 API 401, 0 failures",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in\n{stdout}");
    }
    for secret in ["my-plain-app-secret", "code_verifier=", "Bearer ey"] {
        let leaked = stdout.lines().any(|l| l.contains(secret) && !l.contains("<redacted>"));
        assert!(!leaked, "{secret} printed");
    }
}
