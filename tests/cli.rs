//! The operator's commands, run as the real `outpost` binary against nodes started on
//! loopback: what they print and how they exit. Every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Api, customer, poll, start_node, start_node_with, stop_node, test_config};
use outpost::config::Config;
use outpost::hq::emulator::{Faults, HqEmulator, HqEmulatorConfig, RejectRule};
use outpost::store::{Store, StoreOptions};
use serde_json::{Value, json};

/// Longest any one command may run.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// What a finished command left.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    #[track_caller]
    fn failed(&self) -> String {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "command should fail (exit {:?})\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `outpost args…` in `cwd` with `env`, killed if it outlives `limit`.
fn outpost_in(cwd: &Path, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Run {
    let out_path = cwd.join(format!("out-{}.txt", unique()));
    let err_path = cwd.join(format!("err-{}.txt", unique()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outpost"));
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .env_remove("RUST_LOG")
        .env_remove("OUTPOST_TOKEN");
    for (var, _) in outpost::config::ENV_OVERRIDES {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn outpost");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "outpost {args:?} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    run
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// Runs `outpost args…` off the async threads (an in-process node keeps serving meanwhile).
async fn outpost(cwd: &Path, args: &[&str]) -> Run {
    outpost_env(cwd, args, &[]).await
}

async fn outpost_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let cwd = cwd.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        outpost_in(&cwd, &args, &env, COMMAND_LIMIT)
    })
    .await
    .expect("command task")
}

/// `n` as lowercase letters (names may not hold digits): 0 → "a", 26 → "ba".
fn letters(mut n: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (n % 26) as u8);
        n /= 26;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

fn node_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// A configuration file for `config` at `dir/outpost.toml`.
fn write_config(dir: &Path, config: &Config, extra: &str) -> PathBuf {
    let path = dir.join("outpost.toml");
    let text = format!(
        "[node]\nstore_id = \"{}\"\nchannel_id = \"{}\"\nlisten = \"{}\"\ndata_dir = {:?}\n\n\
         [hq]\nurl = \"{}\"\n{extra}",
        config.node.store_id,
        config.node.channel_id,
        config.node.listen,
        config.node.data_dir.display().to_string(),
        config.hq.url,
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn ids_of(run_stdout: &str) -> Vec<String> {
    run_stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|id| id.len() == 36)
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_renders_the_report_and_the_raw_json() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&dir.path().join("node")).await;
    let api = Api::new(node.local_addr());
    let first = api.create_customer(&customer("Mari", "Tamm")).await;
    api.create_customer(&customer("Jaan", "Saar")).await;
    let url = node_url(node.local_addr());

    let run = outpost(dir.path(), &["status", "--node", &url]).await;
    let text = run.ok();
    for want in [
        "Outpost node S0001",
        "Queue",
        "pending",
        "oldest pending: ",
        first["customer_ref"].as_str().unwrap(),
        "Uploads to HQ",
        "Configuration held (CDX)",
        "Features",
        "Mode",
        "Real-time calls",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // Queue lines come before uploads, as a technician reads them.
    assert!(text.find("Queue").unwrap() < text.find("Uploads to HQ").unwrap());

    let run = outpost(dir.path(), &["status", "--json", "--node", &url]).await;
    let report: Value = serde_json::from_str(run.ok()).expect("status --json is JSON");
    assert_eq!(report["queue"]["pending"], 2, "{report}");

    // The node's address from the configuration file when --node is not given.
    let config = write_config(dir.path(), &test_config(&dir.path().join("node")), "");
    let mut with_listen = std::fs::read_to_string(&config).unwrap();
    with_listen = with_listen.replace("127.0.0.1:0", &node.local_addr().to_string());
    std::fs::write(&config, with_listen).unwrap();
    let run = outpost(
        dir.path(),
        &["status", "--config", config.to_str().unwrap()],
    )
    .await;
    assert!(run.ok().contains("Outpost node S0001"));
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_is_a_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let run = outpost(dir.path(), &["status", "--node", &common::dead_hq_url()]).await;
    let text = run.failed();
    assert!(text.contains("cannot reach the node"), "{text}");
    // No --node and no configuration: say how to name the node.
    let run = outpost(dir.path(), &["ops", "list"]).await;
    let text = run.failed();
    assert!(text.contains("--node"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_list_show_and_the_nodes_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&dir.path().join("node")).await;
    let api = Api::new(node.local_addr());
    let mut refs = Vec::new();
    for i in 0..3 {
        let a = api
            .create_customer(&customer("Liis", &format!("Kask{}", letters(i))))
            .await;
        refs.push(a["customer_ref"].as_str().unwrap().to_string());
    }
    let url = node_url(node.local_addr());

    let run = outpost(
        dir.path(),
        &["ops", "list", "--state", "pending", "--node", &url],
    )
    .await;
    let text = run.ok();
    assert!(text.starts_with("operation_id"), "{text}");
    for header in ["state", "kind", "action", "customer_ref", "age", "error"] {
        assert!(text.lines().next().unwrap().contains(header), "{text}");
    }
    for r in &refs {
        assert!(text.contains(r.as_str()), "{r} missing in\n{text}");
    }
    let ids = ids_of(text);
    assert_eq!(ids.len(), 3, "{text}");

    let run = outpost(dir.path(), &["ops", "list", "--limit", "1", "--node", &url]).await;
    assert_eq!(ids_of(run.ok()).len(), 1, "{}", run.stdout);

    let run = outpost(dir.path(), &["ops", "show", &ids[0], "--node", &url]).await;
    let text = run.ok();
    assert!(text.contains("payload"), "{text}");
    assert!(text.contains("\"first_name\": \"Liis\""), "{text}");
    assert!(text.contains(&refs[0]), "{text}");

    // The node's refusals are printed with field and rule, and the exit status says so.
    let run = outpost(dir.path(), &["ops", "show", "not-a-uuid", "--node", &url]).await;
    let text = run.failed();
    assert!(
        text.contains("operation_id") && text.contains("uuid"),
        "{text}"
    );
    let run = outpost(dir.path(), &["ops", "retry", &ids[0], "--node", &url]).await;
    let text = run.failed();
    assert!(
        text.contains("409") && text.contains("state_allows"),
        "{text}"
    );
    let run = outpost(
        dir.path(),
        &["ops", "list", "--state", "lost", "--node", &url],
    )
    .await;
    let text = run.failed();
    assert!(text.contains("field: state"), "{text}");
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdx_refresh_and_upload_answer_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&dir.path().join("node")).await;
    let url = node_url(node.local_addr());
    // HQ is unreachable for this node: the refresh fails, saying so.
    let run = outpost(dir.path(), &["cdx", "refresh", "--node", &url]).await;
    let text = run.failed();
    assert!(text.contains("cdx_refresh_failed"), "{text}");
    let run = outpost(dir.path(), &["upload", "--node", &url]).await;
    assert!(run.ok().contains("upload requested"), "{}", run.stdout);
    stop_node(node).await;
}

/// A node talking to an in-process HQ emulator configured for asynchronous mode.
async fn node_with_hq(dir: &Path) -> (outpost::node::Node, HqEmulator) {
    let hq = HqEmulator::start(HqEmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sync_interval: Some(Duration::from_millis(100)),
        seed: 0,
    })
    .await
    .unwrap();
    hq.enable_async();
    let mut config = Config::for_dir(dir);
    config.hq.url = hq.url();
    config.hq.request_timeout_ms = 2_000;
    config.upload.interval_ms = 50;
    config.upload.retry_initial_ms = 20;
    config.upload.retry_max_ms = 300;
    (start_node_with(config).await, hq)
}

async fn wait_state(api: &Api, id: &str, state: &str) {
    poll(
        Duration::from_secs(30),
        &format!("{id} {state}"),
        || async {
            let op = api.get(&format!("/v1/sync/operations/{id}")).await;
            (op.body["state"] == state).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_retry_queues_fixed_records_again() {
    let dir = tempfile::tempdir().unwrap();
    let (node, hq) = node_with_hq(&dir.path().join("node")).await;
    let api = Api::new(node.local_addr());
    let url = node_url(node.local_addr());
    let run = outpost(dir.path(), &["cdx", "refresh", "--node", &url]).await;
    let text = run.ok();
    assert!(
        text.contains("1110") && text.contains("1070") && text.contains("1010"),
        "{text}"
    );
    hq.set_faults(Faults {
        reject: Some(RejectRule {
            field: "last_name".into(),
            equals: "Poison".into(),
        }),
        ..Faults::default()
    });
    let mut failed_ids = Vec::new();
    for first in ["Paula", "Peeter"] {
        let a = api.create_customer(&customer(first, "Poison")).await;
        failed_ids.push(a["operation_id"].as_str().unwrap().to_string());
    }
    for id in &failed_ids {
        wait_state(&api, id, "failed").await;
    }
    let run = outpost(
        dir.path(),
        &["ops", "list", "--state", "failed", "--node", &url],
    )
    .await;
    let text = run.ok();
    assert!(text.contains("validation"), "the error column: {text}");
    assert_eq!(ids_of(text).len(), 2, "{text}");

    // Fix both records, then re-sync one by id and the other with --all-failed.
    for id in &failed_ids {
        let op = api
            .get(&format!("/v1/sync/operations/{id}"))
            .await
            .expect(200)
            .clone();
        let mut payload = op["payload"].clone();
        payload["last_name"] = json!("Poisson");
        api.put(
            &format!("/v1/sync/operations/{id}"),
            &json!({ "payload": payload }),
        )
        .await
        .expect(200);
    }
    let run = outpost(
        dir.path(),
        &["ops", "retry", &failed_ids[0], "--node", &url],
    )
    .await;
    assert!(run.ok().contains("queued again"), "{}", run.stdout);
    let run = outpost(
        dir.path(),
        &["ops", "retry", "--all-failed", "--node", &url],
    )
    .await;
    let text = run.ok();
    assert!(text.contains("queued again"), "{text}");
    for id in &failed_ids {
        wait_state(&api, id, "completed").await;
    }
    stop_node(node).await;
    hq.shutdown().await;
}

/// A one-shot HTTP server that answers `{}` and hands back the request's head.
fn capture_one_request() -> (SocketAddr, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
            if conn.read(&mut byte).unwrap_or(0) == 0 {
                break;
            }
            head.push(byte[0]);
        }
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\
              connection: close\r\n\r\n{}",
        );
        String::from_utf8_lossy(&head).to_lowercase()
    });
    (addr, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_sent_as_a_bearer_token_and_none_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, seen) = capture_one_request();
    let url = node_url(addr);
    outpost(
        dir.path(),
        &["status", "--json", "--node", &url, "--token", "s3cret"],
    )
    .await
    .ok();
    let head = seen.join().unwrap();
    assert!(head.contains("authorization: bearer s3cret"), "{head}");

    let (addr, seen) = capture_one_request();
    outpost_env(
        dir.path(),
        &["status", "--json", "--node", &node_url(addr)],
        &[("OUTPOST_TOKEN", "from-env")],
    )
    .await
    .ok();
    assert!(
        seen.join()
            .unwrap()
            .contains("authorization: bearer from-env")
    );

    let (addr, seen) = capture_one_request();
    outpost(dir.path(), &["status", "--json", "--node", &node_url(addr)])
        .await
        .ok();
    assert!(!seen.join().unwrap().contains("authorization"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_a_stopped_node_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let node_dir = dir.path().join("node");
    let config = test_config(&node_dir);
    let node = start_node_with(config.clone()).await;
    let api = Api::new(node.local_addr());
    api.create_customer(&customer("Mari", "Tamm")).await;
    api.create_customer(&customer("Jaan", "Saar")).await;
    let config_path = write_config(dir.path(), &config, "");
    let config_arg = config_path.to_str().unwrap();

    // While the node runs, its file is locked: doctor says so and points at `status`.
    let run = outpost(dir.path(), &["doctor", "--config", config_arg]).await;
    let text = run.failed();
    assert!(text.contains("in use by a running node"), "{text}");
    assert!(text.contains("outpost status"), "{text}");
    stop_node(node).await;

    let run = outpost(dir.path(), &["doctor", "--config", config_arg]).await;
    let text = run.ok();
    let schema = format!("schema version {}", outpost::store::schema::SCHEMA_VERSION);
    for want in [
        "config: valid",
        "exists and is writable",
        "free on",
        schema.as_str(),
        "pending 2",
        "customers: 2",
        "every page checksum verified",
        "healthy",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }

    // A bad value is named by its key; the store is still checked.
    let bad = write_config(dir.path(), &config, "\n[limits]\nbody_bytes = 0\n");
    let run = outpost(dir.path(), &["doctor", "--config", bad.to_str().unwrap()]).await;
    let text = run.failed();
    assert!(text.contains("limits.body_bytes"), "{text}");
    assert!(text.contains("customers: 2"), "{text}");

    // A damaged file: a clear message and the way out.
    let config_path = write_config(dir.path(), &config, "");
    std::fs::write(node_dir.join("outpost.redb"), vec![0x5au8; 16 * 1024]).unwrap();
    let run = outpost(
        dir.path(),
        &["doctor", "--config", config_path.to_str().unwrap()],
    )
    .await;
    let text = run.failed();
    assert!(text.contains("damaged"), "{text}");
    assert!(text.contains("outpost backup"), "{text}");
    assert!(text.contains("the way out"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_tills_write_holds_every_earlier_acknowledgement_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&dir.path().join("node")).await;
    let api = Api::new(node.local_addr());
    let url = node_url(node.local_addr());

    // Tills write all along; each acknowledged reference is recorded with when it was acked.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<std::sync::Mutex<Vec<(Instant, String)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..2 {
        let api = api.clone();
        let stop = stop.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            // Bounded in count as well as by the stop flag.
            while !stop.load(Ordering::Relaxed) && n < 5_000 {
                let a = api
                    .create_customer(&customer(
                        "Till",
                        &format!("Writer{}x{}", letters(w), letters(n)),
                    ))
                    .await;
                let r = a["customer_ref"].as_str().unwrap().to_string();
                acked.lock().unwrap().push((Instant::now(), r));
                n += 1;
            }
        }));
    }
    poll(Duration::from_secs(30), "first writes", || async {
        (acked.lock().unwrap().len() >= 50).then_some(())
    })
    .await;
    let began = Instant::now();
    let out = dir.path().join("backup.redb");
    let run = outpost(
        dir.path(),
        &["backup", "--out", out.to_str().unwrap(), "--node", &url],
    )
    .await;
    let text = run.ok().to_string();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(text.contains("verified"), "{text}");
    let before: Vec<String> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at < began)
        .map(|(_, r)| r.clone())
        .collect();
    assert!(before.len() >= 50);
    assert!(!dir.path().join("backup.redb.part").exists());

    // No scratch copy is left beside the store.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("node"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".outpost-backup")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The backup never overwrites.
    let run = outpost(
        dir.path(),
        &["backup", "--out", out.to_str().unwrap(), "--node", &url],
    )
    .await;
    assert!(run.failed().contains("exists already"));
    stop_node(node).await;

    // The copy opens as a store and holds everything acknowledged before the backup began.
    {
        let probe = dir.path().join("probe");
        std::fs::create_dir_all(&probe).unwrap();
        std::fs::copy(&out, probe.join("outpost.redb")).unwrap();
        let store = Store::open(&probe.join("outpost.redb"), &StoreOptions::new(1 << 20))
            .expect("backup opens");
        for r in &before {
            assert!(
                store.customer(r).unwrap().is_some(),
                "{r} acknowledged before the backup is missing"
            );
        }
    }

    // Restore: a node started on the backup serves the customers.
    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    std::fs::copy(&out, restored.join("outpost.redb")).unwrap();
    let node = start_node(&restored).await;
    let api = Api::new(node.local_addr());
    for r in before.iter().take(20) {
        let c = api.customer(r).await;
        assert_eq!(c["customer_ref"], r.as_str());
    }
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_backup_copies_a_stopped_nodes_file_and_refuses_a_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let node_dir = dir.path().join("node");
    let config = test_config(&node_dir);
    let config_path = write_config(dir.path(), &config, "");
    let config_arg = config_path.to_str().unwrap();
    let node = start_node_with(config.clone()).await;
    let api = Api::new(node.local_addr());
    let a = api.create_customer(&customer("Kati", "Sepp")).await;
    let r = a["customer_ref"].as_str().unwrap().to_string();

    let out = dir.path().join("offline.redb");
    let out_arg = out.to_str().unwrap();
    let run = outpost(
        dir.path(),
        &[
            "backup",
            "--offline",
            "--out",
            out_arg,
            "--config",
            config_arg,
        ],
    )
    .await;
    let text = run.failed();
    assert!(text.contains("without --offline"), "{text}");
    assert!(!out.exists());
    stop_node(node).await;

    let run = outpost(
        dir.path(),
        &[
            "backup",
            "--offline",
            "--out",
            out_arg,
            "--config",
            config_arg,
        ],
    )
    .await;
    assert!(run.ok().contains("verified"), "{}", run.stdout);
    let store = Store::open(&out, &StoreOptions::new(1 << 20)).expect("backup opens");
    assert!(store.customer(&r).unwrap().is_some());
}

#[test]
fn demo_runs_the_story_and_its_numbers_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let run = outpost_in(
        dir.path(),
        &[
            "demo",
            "--exit",
            "--listen",
            "127.0.0.1:0",
            "--hq-listen",
            "127.0.0.1:0",
            "--tills",
            "2",
            "--customers",
            "5",
            "--outage-secs",
            "1",
        ],
        &[],
        Duration::from_secs(180),
    );
    let text = run.ok();
    let number = |label: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in\n{text}"));
        line.trim_start()[label.len()..]
            .split_whitespace()
            .next()
            .and_then(|n| n.trim_end_matches(',').parse().ok())
            .unwrap_or_else(|| panic!("no number in {line:?}"))
    };
    for want in [
        "diagnostics page   http://127.0.0.1:",
        "writes kept succeeding",
        "queue depth at the node",
        "the create failed at HQ",
        "held behind it",
        "fixed: the create and the held edit both completed",
        "demo result: ok",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let created = number("customers created by tills");
    assert_eq!(number("customers at HQ"), created, "{text}");
    // 2 tills x 5 customers, the outage's writes, the poison record and its neighbour.
    assert!(created >= 2 * 5 + 2, "{text}");
    assert_eq!(
        number("writes accepted"),
        number("operations confirmed by HQ"),
        "{text}"
    );
    assert_eq!(number("still failed or held"), 0, "{text}");
    assert!(text.contains("failed, then fixed           1, 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_file_is_checked_and_backed_up_on_a_recovered_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = common::Binary::spawn(dir.path());
    let api = node.api();
    let a = api.create_customer(&customer("Andres", "Ilves")).await;
    let r = a["customer_ref"].as_str().unwrap().to_string();
    node.kill9();
    let config = dir.path().join("outpost.toml");
    let config_arg = config.to_str().unwrap();
    let store_file = dir.path().join("data").join("outpost.redb");
    let before = std::fs::read(&store_file).unwrap();

    let run = outpost(dir.path(), &["doctor", "--config", config_arg]).await;
    let text = run.ok();
    assert!(text.contains("not closed cleanly"), "{text}");
    assert!(text.contains("customers: 1"), "{text}");
    assert!(text.contains("every page checksum verified"), "{text}");

    let out = dir.path().join("after-crash.redb");
    let run = outpost(
        dir.path(),
        &[
            "backup",
            "--offline",
            "--out",
            out.to_str().unwrap(),
            "--config",
            config_arg,
        ],
    )
    .await;
    assert!(run.ok().contains("verified"), "{}", run.stdout);
    // Neither command changed the original: the node recovers it itself.
    assert_eq!(std::fs::read(&store_file).unwrap(), before);
    let store = Store::open(&out, &StoreOptions::new(1 << 20)).expect("backup opens");
    assert!(store.customer(&r).unwrap().is_some());
}
