//! P2: durable in-process enqueue of customer creates by 64 concurrent submitters, with group
//! commit, against the same writer committing one transaction per operation.
//!
//! Run: `cargo bench --bench enqueue` (`OUTPOST_BENCH_SCALE=0.1` for a quick pass).

mod common;

use std::time::Instant;

use outpost::domain::NewCustomer;
use outpost::store::writer::{self, Command, Submission, WriterOptions};
use outpost::store::{Store, StoreOptions};

const SUBMITTERS: usize = 64;

fn customer(i: usize) -> NewCustomer {
    NewCustomer {
        first_name: "Õie".into(),
        last_name: format!("Täht{}", i % 1000),
        email: Some(format!("oie{i}@example.ee")),
        phone: Some(format!("+372 5{:07}", i)),
        customer_group: Some("RETAIL".into()),
        language: Some("et-EE".into()),
    }
}

/// Acknowledged creates per second with `group_commit_max` writes per transaction.
fn run(total: usize, group_commit_max: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(
        &dir.path().join("bench.redb"),
        &StoreOptions {
            cache_bytes: 64 << 20,
        },
    )
    .expect("open store");
    let (handle, thread) = writer::spawn(
        store,
        WriterOptions {
            store_id: "S0001".into(),
            queue: 4096,
            group_commit_max,
        },
    )
    .expect("writer");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let per = total / SUBMITTERS;
    let elapsed = rt.block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for s in 0..SUBMITTERS {
            let handle = handle.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per {
                    handle
                        .execute(Command::Submit(Submission::NewCustomer(customer(
                            s * per + i,
                        ))))
                        .await
                        .expect("create acknowledged");
                }
            }));
        }
        for t in tasks {
            t.await.expect("submitter");
        }
        start.elapsed()
    });
    drop(handle);
    thread.join().expect("writer thread");
    (per * SUBMITTERS) as f64 / elapsed.as_secs_f64()
}

fn main() {
    let group_total = common::scaled(200_000, 6_400);
    let single_total = common::scaled(10_000, 640);
    let group = run(group_total, 512);
    let single = run(single_total, 1);
    common::report(
        "P2 in-process durable enqueue (64 submitters)",
        &[common::Figure {
            id: "p2-group-commit",
            workload: format!("{group_total} creates, group commit ≤ 512"),
            value: group,
            unit: "ops/s",
            baseline: single,
            baseline_unit: "ops/s",
            baseline_name: format!("{single_total} creates, one commit per op"),
        }],
    );
}
