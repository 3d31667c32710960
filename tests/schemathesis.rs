//! The OpenAPI-driven fuzzer (targets R5): schemathesis, installed by `.ci/run` into
//! `.ci/venv`, runs against the served `/openapi.json` of an in-process node (open mode,
//! loopback, temp dir). It must find no 5xx, and no answer whose body breaks the document's
//! response schemas or whose status or content type the document does not list. Afterwards the
//! node is still healthy, every operation it lists decodes, and its store opens again after a
//! restart.
//!
//! Bounds: `OUTPOST_SCHEMATHESIS_MAX_EXAMPLES` per operation (default 40) and
//! `OUTPOST_SCHEMATHESIS_MAX_TIME` seconds (default 45). Longer run:
//! `OUTPOST_SCHEMATHESIS_MAX_EXAMPLES=2000 OUTPOST_SCHEMATHESIS_MAX_TIME=1800 cargo test --release --test schemathesis`.
//! Skip (only when schemathesis cannot be installed): `OUTPOST_SKIP_SCHEMATHESIS=1`.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Api, start_node, stop_node};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn schemathesis_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/schemathesis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    if std::env::var("OUTPOST_SKIP_SCHEMATHESIS").as_deref() == Ok("1") {
        eprintln!("OUTPOST_SKIP_SCHEMATHESIS=1: schemathesis not run");
        return;
    }
    let bin = schemathesis_bin();
    assert!(
        bin.is_file(),
        "schemathesis is not installed at {}: run `.ci/run` (it installs the pinned version \
         from PyPI into .ci/venv), or set OUTPOST_SKIP_SCHEMATHESIS=1 to skip this test",
        bin.display()
    );
    let max_examples = env_u64("OUTPOST_SCHEMATHESIS_MAX_EXAMPLES", 40);
    let max_time = env_u64("OUTPOST_SCHEMATHESIS_MAX_TIME", 45);

    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path()).await;
    let addr = node.local_addr();
    assert!(addr.ip().is_loopback());
    let api = Api::new(addr);
    // Something to aim at: a customer with an address.
    api.create_customer(&common::customer("Mari", "Maasikas"))
        .await;

    let base = format!("http://{addr}");
    let report_dir = dir.path().join("schemathesis-report");
    let mut cmd = Command::new(&bin);
    cmd.arg("run")
        .arg(format!("{base}/openapi.json"))
        .args(["--url", &base])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance,\
             status_code_conformance",
        ])
        // Takes no input, and must reach HQ to answer: with the test node's HQ unreachable it
        // answers its documented 503 `cdx_refresh_failed`, which not_a_server_error counts.
        .args(["--exclude-path", "/v1/cdx/refresh"])
        .args(["--max-examples", &max_examples.to_string()])
        .args(["--max-time", &max_time.to_string()])
        .args(["--request-timeout", "15"])
        // One worker: with two, schemathesis 4.32.5 now and then ends in an internal KeyError
        // (its coverage-phase cache) after every check passed, which would fail this test for
        // no fault of the node.
        .args(["--workers", "1"])
        .args([
            "--seed",
            &env_u64("OUTPOST_SCHEMATHESIS_SEED", 7).to_string(),
        ])
        .arg("--report-dir")
        .arg(&report_dir)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .current_dir(dir.path())
        .stdin(Stdio::null());
    let limit = Duration::from_secs(max_time + 120);
    let output = tokio::task::spawn_blocking(move || {
        let out_path =
            std::env::temp_dir().join(format!("outpost-schemathesis-{}.log", std::process::id()));
        let out = std::fs::File::create(&out_path).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut child = cmd
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn schemathesis");
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait schemathesis") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let log = std::fs::read_to_string(&out_path).unwrap_or_default();
        let _ = std::fs::remove_file(&out_path);
        (status, log)
    })
    .await
    .expect("schemathesis task");
    let (status, log) = output;
    let status = status.unwrap_or_else(|| panic!("schemathesis ran past {limit:?}:\n{log}"));
    assert!(status.success(), "schemathesis failed ({status}):\n{log}");
    eprintln!(
        "{}",
        log.lines().rev().take(15).collect::<Vec<_>>().join("\n")
    );

    // Still healthy, and every operation it lists decodes.
    api.get("/healthz").await.expect(200);
    let ops = api.all_operations("", 500).await;
    for op in &ops {
        assert!(op["operation_id"].is_string(), "operation without id: {op}");
    }
    let customers = node.store().customer_count().expect("customer count");
    stop_node(node).await;

    // The store opens again and says the same.
    let node = start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    api.get("/healthz").await.expect(200);
    assert_eq!(api.all_operations("", 500).await.len(), ops.len());
    assert_eq!(node.store().customer_count().expect("count"), customers);
    stop_node(node).await;
}
