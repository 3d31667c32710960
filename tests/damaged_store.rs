//! A damaged store file (R9): detected at start with a clear error and the way out, never
//! silently replaced by an empty store, and left byte for byte as it was.
//!
//! A store with known content is made by the real binary and stopped cleanly; then garbage is
//! written over part of the file (the header, the format fields, random pages, the tail), or the
//! file is truncated or replaced. The binary started on it must exit non-zero naming the file,
//! saying it is damaged and how to restore it (`outpost backup`), without touching it — or, when
//! the garbage hit only pages the store does not use, start with every operation intact.
//! `OUTPOST_DAMAGE_SEEDS` (default 6) sets how many random-page cases run.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Binary, WAIT};
use outpost::node::{Node, NodeError};
use outpost::store::StoreError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Random-page cases when `OUTPOST_DAMAGE_SEEDS` is unset.
const CI_SEEDS: u64 = 6;
/// redb's page size.
const PAGE: usize = 4096;

/// Makes a store with `n` customers through the real binary, stops it cleanly, and returns
/// the operation ids it acknowledged.
async fn make_store(dir: &Path, n: usize) -> HashSet<String> {
    let mut bin = Binary::spawn(dir);
    let api = bin.api();
    let mut ids = HashSet::new();
    for i in 0..n {
        let b = api
            .create_customer(&json!({"first_name": "Mari", "last_name": "Maasikas",
                                     "email": format!("m{i}@example.ee")}))
            .await;
        ids.insert(b["operation_id"].as_str().unwrap().to_string());
    }
    let status = bin.terminate();
    assert!(status.success(), "{}", bin.stderr());
    ids
}

/// Runs `outpost serve` on `dir` (config written by `Binary::spawn`) expecting it to exit;
/// returns (exit status, stderr), or `None` if it started serving instead (then it is killed
/// as soon as it says so).
fn run_to_exit(dir: &Path) -> Option<(std::process::ExitStatus, String)> {
    use std::io::BufRead;
    let stderr_path = dir.join("damaged-start.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .arg("serve")
        .arg("--config")
        .arg(dir.join("outpost.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .spawn()
        .expect("spawn outpost");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    // Reads stdout to its end; tells when the node says it is serving.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("outpost listening on") {
                let _ = tx.send(());
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            return Some((status, err));
        }
        if rx.try_recv().is_ok() || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Either the binary refuses the file as damaged (clearly, leaving it untouched), or it serves
/// every acknowledged operation. Returns whether it refused.
async fn refused_or_intact(
    dir: &Path,
    file: &Path,
    damaged: &[u8],
    ids: &HashSet<String>,
    what: &str,
) -> bool {
    std::fs::write(file, damaged).unwrap();
    match run_to_exit(dir) {
        Some((status, stderr)) => {
            assert!(!status.success(), "{what}: exit status {status}");
            let name = file.display().to_string();
            assert!(
                stderr.contains(&name),
                "{what}: stderr does not name {name}:\n{stderr}"
            );
            assert!(stderr.contains("damaged"), "{what}: {stderr}");
            assert!(stderr.contains("outpost backup"), "{what}: {stderr}");
            assert!(stderr.contains("left untouched"), "{what}: {stderr}");
            assert!(
                std::fs::read(file).unwrap() == damaged,
                "{what}: the damaged file was changed"
            );
            true
        }
        None => {
            // It started: the garbage was in pages the store does not use. Everything must be
            // there.
            let bin = Binary::spawn(dir);
            let ops = bin.api().all_operations("", 500).await;
            let got: HashSet<String> = ops
                .iter()
                .map(|o| o["operation_id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(got.len(), ops.len(), "{what}: an operation listed twice");
            assert_eq!(&got, ids, "{what}: the store started with other content");
            drop(bin);
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_is_refused_at_start_with_the_way_out_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let ids = make_store(dir.path(), 300).await;
    let file = dir.path().join("data").join("outpost.redb");
    let original = std::fs::read(&file).unwrap();
    let len = original.len();
    assert!(len > 16 * PAGE, "a store of some size: {len}");

    let garbage = |bytes: &mut Vec<u8>, range: std::ops::Range<usize>| {
        for (i, b) in bytes[range].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37) ^ 0x5A;
        }
    };
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let always_refused: Vec<(&str, Damage)> = vec![
        ("magic number", Box::new(move |b| garbage(b, 0..64))),
        ("header fields", Box::new(move |b| garbage(b, 64..512))),
        ("truncated to half", Box::new(move |b| b.truncate(len / 2))),
        ("all zeros", Box::new(|b| b.iter_mut().for_each(|x| *x = 0))),
        (
            "a text file",
            Box::new(|b| *b = b"this is not a store\n".to_vec()),
        ),
    ];
    for (what, damage) in &always_refused {
        let mut bytes = original.clone();
        damage(&mut bytes);
        assert!(
            refused_or_intact(dir.path(), &file, &bytes, &ids, what).await,
            "{what}: the node started on a damaged store"
        );
    }

    // Garbage over pages: refused, or harmless when the store does not use the page (redb
    // checks every page of the committed trees at open).
    let mut refused = 0;
    let pages: Vec<(&str, Damage)> = vec![
        (
            "a page in the middle",
            Box::new(move |b| {
                let p = len / 2 / PAGE * PAGE;
                garbage(b, p..p + PAGE)
            }),
        ),
        (
            "the last pages",
            Box::new(move |b| garbage(b, len - 4 * PAGE..len)),
        ),
    ];
    for (what, damage) in &pages {
        let mut bytes = original.clone();
        damage(&mut bytes);
        refused += usize::from(refused_or_intact(dir.path(), &file, &bytes, &ids, what).await);
        std::fs::write(&file, &original).unwrap();
    }

    // Garbage over random pages, by seed.
    let seeds = std::env::var("OUTPOST_DAMAGE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CI_SEEDS);
    for seed in 0..seeds {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut bytes = original.clone();
        let pages = rng.gen_range(1..=3);
        for _ in 0..pages {
            let p = rng.gen_range(1..len / PAGE) * PAGE;
            let n = rng.gen_range(1..=PAGE);
            let at = p + rng.gen_range(0..=PAGE - n);
            rng.fill(&mut bytes[at..at + n]);
        }
        let what = format!("random pages, seed {seed}");
        refused += usize::from(refused_or_intact(dir.path(), &file, &bytes, &ids, &what).await);
        // The next case starts from the original again.
        std::fs::write(&file, &original).unwrap();
    }
    eprintln!(
        "page damage: {refused} of {} cases refused, the rest harmless",
        seeds + 2
    );
    assert!(refused > 0, "no page damage was ever detected");

    // The undamaged file still opens with everything (the checks above did not spoil it).
    std::fs::write(&file, &original).unwrap();
    let bin = Binary::spawn(dir.path());
    assert_eq!(bin.api().op_count().await, ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_start_in_process_returns_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::test_config(dir.path());
    let node = common::start_node_with(config.clone()).await;
    let api = common::Api::new(node.local_addr());
    api.create_customer(&common::customer("Mari", "Maasikas"))
        .await;
    common::stop_node(node).await;
    let file = config.store_path();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0..64].fill(0xEE);
    std::fs::write(&file, &bytes).unwrap();
    match Node::start(&config).await {
        Err(NodeError::Store(StoreError::Damaged { path, reason })) => {
            assert_eq!(path, file.display().to_string());
            assert!(!reason.is_empty());
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a node started on a damaged store"),
    }
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "left untouched");
}
