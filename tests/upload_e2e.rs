//! The upload pipeline end to end: a real node and the HQ emulator over loopback sockets, with
//! HQ's faults switched at run time.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use outpost::config::Config;
use outpost::hq::emulator::{HqEmulator, HqEmulatorConfig};
use outpost::node::Node;
use serde_json::{Value, json};

struct Harness {
    hq: HqEmulator,
    node: Node,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(sync_interval_ms: u64, seed: u64) -> Harness {
        Harness::start_with(sync_interval_ms, seed, 50).await
    }

    /// As [`Harness::start`], with the node's upload and outcome interval given.
    async fn start_with(sync_interval_ms: u64, seed: u64, upload_interval_ms: u64) -> Harness {
        let hq = HqEmulator::start(HqEmulatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            sync_interval: Some(Duration::from_millis(sync_interval_ms)),
            seed,
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_dir(dir.path());
        config.hq.url = hq.url();
        config.hq.request_timeout_ms = 2_000;
        config.upload.interval_ms = upload_interval_ms;
        config.upload.batch_size = 100;
        config.upload.retry_initial_ms = 20;
        config.upload.retry_max_ms = 300;
        let node = Node::start(&config).await.unwrap();
        // These tests are about the queue: asynchronous mode on at HQ and held by the node.
        hq.enable_async();
        let h = Harness {
            hq,
            node,
            http: reqwest::Client::new(),
            _dir: dir,
        };
        let (status, body) = h.send(reqwest::Method::POST, "/v1/cdx/refresh", None).await;
        assert_eq!(status, 200, "{body}");
        h
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.node.local_addr())
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn accepted(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let (status, body) = self.send(method, path, Some(body)).await;
        assert_eq!(status, 202, "{path}: {body}");
        body
    }

    async fn faults(&self, faults: Value) {
        let resp = self
            .http
            .put(format!("{}/hq/v1/admin/faults", self.hq.url()))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "set faults: {}", resp.status());
    }

    async fn all_operations(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<u64> = None;
        loop {
            let path = match after {
                Some(a) => format!("/v1/sync/operations?limit=500&after={a}"),
                None => "/v1/sync/operations?limit=500".to_string(),
            };
            let (status, body) = self.send(reqwest::Method::GET, &path, None).await;
            assert_eq!(status, 200);
            let page = body["operations"].as_array().unwrap().clone();
            out.extend(page);
            match body["next_after"].as_u64() {
                Some(a) => after = Some(a),
                None => return out,
            }
        }
    }

    /// Waits (bounded) until every operation at the node is in one of `states`.
    async fn wait_all_in(&self, states: &[&str], limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let ops = self.all_operations().await;
            if ops
                .iter()
                .all(|o| states.contains(&o["state"].as_str().unwrap()))
            {
                return ops;
            }
            if Instant::now() > deadline {
                let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                for o in &ops {
                    *counts
                        .entry(o["state"].as_str().unwrap().to_string())
                        .or_default() += 1;
                }
                panic!("operations did not reach {states:?} in {limit:?}: {counts:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn hq_customers(&self) -> Vec<Value> {
        let resp = self
            .http
            .get(format!("{}/hq/v1/admin/customers", self.hq.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<Vec<Value>>().await.unwrap()
    }
}

/// A name made of letters only (names may not hold digits): 0 → "Aa", 1 → "Ab", ...
fn letters(mut i: usize) -> String {
    let mut s = String::new();
    for _ in 0..3 {
        s.insert(0, (b'a' + (i % 26) as u8) as char);
        i /= 26;
    }
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// What a till did to one customer, to check against HQ.
struct Written {
    customer_ref: String,
    last_name: String,
    operation_ids: Vec<String>,
}

async fn write_customer(h: &Harness, i: usize) -> Written {
    use reqwest::Method;
    let created = h
        .accepted(
            Method::POST,
            "/v1/customers",
            json!({"first_name": "Õie", "last_name": format!("Täht{}", letters(i)), "email": format!("c{i}@example.ee"), "customer_group": "RETAIL"}),
        )
        .await;
    let r = created["customer_ref"].as_str().unwrap().to_string();
    let last_name = format!("Tamm{}", letters(i));
    let edit = h
        .accepted(
            Method::PATCH,
            &format!("/v1/customers/{r}"),
            json!({"last_name": last_name}),
        )
        .await;
    let address = h
        .accepted(
            Method::POST,
            &format!("/v1/customers/{r}/addresses"),
            json!({"street": "Narva mnt 5", "city": "Tallinn", "postal_code": "10117", "country": "EST"}),
        )
        .await;
    let attribute = h
        .accepted(
            Method::POST,
            &format!("/v1/customers/{r}/attributes"),
            json!({"name": "shoe_size", "value": format!("{}", 36 + i % 10)}),
        )
        .await;
    Written {
        customer_ref: r,
        last_name,
        operation_ids: [created, edit, address, attribute]
            .iter()
            .map(|b| b["operation_id"].as_str().unwrap().to_string())
            .collect(),
    }
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_customers_through_lost_responses_and_errors_arrive_exactly_once() {
    let h = Harness::start(100, 42).await;
    h.faults(json!({"drop_response_rate": 0.3, "error_rate": 0.2}))
        .await;

    let mut written = Vec::new();
    for chunk in (0..500).collect::<Vec<_>>().chunks(25) {
        let writes = chunk.iter().map(|&i| write_customer(&h, i));
        written.extend(futures_util::future::join_all(writes).await);
    }
    // Let the faults bite for a while, then clear them.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    h.faults(json!({})).await;
    let ops = h.wait_all_in(&["completed"], Duration::from_secs(90)).await;
    assert_eq!(ops.len(), 2_000);
    let dropped =
        h.hq.request_log()
            .iter()
            .filter(|r| r.path == "/hq/v1/uploads" && r.status == 500)
            .count();
    assert!(
        dropped > 0 && h.node.sync_status().retries > 0,
        "the faults must have been hit"
    );

    let hq = h.hq_customers().await;
    assert_eq!(hq.len(), 500, "HQ must hold exactly the 500 customers");
    let by_ref: HashMap<&str, &Value> = hq
        .iter()
        .map(|c| (c["customer_ref"].as_str().unwrap(), c))
        .collect();
    assert_eq!(by_ref.len(), 500, "one HQ customer per node customer");
    let mut all_ids = Vec::new();
    for w in &written {
        let c = by_ref[w.customer_ref.as_str()];
        assert_eq!(c["last_name"], w.last_name.as_str());
        assert_eq!(c["addresses"].as_array().unwrap().len(), 1);
        assert_eq!(c["attributes"].as_array().unwrap().len(), 1);
        assert_eq!(
            ids(&c["operation_ids"]),
            w.operation_ids,
            "built by exactly the node's operations, in order"
        );
        all_ids.extend(ids(&c["operation_ids"]));
        // The node learnt the account number, and it works as a key.
        let account = c["account_number"].as_str().unwrap();
        let (status, local) = h
            .send(
                reqwest::Method::GET,
                &format!("/v1/customers/{account}"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(local["customer_ref"], w.customer_ref.as_str());
        assert_eq!(local["account_number"], account);
        assert_eq!(local["sync_state"], "synced");
    }
    let unique: std::collections::HashSet<_> = all_ids.iter().collect();
    assert_eq!(unique.len(), all_ids.len(), "no operation applied twice");
    h.node.shutdown().await.unwrap();
    h.hq.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hq_offline_then_back_drains_in_per_customer_order() {
    let h = Harness::start(100, 7).await;
    h.faults(json!({"offline": true})).await;
    let mut written = Vec::new();
    for i in 0..40 {
        // Every till write succeeds while HQ is down.
        written.push(write_customer(&h, i).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pending = h.all_operations().await;
    assert_eq!(pending.len(), 160);
    assert!(
        pending.iter().all(|o| o["state"] == "pending"),
        "nothing can leave while HQ is down"
    );

    h.faults(json!({})).await;
    h.wait_all_in(&["completed"], Duration::from_secs(60)).await;
    let hq = h.hq_customers().await;
    assert_eq!(hq.len(), 40);
    for w in &written {
        let c = hq
            .iter()
            .find(|c| c["customer_ref"] == w.customer_ref.as_str())
            .unwrap();
        assert_eq!(
            ids(&c["operation_ids"]),
            w.operation_ids,
            "applied in acceptance order"
        );
        assert_eq!(c["last_name"], w.last_name.as_str());
    }
    h.node.shutdown().await.unwrap();
    h.hq.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_customer_fails_alone_and_completes_after_edit_and_resync() {
    use reqwest::Method;
    let h = Harness::start(50, 3).await;
    h.faults(json!({"reject": {"field": "last_name", "equals": "Poison"}}))
        .await;
    let poison = h
        .accepted(
            Method::POST,
            "/v1/customers",
            json!({"first_name": "Mari", "last_name": "Poison"}),
        )
        .await;
    let p = poison["customer_ref"].as_str().unwrap().to_string();
    let edit = h
        .accepted(
            Method::PATCH,
            &format!("/v1/customers/{p}"),
            json!({"first_name": "Maria"}),
        )
        .await;
    let addr = h
        .accepted(
            Method::POST,
            &format!("/v1/customers/{p}/addresses"),
            json!({"street": "Pikk 1", "city": "Tartu", "postal_code": "51003", "country": "EST"}),
        )
        .await;
    let mut others = Vec::new();
    for i in 0..10 {
        others.push(write_customer(&h, i).await);
    }
    // Everyone else completes; the poison is failed with HQ's error and its later work held.
    let deadline = Instant::now() + Duration::from_secs(60);
    let create_id = poison["operation_id"].as_str().unwrap().to_string();
    loop {
        let ops = h.all_operations().await;
        let state_of = |id: &str| {
            ops.iter()
                .find(|o| o["operation_id"] == id)
                .map(|o| o["state"].as_str().unwrap().to_string())
        };
        let others_done = others
            .iter()
            .flat_map(|w| w.operation_ids.iter())
            .all(|id| state_of(id).as_deref() == Some("completed"));
        let poison_failed = state_of(&create_id).as_deref() == Some("failed");
        let followers_held = [&edit, &addr]
            .iter()
            .all(|b| state_of(b["operation_id"].as_str().unwrap()).as_deref() == Some("held"));
        if others_done && poison_failed && followers_held {
            break;
        }
        assert!(Instant::now() < deadline, "poison did not settle: {ops:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, failed) = h
        .send(
            Method::GET,
            &format!("/v1/sync/operations/{create_id}"),
            None,
        )
        .await;
    assert_eq!(failed["error"]["code"], "validation");
    assert_eq!(failed["error"]["field"], "last_name");
    let (_, held) = h
        .send(
            Method::GET,
            &format!(
                "/v1/sync/operations/{}",
                edit["operation_id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert!(
        held["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&create_id),
        "held says behind what: {held}"
    );
    let (_, customer) = h
        .send(Method::GET, &format!("/v1/customers/{p}"), None)
        .await;
    assert_eq!(customer["sync_state"], "failed");

    // The store manager fixes the record, saves, and re-syncs it.
    let (status, saved) = h
        .send(
            Method::PUT,
            &format!("/v1/sync/operations/{create_id}"),
            Some(json!({"payload": {"first_name": "Mari", "last_name": "Pärn"}})),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["revision"], 1);
    let (status, body) = h
        .send(
            Method::POST,
            &format!("/v1/sync/operations/{create_id}/sync"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    h.wait_all_in(&["completed"], Duration::from_secs(60)).await;
    let hq = h.hq_customers().await;
    assert_eq!(hq.len(), 11);
    let fixed = hq.iter().find(|c| c["customer_ref"] == p.as_str()).unwrap();
    assert_eq!(fixed["last_name"], "Pärn");
    assert_eq!(fixed["first_name"], "Maria");
    assert_eq!(fixed["addresses"].as_array().unwrap().len(), 1);
    h.node.shutdown().await.unwrap();
    h.hq.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_batches_are_confirmed_without_waiting_out_the_interval() {
    // The node reads outcomes every 60 s when idle; HQ answers staged work every 50 ms. Once
    // HQ stages a batch, the node reads the feed again soon after, so a backlog is confirmed
    // long before the next interval.
    let h = Harness::start_with(50, 12, 60_000).await;
    let mut written = Vec::new();
    for i in 0..60 {
        written.push(write_customer(&h, i).await);
    }
    let (status, body) = h.send(reqwest::Method::POST, "/v1/sync/upload", None).await;
    assert_eq!(status, 202, "{body}");
    let ops = h.wait_all_in(&["completed"], Duration::from_secs(10)).await;
    assert_eq!(ops.len(), 240);
    let at_hq = h.hq_customers().await;
    assert_eq!(at_hq.len(), written.len());
    h.node.shutdown().await.unwrap();
    h.hq.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_uploads_wait_out_retry_after() {
    let h = Harness::start(50, 11).await;
    h.faults(json!({"throttle_retry_after_s": 1})).await;
    write_customer(&h, 1).await;
    // Wait (bounded) until HQ has throttled the uploader three times.
    let deadline = Instant::now() + Duration::from_secs(30);
    let throttled = loop {
        let t: Vec<Instant> =
            h.hq.request_log()
                .iter()
                .filter(|r| r.path == "/hq/v1/uploads" && r.status == 429)
                .map(|r| r.at)
                .collect();
        if t.len() >= 3 {
            break t;
        }
        assert!(Instant::now() < deadline, "uploader did not retry: {t:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for pair in throttled.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_secs(1),
            "retried after {gap:?}, before Retry-After"
        );
    }
    h.faults(json!({})).await;
    h.wait_all_in(&["completed"], Duration::from_secs(30)).await;
    h.node.shutdown().await.unwrap();
    h.hq.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hq_that_lost_its_memory_gets_unanswered_work_again() {
    use reqwest::Method;
    // HQ A runs its sync job only on demand, so what the node uploads stays unanswered.
    let hq_a = HqEmulator::start(HqEmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sync_interval: None,
        seed: 1,
    })
    .await
    .unwrap();
    hq_a.enable_async();
    let addr = hq_a.local_addr();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_dir(dir.path());
    config.hq.url = hq_a.url();
    config.upload.interval_ms = 50;
    config.upload.retry_initial_ms = 20;
    config.upload.retry_max_ms = 200;
    let node = Node::start(&config).await.unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{}", node.local_addr());
    let status = http
        .post(format!("{base}/v1/cdx/refresh"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let mut refs = Vec::new();
    for i in 0..5 {
        let body: Value = http
            .request(Method::POST, format!("{base}/v1/customers"))
            .json(&json!({"first_name": "Õie", "last_name": format!("Täht{}", letters(i))}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        refs.push(body["customer_ref"].as_str().unwrap().to_string());
    }
    // Wait until HQ A has staged all five (the node shows them uploaded), with outcomes read.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body: Value = http
            .get(format!("{base}/v1/sync/operations?state=uploaded"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["operations"].as_array().unwrap().len() == 5
            && node.sync_status().last_outcome_pull_ms.is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "not staged: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // HQ A is replaced by a fresh HQ on the same address that remembers nothing.
    hq_a.shutdown().await;
    let hq_b = HqEmulator::start(HqEmulatorConfig {
        listen: addr,
        sync_interval: Some(Duration::from_millis(50)),
        seed: 2,
    })
    .await
    .unwrap();
    hq_b.enable_async();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body: Value = http
            .get(format!("{base}/v1/sync/operations?state=completed"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["operations"].as_array().unwrap().len() == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not re-send to the new HQ: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at_hq: Vec<String> = hq_b
        .customers()
        .iter()
        .map(|c| c.customer_ref.clone())
        .collect();
    assert_eq!(at_hq.len(), 5);
    for r in &refs {
        assert!(at_hq.contains(r), "{r} missing at the new HQ");
    }
    node.shutdown().await.unwrap();
    hq_b.shutdown().await;
}
