//! P4: backlog drain. 100,000 customer creates are queued at the node (through the store's
//! writer, group commit), then the node's uploader and outcome puller run against the HQ
//! emulator in-process over loopback (HQ in async mode, its sync job every 20 ms) until every
//! operation is confirmed (completed at the node). Figure: operations/s end to end, from the
//! sync tasks' start to the last confirmation.
//!
//! Run: `cargo bench --bench drain` (`OUTPOST_BENCH_SCALE=0.02` for a quick pass).

mod common;

use std::time::{Duration, Instant};

use common::Figure;
use outpost::config::Config;
use outpost::domain::OpState;
use outpost::hq::client::HqClient;
use outpost::hq::emulator::{HqEmulator, HqEmulatorConfig};
use outpost::store::OpFilter;
use outpost::sync::{SyncConfig, SyncTasks};

fn main() {
    outpost::process::configure_allocator();
    let total = common::scaled(100_000, 2_000) / 64 * 64;
    let dir = common::scratch_dir();
    let store = common::open_store(&dir.path().join("bench.redb"));
    let rt = common::runtime();
    let (writer, thread) = common::start_writer(&store, 512, &rt);
    let (elapsed, config) = rt.block_on(async {
        let hq = HqEmulator::start(HqEmulatorConfig {
            sync_interval: Some(Duration::from_millis(20)),
            ..HqEmulatorConfig::local()
        })
        .await
        .expect("hq emulator");
        hq.enable_async();
        let queued = common::enqueue(&writer, 0, total, 64).await;
        eprintln!("queued {total} creates in {:.1} s", queued.as_secs_f64());
        let mut config = Config::for_dir(dir.path());
        config.hq.url = hq.url();
        let sync_config = SyncConfig::from_config(&config);
        let client = HqClient::from_config(&config).expect("client");
        let start = Instant::now();
        let sync = SyncTasks::spawn(store.clone(), writer.clone(), client, sync_config.clone());
        let deadline = Duration::from_secs(600);
        // Polled by asking whether any operation is left in each other state (one index entry
        // read each): counting the completed ones (a scan of up to 100,000 entries every 10 ms)
        // took a quarter of a core from the node it measured.
        let unconfirmed = |state| OpFilter {
            state: Some(state),
            after_seq: None,
            limit: 1,
        };
        loop {
            let left = OpState::ALL
                .into_iter()
                .filter(|s| *s != OpState::Completed)
                .find(|s| !store.operations(&unconfirmed(*s)).expect("read").is_empty());
            let Some(state) = left else { break };
            assert!(
                start.elapsed() < deadline,
                "drain did not finish: {state:?} left, {:?}",
                store.operation_counts()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = start.elapsed();
        let counts = store.operation_counts().expect("counts");
        assert!(
            counts.contains(&(OpState::Completed, total as u64)),
            "every create confirmed: {counts:?}"
        );
        sync.shutdown().await;
        hq.shutdown().await;
        (elapsed, sync_config)
    });
    drop(writer);
    thread.join().expect("writer");
    let rate = total as f64 / elapsed.as_secs_f64();
    common::report(
        "P4 backlog drain to the HQ emulator over loopback",
        &[Figure::higher(
            "p4-backlog-drain",
            format!(
                "{total} queued creates uploaded and confirmed ({:.1} s; batch {}, outcome page {}, idle interval {} ms)",
                elapsed.as_secs_f64(),
                config.batch_size,
                config.outcome_page,
                config.interval.as_millis()
            ),
            rate,
            "ops/s",
            20_000.0,
            "ops/s",
            "target",
        )],
    );
}
