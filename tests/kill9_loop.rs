//! kill -9 in a loop (R1): the real `outpost` binary under concurrent HTTP writers (creates
//! and edits) is killed with SIGKILL at a random moment, restarted on the same data dir, and
//! checked; then again, accumulating. After every restart: the store opens; every operation
//! ever acknowledged is listed exactly once with its customer and content; every operation
//! listed was acknowledged, or was in flight at a kill (once); sampled customers read back
//! with their last acknowledged change.
//!
//! `OUTPOST_KILL_CYCLES` (default 5) sets the number of kills; `OUTPOST_KILL_SEED` fixes the
//! seed (random otherwise; printed, and printed again on failure).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Api, Binary};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Kills when `OUTPOST_KILL_CYCLES` is unset: the bounded CI size.
const CI_CYCLES: u64 = 5;
/// Most requests one client sends in one cycle.
const CLIENT_CAP: usize = 3_000;
/// Longest a client may take to notice the kill.
const AFTER_KILL: Duration = Duration::from_secs(20);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
    })
}

/// An operation as the till knows it: its customer and the e-mail it set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Op {
    customer: String,
    action: &'static str,
    email: String,
}

#[derive(Default)]
struct ClientLog {
    acked: Vec<(String, Op)>,
    /// A request cut off by the kill: (customer for an edit, action, e-mail).
    in_flight: Option<Op>,
    unexpected: Vec<String>,
}

/// One client: creates, and edits of the customers it created, until the node dies.
async fn client(
    api: Api,
    id: usize,
    cycle: u64,
    seed: u64,
    mine: Vec<String>,
    killed: Arc<AtomicBool>,
) -> ClientLog {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64) << 20 ^ cycle);
    let mut mine = mine;
    let mut log = ClientLog::default();
    for i in 0..CLIENT_CAP {
        let email = format!("k{cycle}x{id}x{i}@example.ee");
        let edit = !mine.is_empty() && rng.gen_bool(0.3);
        let (op, request) = if edit {
            let customer = mine[rng.gen_range(0..mine.len())].clone();
            let req = api
                .client
                .patch(api.url(&format!("/v1/customers/{customer}")))
                .json(&json!({ "email": email }));
            (
                Op {
                    customer,
                    action: "edit",
                    email,
                },
                req,
            )
        } else {
            let req = api
                .client
                .post(api.url("/v1/customers"))
                .json(&json!({"first_name": "Kliendi", "last_name": "Tamm", "email": email}));
            (
                Op {
                    customer: String::new(),
                    action: "create",
                    email,
                },
                req,
            )
        };
        match request.send().await {
            Ok(resp) if resp.status() == 202 => match resp.json::<Value>().await {
                Ok(b) => {
                    let mut op = op;
                    if op.action == "create" {
                        op.customer = b["customer_ref"].as_str().unwrap_or_default().to_string();
                        mine.push(op.customer.clone());
                    }
                    log.acked.push((
                        b["operation_id"].as_str().unwrap_or_default().to_string(),
                        op,
                    ));
                }
                // The head came but not the body: not an acknowledgement.
                Err(_) if killed.load(Ordering::SeqCst) => {
                    log.in_flight = Some(op);
                    break;
                }
                Err(e) => {
                    log.unexpected.push(format!("202 without a body: {e}"));
                    break;
                }
            },
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                log.unexpected.push(format!("{status}: {text}"));
                break;
            }
            Err(_) if killed.load(Ordering::SeqCst) => {
                log.in_flight = Some(op);
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
}

/// Totals of a run.
#[derive(Debug, Default)]
struct Totals {
    cycles: u64,
    acked: u64,
    in_flight: u64,
    landed_unacked: u64,
    lost: u64,
    duplicated: u64,
}

/// Checks a restarted node against everything acknowledged so far and the requests in flight
/// at the last kill; adopts the in-flight operations that landed.
async fn verify(
    api: &Api,
    expected: &mut HashMap<String, Op>,
    in_flight: &[Op],
    totals: &mut Totals,
    rng: &mut StdRng,
) -> Vec<String> {
    let mut errors = Vec::new();
    let ops = api.all_operations("", 500).await;
    let mut seen: HashMap<&str, &Value> = HashMap::new();
    for o in &ops {
        let id = o["operation_id"].as_str().unwrap_or_default();
        if seen.insert(id, o).is_some() {
            totals.duplicated += 1;
            errors.push(format!("operation {id} listed twice"));
        }
    }
    for (id, want) in expected.iter() {
        match seen.get(id.as_str()) {
            None => {
                totals.lost += 1;
                errors.push(format!("acknowledged {id} ({want:?}) lost"));
            }
            Some(o) => {
                if o["customer_ref"] != want.customer.as_str() || o["action"] != want.action {
                    errors.push(format!("{id} changed: {o} vs {want:?}"));
                }
            }
        }
    }
    let mut flying: HashMap<&str, &Op> = in_flight.iter().map(|o| (o.email.as_str(), o)).collect();
    for o in &ops {
        let id = o["operation_id"].as_str().unwrap_or_default();
        if expected.contains_key(id) {
            continue;
        }
        let shown = api.get(&format!("/v1/sync/operations/{id}")).await;
        let email = shown.body["payload"]["email"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match flying.remove(email.as_str()) {
            Some(f) if f.action == o["action"] => {
                let customer = o["customer_ref"].as_str().unwrap_or_default().to_string();
                if f.action == "edit" && f.customer != customer {
                    errors.push(format!("in-flight edit landed on another customer: {o}"));
                }
                expected.insert(
                    id.to_string(),
                    Op {
                        customer,
                        action: f.action,
                        email,
                    },
                );
                totals.landed_unacked += 1;
            }
            _ => errors.push(format!(
                "{id} ({email}) is listed but was neither acknowledged nor in flight: {o}"
            )),
        }
    }
    // A sample of customers reads back with the e-mail of its last operation.
    let mut last: HashMap<&str, (u64, &str)> = HashMap::new();
    for o in &ops {
        let id = o["operation_id"].as_str().unwrap_or_default();
        if let Some(want) = expected.get(id) {
            let seq = o["seq"].as_u64().unwrap_or_default();
            let e = last.entry(want.customer.as_str()).or_insert((0, ""));
            if seq >= e.0 {
                *e = (seq, want.email.as_str());
            }
        }
    }
    let customers: Vec<(&str, &str)> = last.iter().map(|(c, (_, e))| (*c, *e)).collect();
    for _ in 0..customers.len().min(25) {
        let (c, email) = customers[rng.gen_range(0..customers.len())];
        let got = api.get(&format!("/v1/customers/{c}")).await;
        if got.status != 200 || got.body["email"] != email {
            errors.push(format!(
                "customer {c} reads {} {}, want e-mail {email}",
                got.status, got.body
            ));
        }
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_loop_under_concurrent_writers_loses_and_duplicates_nothing() {
    let cycles = env_u64("OUTPOST_KILL_CYCLES").unwrap_or(CI_CYCLES);
    let seed = env_u64("OUTPOST_KILL_SEED").unwrap_or_else(rand::random);
    eprintln!("kill -9 loop: {cycles} cycles, seed {seed}");
    let fail = |cycle: u64, why: String| -> ! {
        panic!(
            "kill -9 loop failed at cycle {cycle}: {why}\nreplay with OUTPOST_KILL_SEED={seed} \
             OUTPOST_KILL_CYCLES={cycles} cargo test --release --test kill9_loop -- --nocapture"
        )
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut expected: HashMap<String, Op> = HashMap::new();
    let mut in_flight: Vec<Op> = Vec::new();
    let mut totals = Totals::default();
    let started = Instant::now();
    for cycle in 0..=cycles {
        let mut bin = match Binary::try_spawn(dir.path()) {
            Ok(b) => b,
            Err(e) => fail(cycle, format!("the node did not start: {e}")),
        };
        let api = bin.api();
        let errors = verify(&api, &mut expected, &in_flight, &mut totals, &mut rng).await;
        if !errors.is_empty() {
            fail(
                cycle,
                format!(
                    "{} problems, e.g. {:?}",
                    errors.len(),
                    &errors[..errors.len().min(5)]
                ),
            );
        }
        if cycle == cycles {
            break;
        }
        let clients = rng.gen_range(1..=32usize);
        let run_for = Duration::from_millis(rng.gen_range(20..=1_500));
        let customers: Vec<String> = {
            let mut c: Vec<String> = expected
                .values()
                .filter(|o| o.action == "create")
                .map(|o| o.customer.clone())
                .collect();
            c.sort();
            c
        };
        let killed = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for id in 0..clients {
            let mine: Vec<String> = customers
                .iter()
                .skip(id)
                .step_by(clients)
                .take(8)
                .cloned()
                .collect();
            tasks.push(tokio::spawn(client(
                api.clone(),
                id,
                cycle,
                seed,
                mine,
                killed.clone(),
            )));
        }
        tokio::time::sleep(run_for).await;
        killed.store(true, Ordering::SeqCst);
        bin.kill9();
        in_flight.clear();
        let mut acked_now = 0;
        for t in tasks {
            let log = tokio::time::timeout(AFTER_KILL, t)
                .await
                .unwrap_or_else(|_| fail(cycle, "a client hung after the kill".into()))
                .expect("client task");
            if !log.unexpected.is_empty() {
                fail(cycle, format!("unexpected answers: {:?}", log.unexpected));
            }
            for (id, op) in log.acked {
                if expected.insert(id.clone(), op).is_some() {
                    fail(cycle, format!("operation id {id} acknowledged twice"));
                }
                acked_now += 1;
            }
            in_flight.extend(log.in_flight);
        }
        totals.acked += acked_now;
        totals.in_flight += in_flight.len() as u64;
        totals.cycles += 1;
        if (cycle + 1).is_multiple_of(10) {
            eprintln!(
                "  {} cycles, {} operations, {:?}",
                cycle + 1,
                expected.len(),
                started.elapsed()
            );
        }
    }
    eprintln!(
        "kill -9 loop: {} cycles (seed {seed}) in {:?}: {} acknowledged, {} in flight at kills of \
         which {} landed, {} operations in the store; lost {}, duplicated {}",
        totals.cycles,
        started.elapsed(),
        totals.acked,
        totals.in_flight,
        totals.landed_unacked,
        expected.len(),
        totals.lost,
        totals.duplicated
    );
    assert_eq!(totals.lost, 0);
    assert_eq!(totals.duplicated, 0);
}
