//! R7 figure: the peak request rate HQ sees when a fleet reconnects through throttling, with
//! the nodes' retries spread by full jitter against the same fleet without jitter.
//!
//! Fifty nodes queue work while HQ is down, then HQ answers 429 + `Retry-After: 1` for 4 s,
//! then accepts again (the scenario of `tests/fleet_reconnect.rs`). The figure is the most
//! requests HQ received in one 100 ms window from the start of the throttle until the fleet
//! drained; lower is better, so the ratio (jitter / none) should be below 1.
//!
//! Run: `cargo bench --bench fleet` (`OUTPOST_BENCH_SCALE=0.2` for a quick pass: 10 nodes).

mod common;

#[path = "../tests/fleet_support/mod.rs"]
mod fleet_support;

use std::time::Duration;

use fleet_support::{FleetOptions, FleetReport, run};
use outpost::config::RetryJitter;

const WINDOW: Duration = Duration::from_millis(100);

fn scenario(jitter: RetryJitter) -> FleetReport {
    let mut options = FleetOptions::standard(jitter);
    options.nodes = common::scaled(50, 5);
    // Idle polling once a second, so the figure is the retries, not the background polls.
    options.interval_ms = 1_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt.block_on(run(&options));
    let undrained: u64 = report.not_completed.values().sum();
    assert_eq!(undrained, 0, "the fleet did not drain");
    let early = report
        .gaps_after_429()
        .iter()
        .filter(|g| g.2 < Duration::from_secs(options.retry_after_s))
        .count();
    assert_eq!(early, 0, "Retry-After was not honoured");
    report
}

fn main() {
    outpost::process::configure_allocator();
    let nodes = common::scaled(50, 5);
    let none = scenario(RetryJitter::None);
    let full = scenario(RetryJitter::Full);
    let line = |name: &str, r: &FleetReport| {
        println!(
            "{name}: {} requests after the throttle began, {} answered 429, peak {} per 100 ms, \
             drained {:.1} s after the throttle",
            r.requests
                .iter()
                .filter(|q| q.at >= r.throttle_start)
                .count(),
            r.throttled(),
            r.peak_rate(WINDOW),
            r.drained_in.as_secs_f64()
        );
    };
    line("jitter none", &none);
    line("jitter full", &full);
    common::report(
        "R7 fleet reconnect through 429 + Retry-After",
        &[
            common::Figure {
                id: "r7-fleet-peak-rate",
                workload: format!("{nodes} nodes reconnect, 429 + Retry-After 1 s for 4 s"),
                value: full.peak_rate(WINDOW) as f64,
                unit: "req per 100 ms (full jitter)",
                baseline: none.peak_rate(WINDOW) as f64,
                baseline_unit: "req per 100 ms",
                baseline_name: "no jitter".into(),
                higher_is_better: false,
            },
            common::Figure {
                id: "r7-fleet-drain",
                workload: format!("{nodes} nodes, time to drain after the throttle"),
                value: full.drained_in.as_secs_f64(),
                unit: "s (full jitter)",
                baseline: none.drained_in.as_secs_f64(),
                baseline_unit: "s",
                baseline_name: "no jitter".into(),
                higher_is_better: false,
            },
        ],
    );
}
