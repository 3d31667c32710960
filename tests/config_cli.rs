//! The binary's configuration handling: errors name the key and exit non-zero.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VALID: &str = r#"
[node]
store_id = "S0001"
channel_id = "CH0001"
listen = "127.0.0.1:0"
data_dir = "DATA"
"#;

/// Runs `outpost` with `args` and `env`, waits (bounded) for it to exit, returns (code, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("outpost {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn config_file(dir: &std::path::Path, extra: &str) -> String {
    let path = dir.join("outpost.toml");
    let text = VALID.replace("DATA", &dir.join("data").display().to_string()) + extra;
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn an_invalid_value_names_its_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), "[limits]\nbody_bytes = 0\n");
    let (code, stderr) = run(&["serve", "--config", &path], &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("limits.body_bytes"), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created for a refused config"
    );
}

#[test]
fn an_unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), "[upload]\nbatch = 5\n");
    let (code, stderr) = run(&["--config", &path], &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("batch"), "{stderr}");
}

#[test]
fn a_bad_environment_override_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), "");
    let (code, stderr) = run(
        &["--config", &path],
        &[("OUTPOST_LISTEN", "not-an-address")],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("OUTPOST_LISTEN"), "{stderr}");
    let (code, stderr) = run(&["--config", &path], &[("OUTPOST_UPLOAD_INTERVAL_MS", "0")]);
    assert_ne!(code, 0);
    assert!(stderr.contains("upload.interval_ms"), "{stderr}");
}

#[test]
fn a_missing_file_is_named() {
    let (code, stderr) = run(&["--config", "/nonexistent/outpost.toml"], &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("/nonexistent/outpost.toml"), "{stderr}");
}
