//! P2 and P3: durable in-process enqueue of customer creates by 64 concurrent submitters, with
//! group commit, against (a) the same writer committing one transaction per operation and (b)
//! the same queue kept in SQLite (WAL, synchronous=FULL) with the same batching; and the fsync
//! floor of this disk, measured in the same run.
//!
//! Run: `cargo bench --bench enqueue` (`OUTPOST_BENCH_SCALE=0.02` for a quick pass).

mod common;

use std::time::{Duration, Instant};

use common::Figure;

const SUBMITTERS: usize = 64;
const GROUP: usize = 512;

/// Acknowledged creates per second with `group_commit_max` writes per transaction.
fn node(total: usize, group_commit_max: usize) -> f64 {
    node_with(total, group_commit_max, false)
}

/// As [`node`], with redb's quick repair on or off.
fn node_with(total: usize, group_commit_max: usize, quick_repair: bool) -> f64 {
    let dir = common::scratch_dir();
    let store = outpost::store::Store::open(
        &dir.path().join("bench.redb"),
        &outpost::store::StoreOptions {
            cache_bytes: 64 << 20,
            quick_repair,
            ..outpost::store::StoreOptions::new(64 << 20)
        },
    )
    .expect("open store");
    let rt = common::runtime();
    let (writer, thread) = common::start_writer(&store, group_commit_max, &rt);
    let elapsed = rt.block_on(common::enqueue(&writer, 0, total, SUBMITTERS));
    drop(writer);
    thread.join().expect("writer thread");
    (total / SUBMITTERS * SUBMITTERS) as f64 / elapsed.as_secs_f64()
}

/// The same creates into the SQLite queue with the same batching.
fn sqlite(total: usize, group_commit_max: usize) -> f64 {
    let dir = common::scratch_dir();
    let (queue, thread) =
        common::sqlite::Queue::spawn(&dir.path().join("bench.db"), group_commit_max);
    let rt = common::runtime();
    let per = total / SUBMITTERS;
    let elapsed = rt.block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for s in 0..SUBMITTERS {
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per {
                    queue.create(common::customer(s * per + i)).await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("submitter");
        }
        start.elapsed()
    });
    drop(queue);
    thread.join().expect("sqlite thread");
    (per * SUBMITTERS) as f64 / elapsed.as_secs_f64()
}

fn main() {
    outpost::process::configure_allocator();
    let group_total = common::scaled(200_000, 6_400);
    let single_total = common::scaled(5_000, 640);
    let dir = common::scratch_dir();
    let fsyncs = common::fsync_rate(dir.path(), Duration::from_secs(3));
    let group = node(group_total, GROUP);
    let lite = sqlite(group_total, GROUP);
    let single = node(single_total, 1);
    let quick_repair = node_with(group_total, GROUP, true);
    let fsyncs_after = common::fsync_rate(dir.path(), Duration::from_secs(3));
    let fsync = (fsyncs + fsyncs_after) / 2.0;
    common::report(
        "P2/P3 in-process durable enqueue (64 submitters)",
        &[
            Figure::higher(
                "p2-group-commit-vs-single",
                format!("{group_total} creates, group commit ≤ {GROUP}"),
                group,
                "ops/s",
                single,
                "ops/s",
                format!("{single_total} creates, one commit per op"),
            ),
            Figure::higher(
                "p2-group-commit-vs-sqlite",
                format!("{group_total} creates, group commit ≤ {GROUP}"),
                group,
                "ops/s",
                lite,
                "ops/s",
                format!(
                    "SQLite WAL synchronous=FULL, same queue and batching, {group_total} creates"
                ),
            ),
            Figure::higher(
                "p2-group-commit-quick-repair",
                format!("{group_total} creates, group commit ≤ {GROUP}, quick repair on"),
                quick_repair,
                "ops/s",
                group,
                "ops/s",
                "the same, quick repair off (redb's default, the node's choice)",
            ),
            Figure::higher(
                "p3-fsync-floor",
                format!(
                    "{group_total} creates, group commit ≤ {GROUP} (ratio = acked ops per fsync)"
                ),
                group,
                "ops/s",
                fsync,
                "fsyncs/s",
                format!(
                    "this disk's 4 KiB write+fdatasync rate ({fsyncs:.0} before, {fsyncs_after:.0} after)"
                ),
            ),
        ],
    );
}
