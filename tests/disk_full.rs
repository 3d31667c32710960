//! Disk full while writing (R6): writes are refused with 507 `insufficient_storage` and no
//! acknowledgement, nothing acknowledged is lost, and the node recovers by itself — without a
//! restart — once space returns.
//!
//! Two disks: the simulated one of `outpost::store::faulty` (refuses every write with
//! `StorageFull` while full; always runs), and a real 4 MiB tmpfs filled with a ballast file
//! (runs when the test may mount, i.e. as root; otherwise it says so and passes).
//! `OUTPOST_DISKFULL_ROUNDS` (default 2) repeats the full/free cycle on the simulated disk.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Api, Binary, poll};
use outpost::node::Node;
use outpost::store::StoreLocation;
use outpost::store::faulty::FaultyDisk;
use serde_json::{Value, json};

/// Full/free rounds when `OUTPOST_DISKFULL_ROUNDS` is unset.
const CI_ROUNDS: usize = 2;
/// Longest the node may take to take writes again once space is back (its reopen pauses are
/// at most 5 s).
const RECOVERY: Duration = Duration::from_secs(20);

fn body(email: &str) -> Value {
    json!({"first_name": "Mari", "last_name": "Maasikas", "email": email})
}

/// Posts a create; returns (status, body).
async fn post(api: &Api, email: &str) -> (u16, Value) {
    let r = api.post("/v1/customers", &body(email)).await;
    (r.status.as_u16(), r.body)
}

/// Every operation's id → its customer e-mail, read through the API.
async fn stored(api: &Api) -> HashMap<String, String> {
    let ops = api.all_operations("", 500).await;
    let mut out = HashMap::new();
    for o in &ops {
        let id = o["operation_id"].as_str().unwrap().to_string();
        let c = api.customer(o["customer_ref"].as_str().unwrap()).await;
        let email = c["email"].as_str().unwrap_or_default().to_string();
        assert!(out.insert(id, email).is_none(), "operation listed twice");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_full_disk_refuses_writes_with_507_and_recovers_without_a_restart() {
    let rounds = std::env::var("OUTPOST_DISKFULL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CI_ROUNDS);
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::new();
    let node = tokio::time::timeout(
        common::WAIT,
        Node::start_on(
            &common::test_config(dir.path()),
            StoreLocation::faulty("simulated disk", &disk),
        ),
    )
    .await
    .expect("node start in time")
    .expect("node start");
    let api = Api::new(node.local_addr());
    let mut acked: HashMap<String, String> = HashMap::new();
    let mut refused: HashSet<String> = HashSet::new();
    for round in 0..rounds {
        for i in 0..20 {
            let email = format!("ok{round}x{i}@example.ee");
            let (status, b) = post(&api, &email).await;
            assert_eq!(status, 202, "{b}");
            acked.insert(b["operation_id"].as_str().unwrap().to_string(), email);
        }

        disk.set_full(true);
        // Concurrent tills while the disk is full: every write is refused, clearly.
        let mut tasks = Vec::new();
        for t in 0..8 {
            let api = api.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                for i in 0..15 {
                    let email = format!("full{round}x{t}x{i}@example.ee");
                    let (status, b) = post(&api, &email).await;
                    seen.push((email, status, b));
                }
                seen
            }));
        }
        for t in tasks {
            for (email, status, b) in t.await.unwrap() {
                assert_eq!(status, 507, "a write on a full disk: {b}");
                assert_eq!(b["error"], "insufficient_storage", "{b}");
                assert!(
                    b["message"].as_str().unwrap().contains("disk is full"),
                    "{b}"
                );
                refused.insert(email);
            }
        }
        // Reads answer, or (while the store waits for space to be reopened) say the disk is
        // full; they never fail otherwise.
        let r = api.get("/v1/sync/operations?limit=5").await;
        assert!(matches!(r.status.as_u16(), 200 | 507), "{:?}", r);

        disk.set_full(false);
        // No restart: the node takes writes again by itself.
        let first = poll(RECOVERY, "a write after space returned", || {
            let api = api.clone();
            let email = format!("back{round}@example.ee");
            async move {
                let (status, b) = post(&api, &email).await;
                match status {
                    202 => Some((b, email)),
                    507 | 503 => None,
                    other => panic!("unexpected {other}: {b}"),
                }
            }
        })
        .await;
        acked.insert(
            first.0["operation_id"].as_str().unwrap().to_string(),
            first.1,
        );
    }
    assert!(node.store().reopens() >= 1, "the store was reopened");
    assert!(disk.stats().refused_full > 0);

    let stored = stored(&api).await;
    for (id, email) in &acked {
        assert_eq!(
            stored.get(id),
            Some(email),
            "acknowledged operation {id} lost"
        );
    }
    for email in stored.values() {
        assert!(
            !refused.contains(email),
            "a refused write was kept: {email}"
        );
    }
    assert_eq!(
        stored.len(),
        acked.len(),
        "nothing but what was acknowledged"
    );
    common::stop_node(node).await;
}

/// A tmpfs of a few MiB mounted for one test, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts one at `dir`, or says why it cannot.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a child that has not quite exited must not keep the mount around.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// Fills the filesystem at `path` with a ballast file until it refuses; returns the file.
fn fill(path: &Path) -> PathBuf {
    let ballast = path.join("ballast");
    let mut f = std::fs::File::create(&ballast).unwrap();
    let chunk = vec![0xA5u8; 16 * 1024];
    for _ in 0..100_000 {
        match f.write_all(&chunk).and_then(|()| f.sync_data()) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                // Whatever part of the chunk fit stays: the disk is full to the byte.
                return ballast;
            }
        }
    }
    panic!("the small filesystem never filled up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_full_tmpfs_refuses_writes_with_507_loses_nothing_and_recovers() {
    real_full_tmpfs(false).await;
}

/// Regression: with its log on the full disk too, the node answered 500 — tracing-subscriber
/// reported each unwritable log line with `eprintln!`, which panicked (fixed in telemetry.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_full_tmpfs_with_the_log_on_it_too() {
    real_full_tmpfs(true).await;
}

/// Fills a real small tmpfs under a running binary. With `log_on_it`, the node's stderr log is
/// on the full disk too (as when it logs to a file beside its store).
async fn real_full_tmpfs(log_on_it: bool) {
    let outer = tempfile::tempdir().unwrap();
    // The node's data dir is `data` under the directory it is started in.
    let mnt = if log_on_it {
        outer.path().join("small")
    } else {
        outer.path().join("data")
    };
    let tmpfs = match Tmpfs::mount(&mnt, "4m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("skipped: cannot mount a small tmpfs here ({why})");
            return;
        }
    };
    let home = if log_on_it {
        tmpfs.dir.clone()
    } else {
        outer.path().to_path_buf()
    };
    let data = home.join("data");
    let mut bin = Binary::spawn(&home);
    let api = bin.api();
    let mut acked: HashMap<String, String> = HashMap::new();
    for i in 0..10 {
        let email = format!("before{i}@example.ee");
        let (status, b) = post(&api, &email).await;
        assert_eq!(status, 202, "{b}");
        acked.insert(b["operation_id"].as_str().unwrap().to_string(), email);
    }
    std::fs::create_dir_all(&data).unwrap();
    let ballast = fill(&data);

    // Writes go on until the store file must grow and cannot. Some may still fit in pages the
    // file already has: those are acknowledged and must be kept.
    let mut refused = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while refused.len() < 10 {
        assert!(
            Instant::now() < deadline,
            "the full disk never refused a write"
        );
        let email = format!("full{i}@example.ee");
        i += 1;
        let (status, b) = post(&api, &email).await;
        match status {
            202 => {
                acked.insert(b["operation_id"].as_str().unwrap().to_string(), email);
            }
            507 => {
                assert_eq!(b["error"], "insufficient_storage", "{b}");
                refused.insert(email);
            }
            other => panic!(
                "a write on a full disk answered {other}: {b}; node stderr:\n{}",
                bin.stderr()
            ),
        }
    }
    eprintln!(
        "full tmpfs: {} writes acknowledged before the file had to grow, {} refused",
        i - refused.len(),
        refused.len()
    );

    std::fs::remove_file(&ballast).unwrap();
    let back = poll(RECOVERY, "a write after space returned", || {
        let api = api.clone();
        async move {
            let (status, b) = post(&api, "back@example.ee").await;
            match status {
                202 => Some(b),
                507 | 503 => None,
                other => panic!("unexpected {other}: {b}"),
            }
        }
    })
    .await;
    acked.insert(
        back["operation_id"].as_str().unwrap().to_string(),
        "back@example.ee".into(),
    );
    assert!(bin.running(), "the node recovered without a restart");

    // And after a kill -9 and restart on the same small disk, exactly what was acknowledged.
    bin.kill9();
    let bin = Binary::spawn(&home);
    let stored = stored(&bin.api()).await;
    for (id, email) in &acked {
        assert_eq!(stored.get(id), Some(email), "acknowledged {id} lost");
    }
    for email in stored.values() {
        assert!(
            !refused.contains(email),
            "a refused write was kept: {email}"
        );
    }
    assert_eq!(stored.len(), acked.len());
    drop(bin);
    drop(tmpfs);
}
