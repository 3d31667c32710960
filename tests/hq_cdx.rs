//! CDX data packages, feature management, channel settings, real-time calls and stale-edit
//! conflicts at the HQ emulator, over real sockets on 127.0.0.1, through `HqClient` and raw
//! reqwest.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use outpost::domain::customer::{CustomerPatch, NewCustomer};
use outpost::domain::features::FeatureId;
use outpost::domain::{OperationId, Payload};
use outpost::hq::client::RtsOutcome;
use outpost::hq::emulator::{Faults, HqEmulator, HqEmulatorConfig};
use outpost::hq::wire::{
    ChannelConfigPackage, CustomersPage, HqCustomerRecord, HqErrorBody, MissingPrerequisites,
    OutcomeStatus, RefusalBody, RtsResponse, StageStatus, WireOperation,
};
use outpost::hq::{HqClient, HqError};
use serde_json::{Value, json};

const STORE: &str = "S0001";
const CHANNEL: &str = "CH0001";

async fn start() -> HqEmulator {
    HqEmulator::start(HqEmulatorConfig::local()).await.unwrap()
}

fn client(hq: &HqEmulator) -> HqClient {
    HqClient::new(&hq.url(), STORE, CHANNEL, Duration::from_secs(5)).unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn fields(last_name: &str) -> NewCustomer {
    NewCustomer {
        first_name: "Õie".into(),
        last_name: last_name.into(),
        email: Some("oie@example.ee".into()),
        phone: None,
        customer_group: Some("RETAIL".into()),
        language: Some("et-EE".into()),
    }
}

fn op(seq: u64, customer_ref: &str, payload: Payload) -> WireOperation {
    WireOperation {
        operation_id: OperationId::new_v7(1_700_000_000_000 + seq),
        revision: 0,
        seq,
        customer_ref: customer_ref.into(),
        kind: payload.kind(),
        action: payload.action(),
        record_id: None,
        payload,
        accepted_at_ms: 1_700_000_000_000 + seq as i64,
        base: None,
    }
}

fn create(seq: u64, customer_ref: &str, last_name: &str) -> WireOperation {
    op(
        seq,
        customer_ref,
        Payload::CustomerCreate(fields(last_name)),
    )
}

fn edit(seq: u64, customer_ref: &str, patch: Value, base: Option<Value>) -> WireOperation {
    let patch: CustomerPatch = serde_json::from_value(patch).unwrap();
    let mut o = op(seq, customer_ref, Payload::CustomerEdit(patch));
    o.base = base;
    o
}

async fn put_feature(hq: &HqEmulator, id: &str, enabled: bool) -> reqwest::Response {
    http()
        .put(format!("{}/hq/v1/admin/features/{id}", hq.url()))
        .json(&json!({ "enabled": enabled }))
        .send()
        .await
        .unwrap()
}

async fn put_faults(hq: &HqEmulator, body: Value) {
    let res = http()
        .put(format!("{}/hq/v1/admin/faults", hq.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn admin_patch(hq: &HqEmulator, account: &str, body: Value) -> reqwest::Response {
    http()
        .patch(format!("{}/hq/v1/admin/customers/{account}", hq.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn applied(outcome: RtsOutcome) -> RtsResponse {
    match outcome {
        RtsOutcome::Applied(r) => r,
        RtsOutcome::Refused(e) => panic!("refused: {e:?}"),
    }
}

/// Every customer in a 1010 download, following `next`; bounded.
async fn download_all(client: &HqClient, limit: usize) -> (Vec<HqCustomerRecord>, u64, usize) {
    let mut page = client.cdx_customers(None, limit).await.unwrap();
    assert!(page.full);
    let mut all = Vec::new();
    let mut pages = 1;
    loop {
        all.extend(page.customers.clone());
        let Some(next) = page.next.clone() else { break };
        assert!(pages < 1_000, "too many pages");
        page = client.cdx_customers(Some(&next), limit).await.unwrap();
        assert!(!page.full);
        pages += 1;
    }
    (all, page.version, pages)
}

#[tokio::test]
async fn enabling_async_editing_without_its_prerequisites_is_refused_naming_the_three() {
    let hq = start().await;
    let client = client(&hq);
    let before = client.cdx_global().await.unwrap();
    assert!(before.features.0.values().all(|on| !on), "all off at start");
    let res = put_feature(&hq, "async-customer-editing", true).await;
    assert_eq!(res.status(), 409);
    let body: MissingPrerequisites = res.json().await.unwrap();
    assert_eq!(body.error, "prerequisites_off");
    assert_eq!(
        body.missing,
        [
            FeatureId::CustomerOrdersPerformance,
            FeatureId::EnhancedAsyncCustomerCreation,
            FeatureId::AsyncCustomerAddresses
        ]
    );
    assert_eq!(
        body.missing_names,
        [
            "Performance improvements for customer orders and customer transactions",
            "Enable enhanced async customer creation",
            "Enable asynchronous creation of customer addresses"
        ]
    );
    // The raw ids in JSON.
    let raw = serde_json::to_value(&body.missing).unwrap();
    assert_eq!(
        raw,
        json!([
            "customer-orders-performance",
            "enhanced-async-customer-creation",
            "async-customer-addresses"
        ])
    );
    assert_eq!(client.cdx_global().await.unwrap().version, before.version);
    for id in [
        "customer-orders-performance",
        "enhanced-async-customer-creation",
        "async-customer-addresses",
    ] {
        let res = put_feature(&hq, id, true).await;
        assert_eq!(res.status(), 200, "{id}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(
            (v["feature"].as_str(), v["enabled"].as_bool()),
            (Some(id), Some(true))
        );
        assert_eq!(v["in_force"], true);
    }
    let res = put_feature(&hq, "async-customer-editing", true).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        (
            v["feature"].clone(),
            v["enabled"].clone(),
            v["in_force"].clone()
        ),
        (json!("async-customer-editing"), json!(true), json!(true))
    );
    let after = client.cdx_global().await.unwrap();
    assert_eq!(after.version, before.version + 4);
    assert!(after.features.enabled(FeatureId::AsyncCustomerEditing));
    // The list shows each feature with its prerequisites.
    let list: Value = http()
        .get(format!("{}/hq/v1/admin/features", hq.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let editing = list
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == "async-customer-editing")
        .unwrap();
    assert_eq!(
        editing["name"],
        "Enable editing customers in asynchronous mode"
    );
    assert_eq!(editing["prerequisites"].as_array().unwrap().len(), 3);
    assert_eq!(editing["missing"], json!([]));
    // Switching a prerequisite off takes editing out of force.
    let res = put_feature(&hq, "async-customer-addresses", false).await;
    assert_eq!(res.status(), 200);
    let list: Value = http()
        .get(format!("{}/hq/v1/admin/features", hq.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let editing = list
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == "async-customer-editing")
        .unwrap();
    assert_eq!(
        (editing["enabled"].clone(), editing["in_force"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(editing["missing"], json!(["async-customer-addresses"]));
    // Unknown feature; bad body.
    let res = put_feature(&hq, "teleportation", true).await;
    assert_eq!(res.status(), 404);
    let res = http()
        .put(format!(
            "{}/hq/v1/admin/features/async-customer-editing",
            hq.url()
        ))
        .json(&json!({"enabled": "yes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    hq.shutdown().await;
}

#[tokio::test]
async fn a_channel_setting_change_bumps_the_1070_version() {
    let hq = start().await;
    let client = client(&hq);
    let before = client.cdx_channel().await.unwrap();
    assert_eq!(before.channel_id, CHANNEL);
    assert!(!before.create_customer_async);
    let res = http()
        .put(format!(
            "{}/hq/v1/admin/channel?channel_id={CHANNEL}",
            hq.url()
        ))
        .json(&json!({"create_customer_async": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let change: Value = res.json().await.unwrap();
    assert_eq!(change["create_customer_async"], true);
    assert_eq!(change["channel_id"], CHANNEL);
    let after = client.cdx_channel().await.unwrap();
    assert!(after.create_customer_async);
    assert!(after.version > before.version);
    assert_eq!(change["version"], after.version);
    // Another channel keeps the default.
    let other: ChannelConfigPackage = http()
        .get(format!("{}/hq/v1/cdx/1070?channel_id=CH0002", hq.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!other.create_customer_async);
    // Without channel_id: every channel and the default.
    let res = http()
        .put(format!("{}/hq/v1/admin/channel", hq.url()))
        .json(&json!({"create_customer_async": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let other: ChannelConfigPackage = http()
        .get(format!("{}/hq/v1/cdx/1070?channel_id=CH0002", hq.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(other.create_customer_async);
    assert!(other.version > after.version);
    // 1070 needs a channel; unknown jobs are 404 JSON; typos in the body are refused.
    let res = http()
        .get(format!("{}/hq/v1/cdx/1070", hq.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<HqErrorBody>().await.unwrap().error,
        "invalid_parameter"
    );
    let res = http()
        .get(format!("{}/hq/v1/cdx/1234", hq.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.json::<HqErrorBody>().await.unwrap().error, "not_found");
    let res = http()
        .put(format!("{}/hq/v1/admin/channel", hq.url()))
        .json(&json!({"create_customer_asnyc": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    hq.shutdown().await;
}

#[tokio::test]
async fn admin_customer_changes_show_in_1010_incrementally() {
    let hq = start().await;
    let client = client(&hq);
    // A store's customer, through upload and the sync job.
    client
        .upload(vec![create(1, "S0001-T1", "Täht")])
        .await
        .unwrap();
    hq.run_sync_job();
    for name in ["Mets", "Saar", "Kuusk"] {
        let res = http()
            .post(format!("{}/hq/v1/admin/customers", hq.url()))
            .json(&fields(name))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let r: HqCustomerRecord = res.json().await.unwrap();
        assert_eq!(r.origin_store_id, None);
        assert_eq!(r.fields.last_name, name);
    }
    let (all, version, pages) = download_all(&client, 2).await;
    assert_eq!(pages, 2);
    assert_eq!(version, 4);
    let accounts: Vec<&str> = all.iter().map(|c| c.account_number.as_str()).collect();
    assert_eq!(accounts, ["C000001", "C000002", "C000003", "C000004"]);
    assert_eq!(all[0].origin_store_id.as_deref(), Some(STORE));
    assert_eq!(all[0].origin_customer_ref.as_deref(), Some("S0001-T1"));
    // Nothing changed since: an empty increment.
    let held = outpost::hq::wire::CustomersCursor {
        after_version: version,
        after_account: String::new(),
    };
    let none = client.cdx_customers(Some(&held), 100).await.unwrap();
    assert!(none.customers.is_empty() && !none.full && none.next.is_none());
    // A call-centre changes one customer at HQ.
    let res = admin_patch(&hq, "C000002", json!({"phone": "+372 5555 1234"})).await;
    assert_eq!(res.status(), 200);
    let patched: HqCustomerRecord = res.json().await.unwrap();
    assert_eq!(patched.version, 5);
    let inc: CustomersPage = client.cdx_customers(Some(&held), 100).await.unwrap();
    assert_eq!(inc.version, 5);
    assert_eq!(inc.customers.len(), 1);
    assert_eq!(inc.customers[0].account_number, "C000002");
    assert_eq!(
        inc.customers[0].fields.phone.as_deref(),
        Some("+372 5555 1234")
    );
    // Raw query form, and its errors.
    let raw: CustomersPage = http()
        .get(format!(
            "{}/hq/v1/cdx/1010?after_version=4&after_account=C000004&limit=5",
            hq.url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw.customers.len(), 1);
    for bad in ["limit=0", "after_version=x", "limit=-1"] {
        let res = http()
            .get(format!("{}/hq/v1/cdx/1010?{bad}", hq.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
    // Admin refusals.
    assert_eq!(
        admin_patch(&hq, "C999999", json!({"first_name": "X"}))
            .await
            .status(),
        404
    );
    let res = admin_patch(&hq, "C000002", json!({"customer_group": "GOLD"})).await;
    assert_eq!(res.status(), 422);
    let body: RefusalBody = res.json().await.unwrap();
    assert_eq!(
        (body.error.as_str(), body.field.as_deref()),
        ("validation", Some("customer_group"))
    );
    let res = http()
        .post(format!("{}/hq/v1/admin/customers", hq.url()))
        .json(&json!({"first_name": "A", "last_name": "B", "shoe_size": 43}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(client.cdx_customers(None, 100).await.unwrap().version, 5);
    hq.shutdown().await;
}

#[tokio::test]
async fn a_real_time_create_answers_201_with_the_account_and_a_repeat_answers_the_same() {
    let hq = start().await;
    let client = client(&hq);
    let op = create(1, "S0001-T1", "Täht");
    let res = http()
        .post(format!("{}/hq/v1/rts/operations", hq.url()))
        .json(&json!({"store_id": STORE, "channel_id": CHANNEL, "operation": op}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let first: RtsResponse = res.json().await.unwrap();
    assert_eq!(first.account_number, "C000001");
    assert_eq!(first.operation_id, op.operation_id);
    assert_eq!(
        first.customer.origin_customer_ref.as_deref(),
        Some("S0001-T1")
    );
    let again = applied(client.rts(op.clone()).await.unwrap());
    assert_eq!(again, first);
    assert_eq!(hq.customers().len(), 1);
    // An edit answers 200, through the client.
    let e = applied(
        client
            .rts(edit(2, "S0001-T1", json!({"last_name": "Kask"}), None))
            .await
            .unwrap(),
    );
    assert_eq!(e.customer.fields.last_name, "Kask");
    // HQ-side refusals are 422s, and the client says Refused with the field.
    let bad = op_with_group(3, "S0001-T3", "GOLD");
    let res = http()
        .post(format!("{}/hq/v1/rts/operations", hq.url()))
        .json(&json!({"store_id": STORE, "channel_id": CHANNEL, "operation": bad}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "validation");
    assert_eq!(body["field"], "customer_group");
    match client.rts(bad).await.unwrap() {
        RtsOutcome::Refused(e) => {
            assert_eq!(
                (e.code.as_str(), e.field.as_deref()),
                ("validation", Some("customer_group"))
            )
        }
        other => panic!("{other:?}"),
    }
    match client
        .rts(edit(4, "S0001-T9", json!({"last_name": "Kask"}), None))
        .await
        .unwrap()
    {
        RtsOutcome::Refused(e) => assert_eq!(e.field.as_deref(), Some("customer_ref")),
        other => panic!("{other:?}"),
    }
    assert_eq!(hq.customers().len(), 1);
    // A malformed call is a permanent error.
    let res = http()
        .post(format!("{}/hq/v1/rts/operations", hq.url()))
        .json(&json!({"store_id": STORE}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    hq.shutdown().await;
}

fn op_with_group(seq: u64, customer_ref: &str, group: &str) -> WireOperation {
    op(
        seq,
        customer_ref,
        Payload::CustomerCreate(NewCustomer {
            customer_group: Some(group.into()),
            ..fields("Täht")
        }),
    )
}

#[tokio::test]
async fn a_real_time_call_whose_answer_was_lost_then_uploaded_creates_one_customer() {
    let hq = start().await;
    let client = client(&hq);
    let op = create(1, "S0001-T1", "Täht");
    hq.set_faults(Faults {
        drop_response_rate: Some(1.0),
        ..Faults::default()
    });
    let err = client.rts(op.clone()).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    // HQ did the work.
    assert_eq!(hq.customers().len(), 1);
    hq.set_faults(Faults::default());
    // The node fell back to its queue: it uploads the same operation.
    let staged = client.upload(vec![op.clone()]).await.unwrap();
    assert_eq!(staged.results[0].status, StageStatus::Staged);
    hq.run_sync_job();
    let customers = hq.customers();
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].operation_ids, vec![op.operation_id]);
    let feed = client.outcomes(0, 100).await.unwrap().outcomes;
    let last = feed
        .iter()
        .rev()
        .find(|o| o.operation_id == op.operation_id)
        .unwrap();
    assert_eq!(last.status, OutcomeStatus::Completed);
    assert_eq!(last.account_number.as_deref(), Some("C000001"));
    // Asking again in real time answers the original result.
    assert_eq!(
        applied(client.rts(op).await.unwrap()).account_number,
        "C000001"
    );
    let tables: Value = http()
        .get(format!("{}/hq/v1/admin/tables", hq.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = tables["RETAILASYNCCUSTOMERV2"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["source"], "real_time");
    assert_eq!(rows[0]["online_operation_completed"], 1);
    hq.shutdown().await;
}

#[tokio::test]
async fn real_time_calls_are_subject_to_faults() {
    let hq = start().await;
    let client = client(&hq);
    put_faults(&hq, json!({"offline": true})).await;
    let err = client.rts(create(1, "S0001-T1", "Täht")).await.unwrap_err();
    assert!(
        matches!(err, HqError::Transient { answered: true, .. }),
        "{err:?}"
    );
    // CDX downloads too.
    assert!(client.cdx_global().await.unwrap_err().is_transient());
    assert!(
        client
            .cdx_customers(None, 10)
            .await
            .unwrap_err()
            .is_transient()
    );
    put_faults(&hq, json!({"throttle_retry_after_s": 3})).await;
    let err = client.rts(create(1, "S0001-T1", "Täht")).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    put_faults(&hq, json!({"error_rate": 1.0})).await;
    assert!(
        client
            .rts(create(1, "S0001-T1", "Täht"))
            .await
            .unwrap_err()
            .is_transient()
    );
    assert!(
        hq.customers().is_empty(),
        "nothing applied before processing"
    );
    // The reject rule refuses in real time as the sync job would.
    put_faults(
        &hq,
        json!({"reject": {"field": "last_name", "equals": "Täht"}}),
    )
    .await;
    match client.rts(create(1, "S0001-T1", "Täht")).await.unwrap() {
        RtsOutcome::Refused(e) => assert_eq!(e.field.as_deref(), Some("last_name")),
        other => panic!("{other:?}"),
    }
    put_faults(&hq, json!({})).await;
    applied(client.rts(create(1, "S0001-T1", "Täht")).await.unwrap());
    // Every node call was logged, admin ones not.
    let paths: Vec<String> = hq.request_log().into_iter().map(|r| r.path).collect();
    assert!(paths.iter().any(|p| p == "/hq/v1/rts/operations"));
    assert!(paths.iter().any(|p| p == "/hq/v1/cdx/1110"));
    assert!(!paths.iter().any(|p| p.contains("/admin/")));
    hq.shutdown().await;
}

#[tokio::test]
async fn a_stale_edit_reports_the_field_changed_on_both_sides_in_its_outcome() {
    let hq = start().await;
    let client = client(&hq);
    client
        .upload(vec![create(1, "S0001-T1", "Tamm")])
        .await
        .unwrap();
    hq.run_sync_job();
    // HQ renames the customer; the store, not knowing, renames it too and changes the e-mail.
    assert_eq!(
        admin_patch(&hq, "C000001", json!({"last_name": "Kask"}))
            .await
            .status(),
        200
    );
    let stale = edit(
        2,
        "S0001-T1",
        json!({"last_name": "Mets", "email": "uus@example.ee"}),
        Some(json!({"last_name": "Tamm", "email": "oie@example.ee"})),
    );
    client.upload(vec![stale.clone()]).await.unwrap();
    hq.run_sync_job();
    let outcome = client
        .outcomes(0, 100)
        .await
        .unwrap()
        .outcomes
        .into_iter()
        .find(|o| o.operation_id == stale.operation_id)
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Completed);
    assert_eq!(outcome.conflicts.len(), 1);
    assert_eq!(outcome.conflicts[0].field, "last_name");
    assert_eq!(outcome.conflicts[0].store_value, json!("Mets"));
    assert_eq!(outcome.conflicts[0].hq_value, json!("Kask"));
    let c = &hq.customers()[0];
    assert_eq!(c.fields.last_name, "Kask");
    assert_eq!(c.fields.email.as_deref(), Some("uus@example.ee"));
    // The same in real time: the answer lists the conflict.
    assert_eq!(
        admin_patch(&hq, "C000001", json!({"first_name": "Mari"}))
            .await
            .status(),
        200
    );
    let rt = edit(
        3,
        "S0001-T1",
        json!({"first_name": "Anu"}),
        Some(json!({"first_name": "Õie"})),
    );
    let answer = applied(client.rts(rt).await.unwrap());
    assert_eq!(answer.conflicts.len(), 1);
    assert_eq!(answer.conflicts[0].hq_value, json!("Mari"));
    assert_eq!(answer.customer.fields.first_name, "Mari");
    hq.shutdown().await;
}

/// Kills the child process on drop, so a failing test leaves nothing running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn hq_sim_enable_async_starts_with_every_feature_and_async_creation_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args([
                "hq-sim",
                "--listen",
                "127.0.0.1:0",
                "--sync-interval-ms",
                "0",
                "--enable-async",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("hq-sim listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    let client = HqClient::new(&url, STORE, CHANNEL, Duration::from_secs(5)).unwrap();
    let global = client.cdx_global().await.unwrap();
    for f in FeatureId::ALL {
        assert!(global.features.effective(f).in_force, "{f}");
    }
    assert!(client.cdx_channel().await.unwrap().create_customer_async);
}
