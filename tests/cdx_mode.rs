//! CDX downloads, stale configuration, feature prerequisites and real-time mode, with a real
//! node and the HQ emulator over loopback sockets.

use std::time::{Duration, Instant};

use outpost::config::Config;
use outpost::hq::emulator::{HqEmulator, HqEmulatorConfig};
use outpost::node::Node;
use reqwest::Method;
use serde_json::{Value, json};

struct Hq {
    emulator: HqEmulator,
    http: reqwest::Client,
}

impl Hq {
    async fn start() -> Hq {
        let emulator = HqEmulator::start(HqEmulatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            sync_interval: Some(Duration::from_millis(50)),
            seed: 5,
        })
        .await
        .unwrap();
        Hq {
            emulator,
            http: reqwest::Client::new(),
        }
    }

    async fn admin(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.emulator.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Switches asynchronous customer creation and editing on at HQ, through its admin API.
    async fn enable_async(&self) {
        for f in [
            "customer-orders-performance",
            "enhanced-async-customer-creation",
            "async-customer-addresses",
            "async-customer-editing",
        ] {
            let (status, body) = self
                .admin(
                    Method::PUT,
                    &format!("/hq/v1/admin/features/{f}"),
                    json!({"enabled": true}),
                )
                .await;
            assert_eq!(status, 200, "{f}: {body}");
        }
        let (status, _) = self
            .admin(
                Method::PUT,
                "/hq/v1/admin/channel",
                json!({"create_customer_async": true}),
            )
            .await;
        assert_eq!(status, 200);
    }

    async fn faults(&self, faults: Value) {
        let (status, _) = self.admin(Method::PUT, "/hq/v1/admin/faults", faults).await;
        assert_eq!(status, 200);
    }

    async fn customers(&self) -> Vec<Value> {
        let resp = self
            .http
            .get(format!("{}/hq/v1/admin/customers", self.emulator.url()))
            .send()
            .await
            .unwrap();
        resp.json().await.unwrap()
    }
}

struct Till {
    base: String,
    http: reqwest::Client,
}

impl Till {
    fn new(node: &Node) -> Till {
        Till {
            base: format!("http://{}", node.local_addr()),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn create(&self, first: &str, last: &str) -> (u16, Value) {
        self.call(
            Method::POST,
            "/v1/customers",
            Some(json!({"first_name": first, "last_name": last})),
        )
        .await
    }

    async fn refresh(&self) -> (u16, Value) {
        self.call(Method::POST, "/v1/cdx/refresh", None).await
    }

    async fn diag(&self) -> Value {
        let (status, body) = self.call(Method::GET, "/diag", None).await;
        assert_eq!(status, 200);
        body
    }

    /// Waits (bounded) until no operation is pending, uploaded or held.
    async fn drained(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = self
                .call(Method::GET, "/v1/sync/operations?limit=500", None)
                .await;
            let ops = body["operations"].as_array().unwrap().clone();
            if ops.iter().all(|o| o["state"] == "completed") {
                return;
            }
            assert!(Instant::now() < deadline, "not drained: {ops:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn node_for(hq: &Hq, dir: &std::path::Path) -> Node {
    let mut config = Config::for_dir(dir);
    config.hq.url = hq.emulator.url();
    config.hq.request_timeout_ms = 2_000;
    config.upload.interval_ms = 50;
    config.upload.retry_initial_ms = 20;
    config.upload.retry_max_ms = 200;
    config.cdx.interval_secs = 0;
    Node::start(&config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_editing_needs_its_three_prerequisites_at_hq() {
    let hq = Hq::start().await;
    let (status, body) = hq
        .admin(
            Method::PUT,
            "/hq/v1/admin/features/async-customer-editing",
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, 409);
    let mut missing: Vec<&str> = body["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    missing.sort();
    assert_eq!(
        missing,
        [
            "async-customer-addresses",
            "customer-orders-performance",
            "enhanced-async-customer-creation"
        ]
    );
    hq.enable_async().await;
    hq.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_configuration_keeps_real_time_until_a_refresh_is_applied() {
    let hq = Hq::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = node_for(&hq, dir.path()).await;
    let till = Till::new(&node);

    // Before any download the node is in real-time mode: HQ answers with the account number.
    let (status, body) = till.create("Õie", "Täht").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["mode"], "realtime");
    assert!(body["account_number"].as_str().unwrap().len() > 1);
    assert!(
        body["mode_reason"].as_str().unwrap().contains("1070"),
        "{body}"
    );

    // The node downloads the configuration while async mode is still off at HQ.
    let (status, _) = till.refresh().await;
    assert_eq!(status, 200);
    let held_1070 = till.diag().await["cdx"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == 1070)
        .unwrap()["version"]
        .as_u64()
        .unwrap();

    // HQ turns async mode on; the node still holds the old configuration and keeps calling.
    hq.enable_async().await;
    let (status, body) = till.create("Mari", "Maasikas").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["mode"], "realtime");
    let diag = till.diag().await;
    let reason = diag["mode"]["create"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("1070 configuration held, version {held_1070}")),
        "{reason}"
    );
    assert_eq!(diag["realtime"]["applied"], 2);
    assert!(
        diag["realtime"]["recent"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["reason"].as_str().unwrap().contains("1070")),
        "every real-time call carries its reason: {diag}"
    );

    // After a refresh the next create is asynchronous, and so is an edit.
    let (status, body) = till.refresh().await;
    assert_eq!(status, 200, "{body}");
    let (status, created) = till.create("Jaan", "Tamm").await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["mode"], "async");

    // HQ goes down: a refresh fails and the configuration held stays in force.
    hq.faults(json!({"offline": true})).await;
    let (status, body) = till.refresh().await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = till.create("Kati", "Karu").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["mode"], "async");
    hq.faults(json!({})).await;
    till.drained().await;
    assert_eq!(
        hq.customers().await.len(),
        4,
        "each customer exactly once at HQ"
    );
    node.shutdown().await.unwrap();
    hq.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_time_with_hq_unreachable_falls_back_to_the_queue_and_applies_once() {
    let hq = Hq::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = node_for(&hq, dir.path()).await;
    let till = Till::new(&node);
    hq.faults(json!({"offline": true})).await;
    let (status, body) = till.create("Õie", "Täht").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["mode"], "async_fallback");
    assert!(
        body["fallback_reason"].as_str().unwrap().contains("queued"),
        "{body}"
    );
    let diag = till.diag().await;
    assert_eq!(diag["realtime"]["fallbacks"], 1);
    hq.faults(json!({})).await;
    till.drained().await;
    let at_hq = hq.customers().await;
    assert_eq!(at_hq.len(), 1);
    let (_, local) = till
        .call(
            Method::GET,
            &format!("/v1/customers/{}", body["customer_ref"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(local["account_number"], at_hq[0]["account_number"]);
    node.shutdown().await.unwrap();
    hq.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_real_time_answer_is_applied_once() {
    let hq = Hq::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = node_for(&hq, dir.path()).await;
    let till = Till::new(&node);
    // HQ does the work, then the answer is lost: the node queues it; HQ must not apply twice.
    hq.faults(json!({"drop_response_rate": 1.0})).await;
    let (status, body) = till.create("Õie", "Täht").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["mode"], "async_fallback");
    hq.faults(json!({})).await;
    till.drained().await;
    let at_hq = hq.customers().await;
    assert_eq!(at_hq.len(), 1, "applied once: {at_hq:?}");
    assert_eq!(at_hq[0]["operation_ids"].as_array().unwrap().len(), 1);
    node.shutdown().await.unwrap();
    hq.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hq_customers_are_cached_and_one_record_per_customer() {
    let hq = Hq::start().await;
    hq.enable_async().await;
    let (status, from_hq) = hq
        .admin(
            Method::POST,
            "/hq/v1/admin/customers",
            json!({"first_name": "Šarūnas", "last_name": "Kask", "phone": "+370 600 12345"}),
        )
        .await;
    assert_eq!(status, 201, "{from_hq}");
    let account = from_hq["account_number"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let node = node_for(&hq, dir.path()).await;
    let till = Till::new(&node);
    assert_eq!(till.refresh().await.0, 200);

    // A customer created here asynchronously, confirmed by HQ, then sent down again by 1010.
    let (status, created) = till.create("Õie", "Kask").await;
    assert_eq!(status, 202);
    let local_ref = created["customer_ref"].as_str().unwrap().to_string();
    till.drained().await;
    assert_eq!(till.refresh().await.0, 200);
    let (_, found) = till.call(Method::GET, "/v1/customers?q=kask", None).await;
    let found = found["customers"].as_array().unwrap();
    assert_eq!(found.len(), 2, "one record each, no duplicate: {found:?}");
    assert!(
        found
            .iter()
            .any(|c| c["customer_ref"] == local_ref.as_str())
    );

    // Restarted while HQ is down, the node still serves its cache and its configuration.
    node.shutdown().await.unwrap();
    hq.faults(json!({"offline": true})).await;
    let node = node_for(&hq, dir.path()).await;
    let till = Till::new(&node);
    let (status, c) = till
        .call(Method::GET, &format!("/v1/customers/{account}"), None)
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["first_name"], "Šarūnas");
    let (_, found) = till
        .call(Method::GET, "/v1/customers?q=sarunas", None)
        .await;
    assert_eq!(found["customers"].as_array().unwrap().len(), 1);
    // An edit of the HQ customer while HQ is down is queued (async editing held on) with
    // the HQ copy and the pending edit both visible.
    let (status, body) = till
        .call(
            Method::PATCH,
            &format!("/v1/customers/{account}"),
            Some(json!({"email": "s@example.lt"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["mode"], "async");
    let (_, c) = till
        .call(Method::GET, &format!("/v1/customers/{account}"), None)
        .await;
    assert_eq!(
        (c["first_name"].as_str(), c["email"].as_str()),
        (Some("Šarūnas"), Some("s@example.lt"))
    );
    node.shutdown().await.unwrap();
    hq.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_against_stale_data_reports_the_conflict() {
    let hq = Hq::start().await;
    hq.enable_async().await;
    let (_, from_hq) = hq
        .admin(
            Method::POST,
            "/hq/v1/admin/customers",
            json!({"first_name": "Mari", "last_name": "Kask"}),
        )
        .await;
    let account = from_hq["account_number"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let node = node_for(&hq, dir.path()).await;
    let till = Till::new(&node);
    assert_eq!(till.refresh().await.0, 200);
    hq.faults(json!({"offline": true})).await;
    // HQ changes the family name; the store, with its older copy, changes it too, and the
    // given name only here.
    let (status, _) = hq
        .admin(
            Method::PATCH,
            &format!("/hq/v1/admin/customers/{account}"),
            json!({"last_name": "Mets"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, edit) = till
        .call(
            Method::PATCH,
            &format!("/v1/customers/{account}"),
            Some(json!({"last_name": "Tamm", "first_name": "Maria"})),
        )
        .await;
    assert_eq!(status, 202, "{edit}");
    hq.faults(json!({})).await;
    till.drained().await;
    let (_, op) = till
        .call(
            Method::GET,
            &format!(
                "/v1/sync/operations/{}",
                edit["operation_id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    let conflicts = op["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{op}");
    assert_eq!(conflicts[0]["field"], "last_name");
    assert_eq!(conflicts[0]["hq_value"], "Mets");
    assert_eq!(conflicts[0]["store_value"], "Tamm");
    let at_hq = hq.customers().await;
    let c = at_hq
        .iter()
        .find(|c| c["account_number"] == account.as_str())
        .unwrap();
    assert_eq!(
        (c["first_name"].as_str(), c["last_name"].as_str()),
        (Some("Maria"), Some("Mets"))
    );
    node.shutdown().await.unwrap();
    hq.emulator.shutdown().await;
}
