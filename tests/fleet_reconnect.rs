//! A fleet reconnecting at once (R7): fifty in-process nodes queue work while HQ is down, then
//! HQ returns answering 429 with `Retry-After`, then lets them in. Checked: every node drains
//! fully (every operation completed, each exactly once at HQ); no node sends the same request
//! again sooner than `Retry-After` after a 429; no node gives up. The peak request rate HQ sees
//! with and without jitter is a timing figure: `cargo bench --bench fleet` prints it.
//!
//! `OUTPOST_FLEET_NODES` (default 50) and `OUTPOST_FLEET_OPS` (default 20) scale the fleet.

mod fleet_support;

use std::time::Duration;

use fleet_support::{FleetOptions, run};
use outpost::config::RetryJitter;

fn options(jitter: RetryJitter) -> FleetOptions {
    let mut o = FleetOptions::standard(jitter);
    if let Some(n) = std::env::var("OUTPOST_FLEET_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        o.nodes = n;
    }
    if let Some(n) = std::env::var("OUTPOST_FLEET_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        o.ops_per_node = n;
    }
    o
}

async fn check(jitter: RetryJitter) {
    let o = options(jitter);
    let report = run(&o).await;
    let incomplete: Vec<_> = report
        .not_completed
        .iter()
        .filter(|(_, n)| **n > 0)
        .collect();
    assert!(
        incomplete.is_empty(),
        "nodes not drained after {:?}: {incomplete:?}",
        report.drained_in
    );
    for (store, done) in &report.completed {
        assert_eq!(*done, o.ops_per_node as u64, "{store} completed");
    }
    assert_eq!(
        report.hq_customers,
        o.nodes * o.ops_per_node,
        "each queued create reached HQ exactly once"
    );
    assert!(
        report.throttled() > 0,
        "HQ throttled nobody: the scenario did not happen"
    );
    let gaps = report.gaps_after_429();
    assert!(!gaps.is_empty());
    let retry_after = Duration::from_secs(o.retry_after_s);
    let early: Vec<_> = gaps
        .iter()
        .filter(|(_, _, gap)| *gap < retry_after)
        .collect();
    assert!(
        early.is_empty(),
        "{} requests came back sooner than Retry-After, e.g. {:?}",
        early.len(),
        &early[..early.len().min(5)]
    );
    let stores: std::collections::HashSet<&str> = gaps.iter().map(|(s, _, _)| s.as_str()).collect();
    assert!(
        stores.iter().all(|s| !s.is_empty()),
        "every node request names its store"
    );
    eprintln!(
        "fleet ({jitter:?}): {} nodes, {} requests, {} answered 429, {} retries after a 429 \
         (shortest gap {:?}), drained {:?} after the throttle",
        o.nodes,
        report.requests.len(),
        report.throttled(),
        gaps.len(),
        gaps.iter().map(|g| g.2).min().unwrap_or_default(),
        report.drained_in
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_reconnect_through_429_honour_retry_after_and_drain() {
    check(RetryJitter::Full).await;
}

/// Without jitter the fleet is burstier, but the rules hold all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_jitter_retry_after_is_still_honoured_and_every_node_drains() {
    check(RetryJitter::None).await;
}
