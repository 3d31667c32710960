//! P6: CDX 1010 full apply of 1,000,000 customers, index maintenance included, through the
//! node's real apply path: each customer is built from HQ's wire record by
//! `sync::cdx::copy_from_wire` exactly as the downloader builds it, and the whole download is
//! applied by the writer's `Command::ApplyCustomers` in one transaction, as the downloader
//! applies it. (HTTP paging from the emulator is not part of the figure: seeding a million
//! customers into the emulator over its admin API alone would take longer than the apply.)
//! Beside it: the same customers and terms loaded into the SQLite baseline in one transaction.
//!
//! Run: `cargo bench --bench cdx_apply` (`OUTPOST_BENCH_SCALE=0.02` for a quick pass).

mod common;

use std::time::Instant;

use common::Figure;
use outpost::store::cdx::HeldPackage;
use outpost::store::writer::Command;

fn main() {
    outpost::process::configure_allocator();
    let total = common::scaled(1_000_000, 10_000);
    let dir = common::scratch_dir();
    let store = common::open_store(&dir.path().join("bench.redb"));
    let rt = common::runtime();
    let (writer, thread) = common::start_writer(&store, 512, &rt);
    let now = outpost::store::now_ms();
    let copies: Vec<_> = (0..total).map(|i| common::hq_copy(i, now)).collect();
    let elapsed = rt.block_on(async {
        let start = Instant::now();
        writer
            .execute(Command::ApplyCustomers {
                package: HeldPackage {
                    version: total as u64,
                    received_at_ms: now,
                    generated_at_ms: now,
                    body: serde_json::json!({ "customers": total }),
                },
                copies,
            })
            .await
            .expect("applied");
        start.elapsed()
    });
    assert_eq!(store.customer_count().expect("count") as usize, total);
    drop(writer);
    thread.join().expect("writer");
    let rate = total as f64 / elapsed.as_secs_f64();

    let mut conn = common::sqlite::open(&dir.path().join("bench.db"));
    let start = Instant::now();
    common::sqlite::load_customers(
        &mut conn,
        (0..total).map(|i| common::hq_copy(i, now)),
        total,
    );
    let lite = total as f64 / start.elapsed().as_secs_f64();

    common::report(
        "P6 CDX 1010 full apply",
        &[
            Figure::higher(
                "p6-cdx-full-apply",
                format!(
                    "{total} customers, one transaction, search index included ({:.1} s)",
                    elapsed.as_secs_f64()
                ),
                rate,
                "customers/s",
                100_000.0,
                "customers/s",
                "target",
            ),
            Figure::higher(
                "p6-cdx-full-apply-vs-sqlite",
                format!("{total} customers, one transaction"),
                rate,
                "customers/s",
                lite,
                "customers/s",
                "SQLite: same views and terms, one transaction",
            ),
        ],
    );
}
