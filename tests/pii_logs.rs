//! No PII in logs (invariant 8, R8): a node, the HQ emulator and the real binary are driven
//! through creates, edits, sub-records, searches, reads, bad input, poison records, real-time
//! calls and fallbacks, with distinctive names, e-mails and phones; everything logged at info
//! and above (text and JSON) must hold none of them, nor any token.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use outpost::hq::emulator::{Faults, HqEmulator, HqEmulatorConfig, RejectRule};
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;

/// Values that must never reach a log line, each in the spellings a log could carry.
const FIRST: &str = "Zebulonia";
const LAST: &str = "Quackenbushova";
const EMAIL: &str = "zebulonia.q@pii-canary.example";
const PHONE: &str = "+372 5550 9184";
const CONTACT_EMAIL: &str = "second.inbox@pii-canary.example";
const CONTACT_PHONE: &str = "+44 20 7946 0917";
const EDIT_LAST: &str = "Vandersloot";
const HQ_FIRST: &str = "Ermintrude";
const HQ_PHONE: &str = "+370 611 48273";
const BAD_EMAIL: &str = "zebulonia-at-pii-canary";
const POISON: &str = "Poisonbury";

fn canaries() -> Vec<String> {
    let mut out: Vec<String> = [
        FIRST,
        LAST,
        EMAIL,
        PHONE,
        CONTACT_EMAIL,
        CONTACT_PHONE,
        EDIT_LAST,
        HQ_FIRST,
        HQ_PHONE,
        BAD_EMAIL,
        POISON,
        "pii-canary",
        POS_TOKEN,
        TECH_TOKEN,
        WRONG_TOKEN,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Phones as digits only, and the search forms (folded case).
    for phone in [PHONE, CONTACT_PHONE, HQ_PHONE] {
        out.push(phone.chars().filter(char::is_ascii_digit).collect());
    }
    for name in [FIRST, LAST, EDIT_LAST, HQ_FIRST, POISON] {
        out.push(name.to_lowercase());
    }
    out
}

/// Where the in-process subscriber writes: one buffer for the whole test binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a global subscriber at info, writing every event both as text and as JSON
/// into one buffer. Global, not thread-local: the node's tasks and its writer thread log from
/// threads of their own.
fn captured() -> Captured {
    static CAPTURE: OnceLock<Captured> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let buffer = Captured::default();
            let text = buffer.clone();
            let json = buffer.clone();
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::filter::LevelFilter::INFO)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .with_writer(move || text.clone()),
                )
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_writer(move || json.clone()),
                );
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
            buffer
        })
        .clone()
}

fn text(c: &Captured) -> String {
    String::from_utf8_lossy(&c.0.lock().unwrap()).into_owned()
}

#[track_caller]
fn assert_clean(logs: &str, what: &str) {
    let lower = logs.to_lowercase();
    let leaks: Vec<String> = canaries()
        .into_iter()
        .filter(|c| lower.contains(&c.to_lowercase()))
        .collect();
    let sample: Vec<&str> = logs
        .lines()
        .filter(|l| {
            leaks
                .iter()
                .any(|c| l.to_lowercase().contains(&c.to_lowercase()))
        })
        .take(5)
        .collect();
    assert!(
        leaks.is_empty(),
        "{what} leaked {leaks:?}; e.g.:\n{}",
        sample.join("\n")
    );
}

fn full_customer() -> Value {
    json!({
        "first_name": FIRST, "last_name": LAST, "email": EMAIL, "phone": PHONE,
        "language": "et-EE"
    })
}

/// Bad input carrying PII: every refusal is answered, and nothing of it is logged.
async fn bad_input(api: &Api) {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "/v1/customers",
            json!({"first_name": FIRST, "last_name": LAST, "email": BAD_EMAIL})
                .to_string()
                .into_bytes(),
        ),
        (
            "/v1/customers",
            json!({"first_name": format!("{FIRST}7"), "last_name": LAST})
                .to_string()
                .into_bytes(),
        ),
        (
            "/v1/customers",
            json!({"first_name": FIRST, "last_name": LAST, "phone": format!("{PHONE} ext")})
                .to_string()
                .into_bytes(),
        ),
        (
            "/v1/customers",
            json!({"first_name": FIRST, "last_name": LAST, "nickname": EMAIL})
                .to_string()
                .into_bytes(),
        ),
        (
            "/v1/customers",
            json!({"first_name": 5, "last_name": LAST})
                .to_string()
                .into_bytes(),
        ),
        (
            "/v1/customers",
            format!("{{\"first_name\":\"{FIRST}\",\"last_name\":").into_bytes(),
        ),
        ("/v1/customers", format!("[\"{EMAIL}\"]").into_bytes()),
    ];
    for (path, body) in cases {
        let r = api.raw(reqwest::Method::POST, path, Some(body)).await;
        assert!(
            r.status.is_client_error(),
            "{path}: {} {}",
            r.status,
            r.body
        );
    }
    let r = api
        .get(&format!("/v1/customers?q={FIRST}&unknown={EMAIL}"))
        .await;
    assert_eq!(r.status, 400);
    let r = api.get(&format!("/v1/customers/{EMAIL}")).await;
    assert_eq!(r.status, 404);
    let r = api.get(&format!("/v1/sync/operations/{LAST}")).await;
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_node_and_hq_log_no_pii_or_tokens_at_info() {
    let logs = captured();
    let hq = HqEmulator::start(HqEmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sync_interval: Some(Duration::from_millis(30)),
        seed: 3,
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = auth_config(dir.path());
    config.hq.url = hq.url();
    config.hq.request_timeout_ms = 2_000;
    config.upload.interval_ms = 30;
    config.upload.retry_initial_ms = 20;
    config.upload.retry_max_ms = 100;
    let node = start_node_with(config).await;
    let anon = Api::new(node.local_addr());
    let till = anon.with_token(POS_TOKEN);
    let tech = anon.with_token(TECH_TOKEN);

    // Tokens: refused, misplaced and accepted ones.
    anon.with_token(WRONG_TOKEN).get("/diag").await.expect(401);
    till.get("/diag").await.expect(403);
    tech.get("/diag").await.expect(200);

    // Real time: applied, edited, then a fallback while HQ is down.
    let rt = till
        .post("/v1/customers", &full_customer())
        .await
        .expect(201)
        .clone();
    let rt_ref = rt["customer_ref"].as_str().unwrap().to_string();
    till.patch(
        &format!("/v1/customers/{rt_ref}"),
        &json!({"last_name": EDIT_LAST}),
    )
    .await
    .expect(200);
    hq.set_faults(Faults {
        offline: true,
        ..Faults::default()
    });
    till.post(
        "/v1/customers",
        &json!({"first_name": FIRST, "last_name": EDIT_LAST, "phone": PHONE}),
    )
    .await
    .expect(202);
    bad_input(&till).await;

    // Asynchronous mode, sub-records, a poison record fixed by a technician.
    hq.set_faults(Faults {
        reject: Some(RejectRule {
            field: "last_name".into(),
            equals: POISON.into(),
        }),
        ..Faults::default()
    });
    hq.enable_async();
    tech.post_empty("/v1/cdx/refresh").await.expect(200);
    let created = till.create_customer(&full_customer()).await;
    let cref = created["customer_ref"].as_str().unwrap().to_string();
    for contact in [
        json!({"kind": "email", "value": CONTACT_EMAIL, "description": FIRST}),
        json!({"kind": "phone", "value": CONTACT_PHONE}),
    ] {
        till.post(&format!("/v1/customers/{cref}/contacts"), &contact)
            .await
            .expect(202);
    }
    till.patch(
        &format!("/v1/customers/{cref}"),
        &json!({"email": CONTACT_EMAIL, "last_name": EDIT_LAST}),
    )
    .await
    .expect(202);
    let poison = till
        .create_customer(&json!({"first_name": FIRST, "last_name": POISON, "email": EMAIL}))
        .await;
    let poison_id = poison["operation_id"].as_str().unwrap().to_string();
    poll(WAIT, "the poison record failed", || async {
        let op = tech.get(&format!("/v1/sync/operations/{poison_id}")).await;
        (op.body["state"] == "failed").then_some(())
    })
    .await;
    tech.put(
        &format!("/v1/sync/operations/{poison_id}"),
        &json!({"payload": {"first_name": FIRST, "last_name": LAST, "email": EMAIL}}),
    )
    .await
    .expect(200);
    tech.post_empty(&format!("/v1/sync/operations/{poison_id}/sync"))
        .await;
    tech.post_empty("/v1/sync/upload").await.expect(202);

    // A customer created at HQ arrives by CDX 1010 and is found by its PII.
    let resp = reqwest::Client::new()
        .post(format!("{}/hq/v1/admin/customers", hq.url()))
        .json(&json!({"first_name": HQ_FIRST, "last_name": LAST, "phone": HQ_PHONE}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    tech.post_empty("/v1/cdx/refresh").await.expect(200);
    for q in [FIRST, LAST, EMAIL, PHONE, HQ_FIRST, HQ_PHONE, CONTACT_EMAIL] {
        assert!(!till.search_refs(q).await.is_empty(), "{q} not found");
    }
    till.customer(&cref).await;
    poll(WAIT, "the queue drained", || async {
        let ops = tech.all_operations("state=pending", 100).await;
        let failed = tech.all_operations("state=failed", 100).await;
        (ops.is_empty() && failed.is_empty()).then_some(())
    })
    .await;
    tech.get("/metrics").await.expect(200);
    stop_node(node).await;
    hq.shutdown().await;

    let logged = text(&logs);
    // The capture works and saw the node at work at info.
    for expected in [
        "node serving",
        "change queued",
        "upload batch staged at HQ",
        "\"level\":\"INFO\"",
    ] {
        assert!(
            logged.contains(expected),
            "no {expected:?} in the logs:\n{logged}"
        );
    }
    assert_clean(&logged, "the in-process node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_no_pii_or_tokens_at_info_in_json_or_text() {
    let hq = HqEmulator::start(HqEmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sync_interval: Some(Duration::from_millis(30)),
        seed: 5,
    })
    .await
    .unwrap();
    hq.enable_async();
    for format in ["json", "text"] {
        let dir = tempfile::tempdir().unwrap();
        let mut bin = Binary::try_spawn_with(
            dir.path(),
            &BinaryConfig {
                hq_url: Some(hq.url()),
                log_filter: "info".into(),
                log_format: format.into(),
                extra: format!("[upload]\ninterval_ms = 30\n\n{}", test_tokens_toml()),
                ..BinaryConfig::default()
            },
        )
        .unwrap();
        let anon = bin.api();
        let till = anon.with_token(POS_TOKEN);
        let tech = anon.with_token(TECH_TOKEN);
        anon.with_token(WRONG_TOKEN).get("/diag").await.expect(401);
        till.get("/metrics").await.expect(403);
        tech.post_empty("/v1/cdx/refresh").await.expect(200);
        let created = till.create_customer(&full_customer()).await;
        let cref = created["customer_ref"].as_str().unwrap().to_string();
        till.post(
            &format!("/v1/customers/{cref}/contacts"),
            &json!({"kind": "phone", "value": CONTACT_PHONE}),
        )
        .await
        .expect(202);
        till.patch(
            &format!("/v1/customers/{cref}"),
            &json!({"last_name": EDIT_LAST}),
        )
        .await
        .expect(202);
        bad_input(&till).await;
        // (HQ is shared by both runs: the first run's customer comes down by CDX too.)
        assert!(till.search_refs(EMAIL).await.contains(&cref));
        poll(WAIT, "the binary's queue drained", || async {
            tech.all_operations("state=pending", 100)
                .await
                .is_empty()
                .then_some(())
        })
        .await;
        assert!(bin.terminate().success());
        let logged = bin.stderr();
        assert!(logged.contains("change queued"), "{format}: {logged}");
        if format == "json" {
            assert!(logged.contains("\"level\":\"INFO\""), "{logged}");
        }
        assert_clean(&logged, &format!("the binary ({format} logs)"));
    }
    hq.shutdown().await;
}
