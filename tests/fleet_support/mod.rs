//! A fleet reconnecting after a regional outage (R7), shared by `tests/fleet_reconnect.rs`
//! (behaviour) and `benches/fleet.rs` (HQ's peak request rate, jitter against none).
//!
//! Many in-process nodes point at one in-process HQ emulator. HQ goes offline; every node
//! queues work; every node then tries HQ at the same instant (as when a region's power or
//! network returns) and backs off; HQ comes back answering 429 with `Retry-After`; then the
//! throttle is lifted and every node must drain. HQ's request log (with the calling store
//! of each request) tells how the retries spread and whether `Retry-After` was honoured.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use outpost::config::{Config, RetryJitter};
use outpost::domain::OpState;
use outpost::hq::emulator::{Faults, HqEmulator, HqEmulatorConfig, RequestRecord};
use outpost::node::Node;
use serde_json::json;

/// The scenario.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Nodes in the fleet.
    pub nodes: usize,
    /// Creates queued at each node while HQ is down.
    pub ops_per_node: usize,
    /// How the nodes spread their retries.
    pub jitter: RetryJitter,
    /// How long HQ stays offline after the work is queued.
    pub offline_for: Duration,
    /// How long HQ then answers 429.
    pub throttle_for: Duration,
    /// The `Retry-After` HQ sends with each 429, seconds.
    pub retry_after_s: u64,
    /// Longest the fleet may take to drain once HQ accepts work again.
    pub drain_within: Duration,
    /// Each node's `upload.interval_ms` (also its outcome-poll interval when idle).
    pub interval_ms: u64,
}

impl FleetOptions {
    /// Fifty nodes, twenty creates each, HQ down 2 s, then 429 + Retry-After 1 for 4 s.
    pub fn standard(jitter: RetryJitter) -> Self {
        FleetOptions {
            nodes: 50,
            ops_per_node: 20,
            jitter,
            offline_for: Duration::from_secs(2),
            throttle_for: Duration::from_secs(4),
            retry_after_s: 1,
            drain_within: Duration::from_secs(120),
            interval_ms: 100,
        }
    }
}

/// What happened.
#[derive(Debug)]
pub struct FleetReport {
    /// Every node request HQ saw, oldest first.
    pub requests: Vec<RequestRecord>,
    /// When HQ started throttling.
    pub throttle_start: Instant,
    /// When HQ stopped throttling.
    pub throttle_end: Instant,
    /// From the end of the throttle until every node had every operation completed.
    pub drained_in: Duration,
    /// Operations completed per node (store id → count).
    pub completed: HashMap<String, u64>,
    /// Operations in any other state per node, at the end.
    pub not_completed: HashMap<String, u64>,
    /// Customers HQ holds at the end.
    pub hq_customers: usize,
}

impl FleetReport {
    /// Requests answered 429.
    pub fn throttled(&self) -> usize {
        self.requests.iter().filter(|r| r.status == 429).count()
    }

    /// Most requests HQ received in one `window` from the start of the throttle until the
    /// fleet drained.
    pub fn peak_rate(&self, window: Duration) -> usize {
        let mut buckets: HashMap<u128, usize> = HashMap::new();
        for r in &self.requests {
            if r.at < self.throttle_start {
                continue;
            }
            let i = (r.at - self.throttle_start).as_nanos() / window.as_nanos();
            *buckets.entry(i).or_default() += 1;
        }
        buckets.values().copied().max().unwrap_or(0)
    }

    /// Each pair of consecutive requests by one store to one path, where the first was answered
    /// 429, with the gap between them.
    pub fn gaps_after_429(&self) -> Vec<(String, String, Duration)> {
        let mut by_caller: HashMap<(String, String), Vec<&RequestRecord>> = HashMap::new();
        for r in &self.requests {
            let store = r.store.clone().unwrap_or_default();
            by_caller
                .entry((store, r.path.clone()))
                .or_default()
                .push(r);
        }
        let mut out = Vec::new();
        for ((store, path), mut rs) in by_caller {
            rs.sort_by_key(|r| r.at);
            for pair in rs.windows(2) {
                if pair[0].status == 429 {
                    out.push((store.clone(), path.clone(), pair[1].at - pair[0].at));
                }
            }
        }
        out
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Runs the scenario; panics when a step fails outright (a node does not start, a write is
/// refused); the report says the rest.
pub async fn run(options: &FleetOptions) -> FleetReport {
    let hq = HqEmulator::start(HqEmulatorConfig {
        sync_interval: Some(Duration::from_millis(50)),
        ..HqEmulatorConfig::local()
    })
    .await
    .expect("hq emulator");
    hq.enable_async();
    let client = http();
    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..options.nodes {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::for_dir(dir.path());
        config.node.store_id = format!("S{:04}", i + 1);
        config.hq.url = hq.url();
        config.hq.request_timeout_ms = 2_000;
        config.upload.interval_ms = options.interval_ms;
        config.upload.batch_size = 100;
        config.upload.retry_initial_ms = 100;
        config.upload.retry_max_ms = 2_000;
        config.upload.retry_jitter = options.jitter;
        config.store.cache_bytes = 1 << 20;
        let node = tokio::time::timeout(Duration::from_secs(30), Node::start(&config))
            .await
            .expect("node start in time")
            .expect("node start");
        // Asynchronous mode held before HQ goes down, as a store that had its CDX download.
        let r = client
            .post(format!("http://{}/v1/cdx/refresh", node.local_addr()))
            .send()
            .await
            .expect("cdx refresh");
        assert_eq!(r.status(), 200, "cdx refresh: {:?}", r.text().await);
        nodes.push(node);
        dirs.push(dir);
    }

    hq.set_faults(Faults {
        offline: true,
        ..Faults::default()
    });
    // Every node queues its work while HQ is down; the tills are never kept waiting.
    let mut writers = Vec::new();
    for node in &nodes {
        let (client, addr, n) = (client.clone(), node.local_addr(), options.ops_per_node);
        writers.push(tokio::spawn(async move {
            for i in 0..n {
                let r = client
                    .post(format!("http://{addr}/v1/customers"))
                    .json(&json!({"first_name": "Mari", "last_name": "Maasikas",
                                  "email": format!("m{i}.{}@example.ee", addr.port())}))
                    .send()
                    .await
                    .expect("create");
                assert_eq!(r.status(), 202, "create while HQ is down");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    // The region comes back at one instant (power or network returns everywhere at once):
    // every node tries HQ at the same moment, modelled by each node's "upload now". From here
    // on, only jitter keeps their retries apart.
    let mut wakes = Vec::new();
    for node in &nodes {
        let (client, addr) = (client.clone(), node.local_addr());
        wakes.push(tokio::spawn(async move {
            let r = client
                .post(format!("http://{addr}/v1/sync/upload"))
                .send()
                .await
                .expect("upload now");
            assert_eq!(r.status(), 202, "upload now");
        }));
    }
    for w in wakes {
        w.await.expect("wake");
    }
    tokio::time::sleep(options.offline_for).await;

    let throttle_start = Instant::now();
    hq.set_faults(Faults {
        throttle_retry_after_s: Some(options.retry_after_s),
        ..Faults::default()
    });
    tokio::time::sleep(options.throttle_for).await;
    hq.set_faults(Faults::default());
    let throttle_end = Instant::now();

    // Drained: every operation of every node completed (confirmed by HQ's outcome feed).
    let want = options.ops_per_node as u64;
    let deadline = throttle_end + options.drain_within;
    let count = |node: &Node, state: OpState| -> u64 {
        node.store()
            .operation_counts()
            .expect("counts")
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, n)| n)
            .sum()
    };
    while Instant::now() < deadline {
        if nodes.iter().all(|n| count(n, OpState::Completed) == want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained_in = throttle_end.elapsed();
    let mut completed = HashMap::new();
    let mut not_completed = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        let store = format!("S{:04}", i + 1);
        let all: u64 = node
            .store()
            .operation_counts()
            .expect("counts")
            .iter()
            .map(|(_, n)| n)
            .sum();
        let done = count(node, OpState::Completed);
        completed.insert(store.clone(), done);
        not_completed.insert(store, all - done);
    }
    let report = FleetReport {
        requests: hq.request_log(),
        throttle_start,
        throttle_end,
        drained_in,
        completed,
        not_completed,
        hq_customers: hq.customers().len(),
    };
    for node in nodes {
        let _ = tokio::time::timeout(Duration::from_secs(15), node.shutdown()).await;
    }
    hq.shutdown().await;
    drop(dirs);
    report
}
