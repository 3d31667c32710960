//! P2 and P3: durable in-process enqueue of customer creates by 64 concurrent submitters, with
//! group commit, against (a) the same writer committing one transaction per operation, the two
//! in turn on one store, and (b) the same queue kept in SQLite (WAL, synchronous=FULL) with the
//! same batching; and the fsync floor of this disk, measured in the same run.
//!
//! Run: `cargo bench --bench enqueue` (`OUTPOST_BENCH_SCALE=0.02` for a quick pass).

mod common;

use std::time::{Duration, Instant};

use common::Figure;
use outpost::store::Store;
use outpost::store::writer::MergeOptions;

const SUBMITTERS: usize = 64;
const GROUP: usize = 512;
/// Turns of the group commit and its baseline on one store (see [`interleaved`]).
const ROUNDS: usize = 10;

/// Opens a fresh store for a run, with redb's quick repair on or off.
fn open_store(dir: &std::path::Path, quick_repair: bool) -> Store {
    common::open_store_with(&dir.join("bench.redb"), quick_repair)
}

/// Acknowledged creates per second with `group_commit_max` writes per transaction, on a
/// fresh store.
fn node(total: usize, group_commit_max: usize) -> f64 {
    node_with(total, group_commit_max, false)
}

/// As [`node`], with redb's quick repair on or off.
fn node_with(total: usize, group_commit_max: usize, quick_repair: bool) -> f64 {
    let dir = common::scratch_dir();
    let store = open_store(dir.path(), quick_repair);
    let rt = common::runtime();
    let (writer, thread) = common::start_writer(&store, group_commit_max, &rt);
    let elapsed = rt.block_on(common::enqueue(&writer, 0, total, SUBMITTERS));
    drop(writer);
    thread.join().expect("writer thread");
    (total / SUBMITTERS * SUBMITTERS) as f64 / elapsed.as_secs_f64()
}

/// Group commit and one commit per create, measured in turn on one store.
struct Interleaved {
    /// Creates per second with group commit.
    group: f64,
    /// Creates per second with one commit each.
    single: f64,
    /// The lowest and highest ratio of one round.
    rounds: (f64, f64),
    /// Creates of each part of a round.
    parts: (usize, usize),
}

/// Runs [`ROUNDS`] rounds on one store, each `group_total / ROUNDS` creates with group commit,
/// then `single_total / ROUNDS` with one commit each. Both ways see the same store, growing,
/// and the same minutes of a shared machine (run apart, they saw a store 40 times smaller and
/// a different hour). A group part is timed from its first create until the search terms log
/// is merged into the index ([`timed_part`]), its own terms and the few the single part before
/// it left: with the node's merge policy and nothing drained, whichever part ran when the log
/// grew long paid for merging the other's terms. A single part's terms (a few thousand) are
/// left to the next group part's merge: merged apart, in a batch that small, each term would
/// copy an index leaf of its own, a cost a node committing one by one does not pay either (its
/// log merges when long, like any other).
fn interleaved(group_total: usize, single_total: usize) -> Interleaved {
    let dir = common::scratch_dir();
    let store = open_store(dir.path(), false);
    let rt = common::runtime();
    let per_part = |total: usize| (total / ROUNDS / SUBMITTERS).max(1) * SUBMITTERS;
    let (group_part, single_part) = (per_part(group_total), per_part(single_total));
    let (mut group_time, mut single_time) = (Duration::ZERO, Duration::ZERO);
    let (mut lowest, mut highest) = (f64::MAX, 0.0_f64);
    let mut offset = 0;
    for _ in 0..ROUNDS {
        let group = timed_part(&store, &rt, GROUP, offset, group_part, Merged::Waited);
        offset += group_part;
        let single = timed_part(&store, &rt, 1, offset, single_part, Merged::Left);
        offset += single_part;
        let ratio =
            (group_part as f64 / group.as_secs_f64()) / (single_part as f64 / single.as_secs_f64());
        (lowest, highest) = (lowest.min(ratio), highest.max(ratio));
        group_time += group;
        single_time += single;
    }
    Interleaved {
        group: (ROUNDS * group_part) as f64 / group_time.as_secs_f64(),
        single: (ROUNDS * single_part) as f64 / single_time.as_secs_f64(),
        rounds: (lowest, highest),
        parts: (group_part, single_part),
    }
}

/// Whether a part's time includes merging the search terms log.
#[derive(Clone, Copy, PartialEq)]
enum Merged {
    /// Timed until the log is merged.
    Waited,
    /// Timed until the last create is acknowledged; the log is left as it is.
    Left,
}

/// Runs `n` creates from customer `offset` on through a writer committing up to
/// `group_commit_max` of them per transaction, and returns the time from the first create until
/// the last is acknowledged, or with [`Merged::Waited`] until the search terms log is merged.
/// The writer merges as the node does, but after a quiet spell of 1 ms instead of 250: its
/// merge starts as soon as the creates end, not a quarter of a second later.
fn timed_part(
    store: &Store,
    rt: &tokio::runtime::Runtime,
    group_commit_max: usize,
    offset: usize,
    n: usize,
    merged: Merged,
) -> Duration {
    let merge = MergeOptions {
        idle_after: Duration::from_millis(1),
        ..MergeOptions::default()
    };
    let (writer, thread) = common::start_writer_merging(store, group_commit_max, rt, merge);
    let start = Instant::now();
    rt.block_on(common::enqueue(&writer, offset, n, SUBMITTERS));
    if merged == Merged::Waited {
        let limit = Duration::from_secs(120);
        while store.search_log_entries() > 0 && start.elapsed() < limit {
            std::thread::sleep(Duration::from_micros(100));
        }
        assert_eq!(store.search_log_entries(), 0, "log merged within {limit:?}");
    }
    let elapsed = start.elapsed();
    drop(writer);
    thread.join().expect("writer thread");
    elapsed
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
    let single_total = common::scaled(5_120, 640);
    let dir = common::scratch_dir();
    let fsyncs = common::fsync_rate(dir.path(), Duration::from_secs(3));
    let turns = interleaved(group_total, single_total);
    let lite = sqlite(group_total, GROUP);
    let fresh_group = node(group_total, GROUP);
    let fresh_single = node(single_total, 1);
    let quick_repair = node_with(group_total, GROUP, true);
    let fsyncs_after = common::fsync_rate(dir.path(), Duration::from_secs(3));
    let fsync = (fsyncs + fsyncs_after) / 2.0;
    let (group_part, single_part) = turns.parts;
    let group_work = format!(
        "{ROUNDS}×{group_part} creates, group commit ≤ {GROUP}, in turn with the baseline on one store, each group part timed until the search terms log is merged"
    );
    common::report(
        "P2/P3 in-process durable enqueue (64 submitters)",
        &[
            Figure::higher(
                "p2-group-commit-vs-single",
                format!(
                    "{group_work}; the rounds' ratios {:.1}–{:.1}×",
                    turns.rounds.0, turns.rounds.1
                ),
                turns.group,
                "ops/s",
                turns.single,
                "ops/s",
                format!(
                    "{ROUNDS}×{single_part} creates, one commit per op, in turn on the same store, its terms merged by the next group part"
                ),
            ),
            Figure::higher(
                "p2-group-commit-vs-sqlite",
                group_work.clone(),
                turns.group,
                "ops/s",
                lite,
                "ops/s",
                format!(
                    "SQLite WAL synchronous=FULL, same queue and batching, {group_total} creates on a fresh file"
                ),
            ),
            Figure::higher(
                "p2-fresh-stores-group-vs-single",
                format!("{group_total} creates, group commit ≤ {GROUP}, on a fresh store"),
                fresh_group,
                "ops/s",
                fresh_single,
                "ops/s",
                format!(
                    "{single_total} creates, one commit per op, on a fresh store (information: the two apart, as measured before step 39)"
                ),
            ),
            Figure::higher(
                "p2-group-commit-quick-repair",
                format!(
                    "{group_total} creates, group commit ≤ {GROUP}, quick repair on, fresh store"
                ),
                quick_repair,
                "ops/s",
                fresh_group,
                "ops/s",
                "the same, quick repair off (redb's default, the node's choice)",
            ),
            Figure::higher(
                "p3-fsync-floor",
                format!("{group_work} (ratio = acked ops per fsync)"),
                turns.group,
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
