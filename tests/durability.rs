//! An acknowledgement means durable: the real `outpost` binary is killed with SIGKILL right
//! after its 202s, restarted on the same data dir, and must still hold every acknowledged
//! operation, exactly once.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Api, Binary, address};
use serde_json::{Value, json};

/// What the till has been told so far, checked after every restart.
#[derive(Default)]
struct Expected {
    cref: String,
    /// Acknowledged operation ids, in order, with (kind, action).
    ops: Vec<(String, &'static str, &'static str)>,
    last_name: Option<&'static str>,
    phone: Option<&'static str>,
    address_id: Option<String>,
    contact_id: Option<String>,
}

async fn check(api: &Api, want: &Expected) {
    let c = api.customer(&want.cref).await;
    assert_eq!(c["first_name"], "Õie");
    assert_eq!(c["last_name"], want.last_name.unwrap_or("Täht"));
    assert_eq!(c["phone"], want.phone.map_or(Value::Null, Value::from));
    assert_eq!(c["sync_state"], "pending");
    match &want.address_id {
        Some(id) => {
            assert_eq!(c["addresses"].as_array().unwrap().len(), 1, "{c}");
            assert_eq!(c["addresses"][0]["id"], id.as_str());
            assert_eq!(c["addresses"][0]["city"], "Tallinn");
        }
        None => assert_eq!(c["addresses"], json!([])),
    }
    match &want.contact_id {
        Some(id) => {
            assert_eq!(c["contacts"].as_array().unwrap().len(), 1, "{c}");
            assert_eq!(c["contacts"][0]["id"], id.as_str());
            assert_eq!(c["contacts"][0]["value"], "oie@example.ee");
        }
        None => assert_eq!(c["contacts"], json!([])),
    }
    let ops = api.all_operations("", 100).await;
    let got: Vec<(String, String, String)> = ops
        .iter()
        .map(|o| {
            (
                o["operation_id"].as_str().unwrap().to_string(),
                o["kind"].as_str().unwrap().to_string(),
                o["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = want
        .ops
        .iter()
        .map(|(id, k, a)| (id.clone(), k.to_string(), a.to_string()))
        .collect();
    assert_eq!(
        got, expected,
        "every acknowledged operation, once, in order"
    );
    assert!(ops.iter().all(|o| o["state"] == "pending"));
}

/// Create, edit twice, add an address and a contact; after each 202 the node is killed with
/// SIGKILL at once, restarted on the same files, and must show every change so far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_each_202_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut bin = Binary::spawn(dir.path());
    let api = bin.api();
    let mut want = Expected::default();

    let created = api
        .create_customer(
            &json!({"first_name": "Õie", "last_name": "Täht", "email": "oie.taht@example.ee"}),
        )
        .await;
    bin.kill9();
    want.cref = created["customer_ref"].as_str().unwrap().to_string();
    want.ops.push((
        created["operation_id"].as_str().unwrap().to_string(),
        "customer",
        "create",
    ));
    let cref = want.cref.clone();

    type Step = (&'static str, &'static str, &'static str, Value);
    let steps: Vec<Step> = vec![
        (
            "",
            "customer",
            "edit",
            json!({"last_name": "Kask", "phone": "+372 5123 4567"}),
        ),
        ("", "customer", "edit", json!({"last_name": "Mets"})),
        ("/addresses", "address", "create", address()),
        (
            "/contacts",
            "contact",
            "create",
            json!({"kind": "email", "value": "oie@example.ee"}),
        ),
    ];
    for (i, (suffix, kind, action, body)) in steps.into_iter().enumerate() {
        bin = Binary::spawn(dir.path());
        let api = bin.api();
        check(&api, &want).await;
        let path = format!("/v1/customers/{cref}{suffix}");
        let accepted = if suffix.is_empty() {
            api.patch(&path, &body).await
        } else {
            api.post(&path, &body).await
        };
        let accepted = accepted.expect(202).clone();
        bin.kill9(); // right after the 202
        assert!(!bin.running());
        want.ops.push((
            accepted["operation_id"].as_str().unwrap().to_string(),
            kind,
            action,
        ));
        match i {
            0 => {
                want.last_name = Some("Kask");
                want.phone = Some("+372 5123 4567");
            }
            1 => want.last_name = Some("Mets"),
            2 => want.address_id = Some(accepted["record_id"].as_str().unwrap().to_string()),
            _ => want.contact_id = Some(accepted["record_id"].as_str().unwrap().to_string()),
        }
    }

    let bin = Binary::spawn(dir.path());
    let api = bin.api();
    check(&api, &want).await;
    assert_eq!(api.search_refs("mets").await, vec![cref.clone()]);
    assert_eq!(api.search_refs("+372 5123 4567").await, vec![cref.clone()]);
    // The sequence continues after the kills: a new customer gets a fresh reference.
    let next = api
        .create_customer(&json!({"first_name": "Jaan", "last_name": "Tamm"}))
        .await;
    assert_ne!(next["customer_ref"], cref.as_str());
    assert_eq!(api.op_count().await, 6);
    drop(bin);
}

/// One client's record of what it was told.
#[derive(Default)]
struct ClientLog {
    /// (operation_id, customer_ref, email) of every 202.
    acked: Vec<(String, String, String)>,
    /// The e-mail of the request that was in flight when the node died, if any.
    in_flight: Option<String>,
    /// Answers that were neither a 202 nor a dead connection.
    unexpected: Vec<String>,
}

/// 64 clients create customers for about three seconds; the node is killed with SIGKILL while
/// they are still sending. After a restart every acknowledged operation is there exactly once,
/// every acknowledged customer reads back, and the only unacknowledged operations are requests
/// that were in flight at the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_then_kill_9_every_acknowledged_operation_once() {
    const CLIENTS: usize = 64;
    const RUN_FOR: Duration = Duration::from_secs(3);
    const CAP: usize = 30_000;

    let dir = tempfile::tempdir().unwrap();
    let mut bin = Binary::spawn(dir.path());
    let api = bin.api();
    let killed = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));

    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let api = api.clone();
        let killed = killed.clone();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let mut log = ClientLog::default();
            let mut i = 0usize;
            loop {
                // Each client sends until the node dies under it.
                sent.fetch_add(1, Ordering::SeqCst);
                let email = format!("c{client}.n{i}@example.ee");
                i += 1;
                let body = json!({"first_name": "Kliendi", "last_name": "Tamm", "email": email});
                let result = api
                    .client
                    .post(api.url("/v1/customers"))
                    .json(&body)
                    .send()
                    .await;
                match result {
                    Ok(resp) if resp.status() == 202 => match resp.json::<Value>().await {
                        Ok(b) => log.acked.push((
                            b["operation_id"].as_str().unwrap_or_default().to_string(),
                            b["customer_ref"].as_str().unwrap_or_default().to_string(),
                            email,
                        )),
                        // The 202 head arrived but not its body: not an acknowledgement.
                        Err(_) if killed.load(Ordering::SeqCst) => {
                            log.in_flight = Some(email);
                            break;
                        }
                        Err(e) => log.unexpected.push(format!("202 without a body: {e}")),
                    },
                    Ok(resp) => {
                        let status = resp.status();
                        let text = resp.text().await.unwrap_or_default();
                        log.unexpected.push(format!("{status}: {text}"));
                        break;
                    }
                    Err(_) if killed.load(Ordering::SeqCst) => {
                        log.in_flight = Some(email);
                        break;
                    }
                    Err(e) => {
                        log.unexpected
                            .push(format!("transport error before the kill: {e}"));
                        break;
                    }
                }
            }
            log
        }));
    }

    // Let them run for RUN_FOR or until CAP requests went out, then kill the node while every
    // client has a request in flight.
    let started = Instant::now();
    while started.elapsed() < RUN_FOR && sent.load(Ordering::SeqCst) < CAP {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    killed.store(true, Ordering::SeqCst);
    bin.kill9();

    let mut acked: Vec<(String, String, String)> = Vec::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut unexpected = Vec::new();
    for t in tasks {
        let log = tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("a client hung after the kill")
            .expect("client task");
        acked.extend(log.acked);
        in_flight.extend(log.in_flight);
        unexpected.extend(log.unexpected);
    }
    assert_eq!(
        in_flight.len(),
        CLIENTS,
        "every client was cut off by the kill"
    );
    assert!(
        unexpected.is_empty(),
        "unexpected answers: {:?}",
        &unexpected[..unexpected.len().min(5)]
    );
    assert!(
        acked.len() >= CLIENTS,
        "too little load to mean anything: {} acknowledged",
        acked.len()
    );
    let acked_ids: HashSet<&str> = acked.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(
        acked_ids.len(),
        acked.len(),
        "the node gave out an operation id twice"
    );
    let acked_refs: HashSet<&str> = acked.iter().map(|(_, r, _)| r.as_str()).collect();
    assert_eq!(
        acked_refs.len(),
        acked.len(),
        "the node gave out a customer reference twice"
    );
    eprintln!(
        "{} acknowledged in {:?} by {CLIENTS} clients; {} in flight at the kill",
        acked.len(),
        started.elapsed(),
        in_flight.len()
    );

    // Restart on the same files.
    let bin = Binary::spawn(dir.path());
    let api = bin.api();
    let ops = api.all_operations("", 500).await;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for o in &ops {
        *seen.entry(o["operation_id"].as_str().unwrap()).or_default() += 1;
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "an operation is listed twice"
    );
    let seqs: HashSet<u64> = ops.iter().map(|o| o["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), ops.len(), "sequence numbers are unique");
    let by_id: HashMap<&str, &Value> = ops
        .iter()
        .map(|o| (o["operation_id"].as_str().unwrap(), o))
        .collect();
    let missing: Vec<&str> = acked_ids
        .iter()
        .filter(|id| !by_id.contains_key(*id))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged operations lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for (id, cref, _) in &acked {
        let op = by_id[id.as_str()];
        assert_eq!(op["customer_ref"], cref.as_str(), "{op}");
        assert_eq!(
            (op["kind"].as_str(), op["action"].as_str()),
            (Some("customer"), Some("create"))
        );
        assert_eq!(op["state"], "pending");
    }

    // Operations nobody was told about: only requests in flight at the kill, each at most once.
    let extras: Vec<&Value> = ops
        .iter()
        .filter(|o| !acked_ids.contains(o["operation_id"].as_str().unwrap()))
        .collect();
    assert!(
        extras.len() <= in_flight.len(),
        "{} unacknowledged operations but only {} requests in flight",
        extras.len(),
        in_flight.len()
    );
    eprintln!("{} of them landed unacknowledged", extras.len());
    let mut extra_emails = HashSet::new();
    for o in &extras {
        let c = api.customer(o["customer_ref"].as_str().unwrap()).await;
        let email = c["email"].as_str().unwrap().to_string();
        assert!(
            in_flight.contains(&email),
            "{email} was never in flight at the kill"
        );
        assert!(
            extra_emails.insert(email),
            "an in-flight request landed twice"
        );
    }

    // Every acknowledged customer reads back with what its client sent (16 readers at a time).
    let acked = Arc::new(acked.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..16 {
        let (api, acked, next) = (api.clone(), acked.clone(), next.clone());
        readers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((_, cref, email)) = acked.get(i) else {
                    break;
                };
                let c = api.customer(cref).await;
                assert_eq!(c["email"], email.as_str(), "{cref}");
                assert_eq!(c["last_name"], "Tamm");
            }
        }));
    }
    for r in readers {
        tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .expect("readers hung")
            .expect("reader");
    }
    // And the search index holds them: an acknowledged e-mail finds exactly its customer.
    let (_, cref, email) = &acked[acked.len() / 2];
    assert_eq!(api.search_refs(email).await, vec![cref.clone()]);

    // The node carries on from where it was: a new create gets a new, higher sequence number.
    let max_seq = seqs.iter().max().copied().unwrap_or(0);
    let new = api
        .create_customer(&json!({"first_name": "Uus", "last_name": "Klient"}))
        .await;
    let shown = api
        .get(&format!(
            "/v1/sync/operations/{}",
            new["operation_id"].as_str().unwrap()
        ))
        .await;
    assert!(shown.expect(200)["seq"].as_u64().unwrap() > max_seq);
    assert!(!acked_refs.contains(new["customer_ref"].as_str().unwrap()));
    drop(bin);
}

/// SIGTERM is a clean stop: exit status 0, and the restarted node shows the same customer and
/// queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_a_restart_shows_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut bin = Binary::spawn(dir.path());
    let api = bin.api();
    let cref = api
        .create_customer(&json!({"first_name": "Õie", "last_name": "Täht"}))
        .await["customer_ref"]
        .as_str()
        .unwrap()
        .to_string();
    api.patch(
        &format!("/v1/customers/{cref}"),
        &json!({"last_name": "Kask"}),
    )
    .await
    .expect(202);
    api.patch(
        &format!("/v1/customers/{cref}"),
        &json!({"last_name": "Mets"}),
    )
    .await
    .expect(202);
    api.post(&format!("/v1/customers/{cref}/addresses"), &address())
        .await
        .expect(202);
    let before = api.customer(&cref).await;
    let ops_before = api.all_operations("", 100).await;
    let status = bin.terminate();
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{}",
        bin.stderr()
    );
    // A clean stop seals the file, so the next start can skip redb's walk of every page.
    let seal = bin.data_dir.join("outpost.redb.clean");
    assert!(seal.exists(), "no seal after a clean stop");

    let bin = Binary::spawn(dir.path());
    assert!(!seal.exists(), "the seal outlived the start that used it");
    let api = bin.api();
    assert_eq!(api.customer(&cref).await, before);
    assert_eq!(api.all_operations("", 100).await, ops_before);
    drop(bin);
}

/// A second node on the same data dir is refused at start with a message, and the first one
/// goes on serving and writing unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_the_same_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Binary::spawn(dir.path());
    let api = first.api();
    let cref = api
        .create_customer(&json!({"first_name": "Mari", "last_name": "Maasikas"}))
        .await["customer_ref"]
        .as_str()
        .unwrap()
        .to_string();

    let second = Binary::try_spawn(dir.path());
    let Err(why) = second else {
        panic!("a second node started on a store that is in use");
    };
    assert!(why.contains("exited"), "{why}");
    assert!(why.contains("Database already open"), "{why}");

    assert!(first.running());
    assert_eq!(api.customer(&cref).await["last_name"], "Maasikas");
    api.patch(
        &format!("/v1/customers/{cref}"),
        &json!({"last_name": "Kask"}),
    )
    .await
    .expect(202);
    first.kill9();
    let bin = Binary::spawn(dir.path());
    assert_eq!(bin.api().customer(&cref).await["last_name"], "Kask");
    assert_eq!(bin.api().op_count().await, 2);
    drop(bin);
}

/// `Node::shutdown` under load: whatever was acknowledged before the stop is there after the
/// restart, exactly once; requests cut off by the stop may have landed, but only once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_shutdown_under_load_keeps_every_acknowledged_write() {
    const CLIENTS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let node = common::start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (api, stop) = (api.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failed = Vec::new();
            for i in 0..2_000 {
                let email = format!("s{client}.n{i}@example.ee");
                let body = json!({"first_name": "Mari", "last_name": "Maasikas", "email": email});
                match api
                    .client
                    .post(api.url("/v1/customers"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 202 => match r.json::<Value>().await {
                        Ok(b) => acked.push(b["operation_id"].as_str().unwrap().to_string()),
                        Err(_) => failed.push(email),
                    },
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let text = r.text().await.unwrap_or_default();
                        // A write refused because the node is stopping says so, as JSON.
                        assert_eq!(status, 503, "{text}");
                        assert!(text.contains("shutting_down"), "{text}");
                        failed.push(email);
                    }
                    Err(e) => {
                        assert!(
                            stop.load(Ordering::SeqCst),
                            "transport error before the stop: {e}"
                        );
                        failed.push(email);
                    }
                }
                if stop.load(Ordering::SeqCst) {
                    break;
                }
            }
            (acked, failed)
        }));
    }
    common::poll(Duration::from_secs(10), "some load", || {
        let node = &node;
        async move { (common::op_total(node) >= 200).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    common::stop_node(node).await;

    let mut acked = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (a, f) = tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("client hung")
            .unwrap();
        acked.extend(a);
        failed += f.len();
    }
    let node = common::start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    let ops = api.all_operations("", 500).await;
    let ids: HashSet<&str> = ops
        .iter()
        .map(|o| o["operation_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), ops.len(), "no operation twice");
    for id in &acked {
        assert!(
            ids.contains(id.as_str()),
            "acknowledged operation {id} lost"
        );
    }
    assert!(
        ops.len() >= acked.len() && ops.len() <= acked.len() + failed,
        "{} ops, {} acked, {failed} cut off",
        ops.len(),
        acked.len()
    );
    common::stop_node(node).await;
}
