//! The HQ emulator over real sockets on 127.0.0.1, driven through `HqClient` and raw reqwest.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use outpost::domain::customer::{Address, AddressPurpose, CustomerPatch, NewCustomer};
use outpost::domain::{OperationId, Payload};
use outpost::hq::emulator::{Faults, HqCustomer, HqEmulator, HqEmulatorConfig, RejectRule};
use outpost::hq::wire::{
    HqErrorBody, OutcomePage, OutcomeStatus, StageStatus, UploadResponse, WireOperation,
};
use outpost::hq::{HqClient, HqError};
use serde_json::{Value, json};

const STORE: &str = "S0001";

async fn start() -> HqEmulator {
    HqEmulator::start(HqEmulatorConfig::local()).await.unwrap()
}

fn client(hq: &HqEmulator) -> HqClient {
    HqClient::new(&hq.url(), STORE, "CH0001", Duration::from_secs(5)).unwrap()
}

fn new_customer(last_name: &str, group: Option<&str>) -> Payload {
    Payload::CustomerCreate(NewCustomer {
        first_name: "Õie".into(),
        last_name: last_name.into(),
        email: Some("oie@example.ee".into()),
        phone: None,
        customer_group: group.map(str::to_string),
        language: Some("et-EE".into()),
    })
}

fn rename(last_name: &str) -> Payload {
    Payload::CustomerEdit(CustomerPatch {
        last_name: Some(last_name.into()),
        ..Default::default()
    })
}

fn address() -> Payload {
    Payload::AddressCreate(Address {
        street: "Narva mnt 5".into(),
        city: "Tallinn".into(),
        postal_code: "10117".into(),
        country: "EST".into(),
        county: None,
        purpose: AddressPurpose::Home,
        is_primary: true,
    })
}

fn op(seq: u64, customer_ref: &str, record_id: Option<&str>, payload: Payload) -> WireOperation {
    WireOperation {
        operation_id: OperationId::new_v7(1_700_000_000_000 + seq),
        revision: 0,
        seq,
        customer_ref: customer_ref.into(),
        kind: payload.kind(),
        action: payload.action(),
        record_id: record_id.map(str::to_string),
        payload,
        accepted_at_ms: 1_700_000_000_000 + seq as i64,
        base: None,
    }
}

fn customer_ops() -> Vec<WireOperation> {
    vec![
        op(1, "S0001-T1", None, new_customer("Täht", Some("RETAIL"))),
        op(2, "S0001-T1", Some("ADR-2"), address()),
        op(3, "S0001-T1", None, rename("Kask")),
    ]
}

fn statuses(r: &UploadResponse) -> Vec<StageStatus> {
    r.results.iter().map(|r| r.status).collect()
}

async fn admin_get(hq: &HqEmulator, path: &str) -> Value {
    let res = reqwest::get(format!("{}/hq/v1/admin/{path}", hq.url()))
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "GET admin/{path}");
    res.json().await.unwrap()
}

async fn admin_run_sync(hq: &HqEmulator) -> Value {
    let res = reqwest::Client::new()
        .post(format!("{}/hq/v1/admin/jobs/sync-customers/run", hq.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn put_faults(hq: &HqEmulator, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .put(format!("{}/hq/v1/admin/faults", hq.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Rows across the five tables, as the admin endpoint lists them.
async fn table_rows(hq: &HqEmulator) -> Vec<Value> {
    let tables = admin_get(hq, "tables").await;
    let tables = tables.as_object().unwrap();
    assert_eq!(tables.len(), 5);
    tables
        .values()
        .flat_map(|rows| rows.as_array().unwrap().clone())
        .collect()
}

#[tokio::test]
async fn upload_sync_outcomes_and_admin_customers() {
    let hq = start().await;
    let client = client(&hq);
    client.health().await.unwrap();
    let ops = customer_ops();
    let staged = client.upload(ops.clone()).await.unwrap();
    assert_eq!(statuses(&staged), [StageStatus::Staged; 3]);
    let ids: Vec<OperationId> = ops.iter().map(|o| o.operation_id).collect();
    assert_eq!(
        staged
            .results
            .iter()
            .map(|r| r.operation_id)
            .collect::<Vec<_>>(),
        ids
    );

    // Staged, not processed: no outcome yet, OnlineOperationCompleted = 0.
    let page = client.outcomes(0, 100).await.unwrap();
    assert!(page.outcomes.is_empty());
    assert_eq!(page.next_cursor, 0);
    let rows = table_rows(&hq).await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["online_operation_completed"] == 0));
    let tables = admin_get(&hq, "tables").await;
    assert_eq!(tables["RETAILASYNCCUSTOMERV2"].as_array().unwrap().len(), 2);
    assert_eq!(tables["RETAILASYNCADDRESSV2"].as_array().unwrap().len(), 1);

    let report = admin_run_sync(&hq).await;
    assert_eq!(report["processed"], 3);
    assert_eq!(report["completed"], 3);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["held"], 0);

    let page = client.outcomes(0, 2).await.unwrap();
    assert_eq!(page.outcomes.len(), 2);
    assert_eq!(page.next_cursor, 2);
    let rest = client.outcomes(page.next_cursor, 100).await.unwrap();
    assert_eq!(rest.outcomes.len(), 1);
    let all: Vec<_> = page.outcomes.iter().chain(&rest.outcomes).collect();
    assert!(all.iter().all(|o| o.status == OutcomeStatus::Completed));
    assert!(
        all.iter()
            .all(|o| o.account_number.as_deref() == Some("C000001"))
    );
    assert_eq!(all.iter().map(|o| o.operation_id).collect::<Vec<_>>(), ids);

    let customers = admin_get(&hq, "customers").await;
    let customers = customers.as_array().unwrap();
    assert_eq!(customers.len(), 1);
    let c = &customers[0];
    assert_eq!(c["account_number"], "C000001");
    assert_eq!(c["store_id"], STORE);
    assert_eq!(c["customer_ref"], "S0001-T1");
    assert_eq!(c["first_name"], "Õie");
    assert_eq!(c["last_name"], "Kask");
    assert_eq!(c["customer_group"], "RETAIL");
    assert_eq!(c["addresses"][0]["id"], "ADR-2");
    assert_eq!(c["addresses"][0]["city"], "Tallinn");
    let op_ids: Vec<String> = c["operation_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        op_ids,
        ids.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    // The typed view decodes the same JSON, and the in-process snapshot agrees.
    let typed: Vec<HqCustomer> = serde_json::from_value(Value::Array(customers.clone())).unwrap();
    assert_eq!(typed, hq.customers());
    assert!(
        table_rows(&hq)
            .await
            .iter()
            .all(|r| r["online_operation_completed"] == 1 && r["state"] == "completed")
    );
    hq.shutdown().await;
}

#[tokio::test]
async fn a_batch_sent_again_creates_nothing_twice() {
    let hq = start().await;
    let client = client(&hq);
    let ops = customer_ops();
    client.upload(ops.clone()).await.unwrap();
    // Same operations, new batch id (as a retry after a lost answer would be).
    let again = client.upload(ops.clone()).await.unwrap();
    assert_eq!(statuses(&again), [StageStatus::Staged; 3]);
    assert_eq!(table_rows(&hq).await.len(), 3);
    assert_eq!(hq.run_sync_job().completed, 3);
    // And once more after HQ processed them: the original outcome, nothing new.
    let late = client.upload(ops.clone()).await.unwrap();
    assert_eq!(statuses(&late), [StageStatus::Staged; 3]);
    assert_eq!(hq.run_sync_job().processed, 0);
    let customers = hq.customers();
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].operation_ids.len(), 3);
    assert_eq!(client.outcomes(0, 100).await.unwrap().outcomes.len(), 3);
    assert_eq!(table_rows(&hq).await.len(), 3);
    hq.shutdown().await;
}

#[tokio::test]
async fn a_response_lost_after_commit_is_an_error_but_the_work_is_done() {
    let hq = start().await;
    let client = client(&hq);
    hq.set_faults(Faults {
        drop_response_rate: Some(1.0),
        ..Faults::default()
    });
    let ops = vec![op(1, "S0001-T1", None, new_customer("Täht", None))];
    let err = client.upload(ops.clone()).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.retry_after(), None);
    // Raw reqwest sees a transport failure too, on the same kind of request.
    let raw = reqwest::Client::new()
        .get(format!("{}/hq/v1/outcomes?store_id={STORE}", hq.url()))
        .send()
        .await;
    let raw_body = match raw {
        Ok(res) => res.bytes().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        raw_body.is_err(),
        "the dropped response must not arrive whole"
    );
    // The work was committed: one row, staged.
    let rows = table_rows(&hq).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["state"], "staged");
    assert_eq!(rows[0]["operation_id"], ops[0].operation_id.to_string());
    // The node retries once HQ answers again: staged, still one row.
    hq.set_faults(Faults::default());
    let retry = client.upload(ops).await.unwrap();
    assert_eq!(statuses(&retry), [StageStatus::Staged]);
    assert_eq!(table_rows(&hq).await.len(), 1);
    assert_eq!(hq.run_sync_job().completed, 1);
    assert_eq!(hq.customers().len(), 1);
    hq.shutdown().await;
}

#[tokio::test]
async fn offline_hq_answers_503_and_the_client_calls_it_transient() {
    let hq = start().await;
    let client = client(&hq);
    let res = put_faults(&hq, json!({"offline": true})).await;
    assert_eq!(res.status(), 200);
    let err = client.health().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.retry_after(), None);
    let err = client
        .upload(vec![op(1, "S0001-T1", None, new_customer("Täht", None))])
        .await
        .unwrap_err();
    assert!(err.is_transient());
    let raw = reqwest::get(format!("{}/hq/v1/health", hq.url()))
        .await
        .unwrap();
    assert_eq!(raw.status(), 503);
    let body: HqErrorBody = raw.json().await.unwrap();
    assert_eq!(body.error, "offline");
    assert!(table_rows(&hq).await.is_empty());
    // `{}` clears every fault.
    assert_eq!(put_faults(&hq, json!({})).await.status(), 200);
    assert_eq!(admin_get(&hq, "faults").await, json!({}));
    client.health().await.unwrap();
    hq.shutdown().await;
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after() {
    let hq = start().await;
    let client = client(&hq);
    put_faults(&hq, json!({"throttle_retry_after_s": 2})).await;
    let err = client
        .upload(vec![op(1, "S0001-T1", None, new_customer("Täht", None))])
        .await
        .unwrap_err();
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    let raw = reqwest::get(format!("{}/hq/v1/outcomes?store_id={STORE}", hq.url()))
        .await
        .unwrap();
    assert_eq!(raw.status(), 429);
    assert_eq!(raw.headers()["retry-after"], "2");
    assert!(table_rows(&hq).await.is_empty());
    hq.shutdown().await;
}

#[tokio::test]
async fn an_error_before_processing_stages_nothing() {
    let hq = start().await;
    let client = client(&hq);
    put_faults(&hq, json!({"error_rate": 1.0})).await;
    for _ in 0..3 {
        let err = client.upload(customer_ops()).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(matches!(err, HqError::Transient { ref reason, .. } if reason.contains("500")));
    }
    assert!(table_rows(&hq).await.is_empty());
    assert!(hq.customers().is_empty());
    hq.shutdown().await;
}

#[tokio::test]
async fn added_latency_past_the_client_timeout_is_a_transient_timeout() {
    let hq = start().await;
    let impatient = HqClient::new(&hq.url(), STORE, "CH0001", Duration::from_millis(200)).unwrap();
    put_faults(&hq, json!({"latency_ms": 2000})).await;
    let err = impatient.health().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
    hq.shutdown().await;
}

#[tokio::test]
async fn admin_endpoints_are_never_faulted() {
    let hq = start().await;
    let client = client(&hq);
    client.upload(customer_ops()).await.unwrap();
    let all = json!({
        "offline": true,
        "error_rate": 1.0,
        "drop_response_rate": 1.0,
        "throttle_retry_after_s": 2,
        "reject": {"field": "last_name", "equals": "Poison"}
    });
    assert_eq!(put_faults(&hq, all.clone()).await.status(), 200);
    assert_eq!(admin_get(&hq, "faults").await, all);
    assert!(client.health().await.is_err());
    assert_eq!(admin_run_sync(&hq).await["completed"], 3);
    assert_eq!(
        admin_get(&hq, "customers").await.as_array().unwrap().len(),
        1
    );
    assert_eq!(table_rows(&hq).await.len(), 3);
    assert_eq!(put_faults(&hq, json!({})).await.status(), 200);
    hq.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_json_400s() {
    let hq = start().await;
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{}/hq/v1/uploads", hq.url()))
        .header("content-type", "application/json")
        .body("{\"store_id\": 5}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: HqErrorBody = res.json().await.unwrap();
    assert_eq!(body.error, "malformed_body");
    let res = http
        .get(format!("{}/hq/v1/outcomes?after=3", hq.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = http
        .get(format!(
            "{}/hq/v1/outcomes?store_id={STORE}&after=x",
            hq.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let _: HqErrorBody = res.json().await.unwrap();
    for bad in [
        json!({"error_rate": 1.5}),
        json!({"drop_response_rate": -1}),
        json!({"offline": "yes"}),
    ] {
        let res = put_faults(&hq, bad.clone()).await;
        assert_eq!(res.status(), 400, "{bad}");
        let _: HqErrorBody = res.json().await.unwrap();
    }
    let res = http
        .get(format!("{}/hq/v1/nowhere", hq.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let _: HqErrorBody = res.json().await.unwrap();
    // Too many operations, or too many bytes: 413, nothing staged.
    let one = op(1, "S0001-T1", None, new_customer("Täht", None));
    let batch = json!({
        "store_id": STORE,
        "channel_id": "CH0001",
        "batch_id": "0190b5a4-7c1e-7c3a-9f0e-2d4c5b6a7e8f",
        "operations": vec![one; 10_001],
    });
    let res = http
        .post(format!("{}/hq/v1/uploads", hq.url()))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let body: HqErrorBody = res.json().await.unwrap();
    assert_eq!(body.error, "too_large");
    let res = http
        .post(format!("{}/hq/v1/uploads", hq.url()))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"store_id\": \"{}\"}}",
            "x".repeat(17 * 1024 * 1024)
        ))
        .send()
        .await;
    // HQ may answer 413 or close the connection before reading the whole body.
    if let Ok(res) = res {
        assert_eq!(res.status(), 413);
    }
    assert!(table_rows(&hq).await.is_empty());
    // The client reports a 4xx as permanent, with HQ's message.
    let wrong_base = HqClient::new(
        &format!("{}/prefix", hq.url()),
        STORE,
        "CH0001",
        Duration::from_secs(5),
    )
    .unwrap();
    let err = wrong_base.health().await.unwrap_err();
    assert!(
        matches!(err, HqError::Permanent { status: 404, .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    hq.shutdown().await;
}

#[tokio::test]
async fn a_poisoned_record_fails_holds_its_successors_and_is_fixed_by_a_new_revision() {
    let hq = start().await;
    let client = client(&hq);
    put_faults(
        &hq,
        json!({"reject": {"field": "last_name", "equals": "Poison"}}),
    )
    .await;
    let create = op(1, "S0001-T1", None, new_customer("Poison", None));
    let addr = op(2, "S0001-T1", Some("ADR-2"), address());
    let other = op(3, "S0001-T2", None, new_customer("Mets", Some("LOYAL")));
    client
        .upload(vec![create.clone(), addr.clone(), other.clone()])
        .await
        .unwrap();
    let report = hq.run_sync_job();
    assert_eq!((report.completed, report.failed, report.held), (1, 1, 1));
    let page: OutcomePage = client.outcomes(0, 100).await.unwrap();
    let by_id = |id| page.outcomes.iter().find(|o| o.operation_id == id).unwrap();
    let failed = by_id(create.operation_id);
    assert_eq!(failed.status, OutcomeStatus::Failed);
    let error = failed.error.clone().unwrap();
    assert_eq!(
        (error.code.as_str(), error.field.as_deref()),
        ("validation", Some("last_name"))
    );
    assert_eq!(by_id(addr.operation_id).status, OutcomeStatus::Held);
    assert_eq!(by_id(other.operation_id).status, OutcomeStatus::Completed);

    // The operator fixes the create: a new revision under the same id.
    let mut fixed = create.clone();
    fixed.revision = 1;
    fixed.payload = new_customer("Täht", None);
    let r = client.upload(vec![fixed]).await.unwrap();
    assert_eq!(statuses(&r), [StageStatus::Staged]);
    // The held address is released in order, in the same run.
    let report = hq.run_sync_job();
    assert_eq!((report.completed, report.failed), (2, 0));
    let page = client.outcomes(page.next_cursor, 100).await.unwrap();
    assert_eq!(
        page.outcomes
            .iter()
            .map(|o| (o.operation_id, o.status, o.revision))
            .collect::<Vec<_>>(),
        [
            (create.operation_id, OutcomeStatus::Completed, 1),
            (addr.operation_id, OutcomeStatus::Completed, 0)
        ]
    );
    let fixed_customer = hq
        .customers()
        .into_iter()
        .find(|c| c.customer_ref == "S0001-T1")
        .unwrap();
    assert_eq!(
        fixed_customer.operation_ids,
        [create.operation_id, addr.operation_id]
    );
    assert_eq!(fixed_customer.addresses.len(), 1);
    hq.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_hq_is_transient() {
    let hq = start().await;
    let url = hq.url();
    hq.shutdown().await;
    let client = HqClient::new(&url, STORE, "CH0001", Duration::from_secs(2)).unwrap();
    let err = client.health().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn faults_switched_in_process_are_visible_over_http() {
    let hq = start().await;
    hq.set_faults(Faults {
        reject: Some(RejectRule {
            field: "city".into(),
            equals: "Tallinn".into(),
        }),
        ..Faults::default()
    });
    assert_eq!(
        admin_get(&hq, "faults").await,
        json!({"reject": {"field": "city", "equals": "Tallinn"}})
    );
    assert_eq!(hq.faults().reject.unwrap().field, "city");
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
async fn the_hq_sim_subcommand_runs_without_a_config_file_and_syncs_on_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args([
                "hq-sim",
                "--listen",
                "127.0.0.1:0",
                "--sync-interval-ms",
                "50",
                "--seed",
                "7",
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
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let client = HqClient::new(&url, STORE, "CH0001", Duration::from_secs(5)).unwrap();
    client.health().await.unwrap();
    client.upload(customer_ops()).await.unwrap();
    // The interval job processes them without being asked; bounded wait.
    let mut seen = 0;
    for _ in 0..200 {
        seen = client.outcomes(0, 100).await.unwrap().outcomes.len();
        if seen == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seen, 3);
}
