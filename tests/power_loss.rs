//! Power loss, not just kill -9: the node's real `Store` and group-commit writer run on a
//! simulated disk ([`outpost::store::faulty`]) whose unsynced writes are dropped, kept in part,
//! or torn when the power goes. Each cycle: concurrent writers through `WriterHandle::execute`,
//! a power cut at a random backend call, the image that survived, a reopen (redb repairs), and
//! the check: the store opens; every acknowledged operation is there exactly once and reads
//! back through the indexes; nothing is there that was not asked for; unacknowledged operations
//! that landed were in flight at the cut, once each.
//!
//! `OUTPOST_POWERLOSS_CYCLES` (default 30) sets how many cycles run; each seed runs a chain of
//! 1–4 cycles on one disk (a cut can also strike while the previous cut is being repaired).
//! `OUTPOST_POWERLOSS_SEED=<seed>` replays one chain; `OUTPOST_POWERLOSS_BASE_SEED` fixes the
//! first seed of a run. A failure prints the seed to replay. Seeds fix every decision (writers,
//! cut point, loss kind); thread scheduling still varies, so a replay is close, not identical.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost::domain::{Action, NewCustomer, OperationId, Payload, RecordKind};
use outpost::store::faulty::{FaultyDisk, Loss};
use outpost::store::writer::{self, WriteError, WriterOptions};
use outpost::store::{
    Command, OpFilter, Outcome, Store, StoreError, StoreLocation, StoreOptions, Submission,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Cycles run when `OUTPOST_POWERLOSS_CYCLES` is unset: the bounded CI size.
const CI_CYCLES: u64 = 30;
/// Longest a round of writers runs before the power is cut by the clock instead.
const ROUND_TIME: Duration = Duration::from_secs(3);
/// Most operations one writer sends in one round.
const WRITER_CAP: usize = 2_000;
/// Longest wait for anything (a writer, the writer thread) after the cut.
const WAIT: Duration = Duration::from_secs(30);
/// Seeds that once found a bug; each runs in every CI pass.
const REGRESSION_SEEDS: &[u64] = &[];

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
    })
}

fn options() -> StoreOptions {
    StoreOptions::new(4 << 20)
}

/// What an operation carries that identifies it: the create's or the edit's e-mail.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Token {
    customer: String,
    action: Action,
    email: String,
}

/// What the harness knows must be in the store.
#[derive(Default)]
struct Expected {
    /// Acknowledged (or seen after a reopen, hence durable) operations.
    ops: HashMap<OperationId, Token>,
    /// Creates by e-mail → customer reference, for in-flight creates that may have landed.
    created: HashMap<String, String>,
}

/// What one round of writers did.
#[derive(Default)]
struct RoundLog {
    acked: Vec<(OperationId, Token)>,
    /// Requests that got no acknowledgement: they may or may not have landed.
    in_flight: Vec<Token>,
    unexpected: Vec<String>,
}

/// Totals of a run.
#[derive(Default, Debug)]
struct Totals {
    chains: u64,
    cycles: u64,
    acked: u64,
    in_flight: u64,
    landed_unacked: u64,
    cuts_during_open: u64,
    by_loss: HashMap<&'static str, u64>,
    sectors_lost: u64,
    torn: u64,
    lost: u64,
    duplicated: u64,
}

fn email(tag: &str, round: usize, w: usize, i: usize) -> String {
    format!("{tag}{round}x{w}x{i}@example.ee")
}

fn create(email: &str) -> Command {
    Command::Submit(Submission::NewCustomer(NewCustomer {
        first_name: "Mari".into(),
        last_name: "Maasikas".into(),
        email: Some(email.to_string()),
        phone: None,
        customer_group: None,
        language: None,
    }))
}

fn edit(customer: &str, email: &str) -> Command {
    let payload = Payload::parse(
        RecordKind::Customer,
        Action::Edit,
        serde_json::json!({ "email": email }),
    )
    .expect("a valid edit");
    Command::Submit(Submission::Change {
        customer: customer.to_string(),
        record_id: None,
        payload,
    })
}

/// The e-mail an operation carries (its identity for this harness).
fn op_email(payload: &Payload) -> Option<String> {
    match payload {
        Payload::CustomerCreate(c) => c.email.clone(),
        Payload::CustomerEdit(p) => p.email.clone().flatten(),
        _ => None,
    }
}

/// Runs `writers` concurrent writers until the disk loses power (or the round's bounds).
async fn run_writers(
    handle: &writer::WriterHandle,
    disk: &Arc<FaultyDisk>,
    writers: usize,
    round: usize,
    seed: u64,
    known: &[String],
) -> RoundLog {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let handle = handle.clone();
        let disk = disk.clone();
        let mut mine: Vec<String> = known
            .iter()
            .skip(w)
            .step_by(writers)
            .take(8)
            .cloned()
            .collect();
        let mut rng = StdRng::seed_from_u64(seed ^ ((w as u64 + 1) << 32) ^ round as u64);
        tasks.push(tokio::spawn(async move {
            let mut log = RoundLog::default();
            let started = Instant::now();
            for i in 0..WRITER_CAP {
                if started.elapsed() > ROUND_TIME + WAIT {
                    log.unexpected.push("a writer ran past its time".into());
                    break;
                }
                let edit_one = !mine.is_empty() && rng.gen_bool(0.3);
                let (command, token) = if edit_one {
                    let customer = mine[rng.gen_range(0..mine.len())].clone();
                    let e = email("e", round, w, i);
                    (
                        edit(&customer, &e),
                        Token {
                            customer,
                            action: Action::Edit,
                            email: e,
                        },
                    )
                } else {
                    let e = email("c", round, w, i);
                    (
                        create(&e),
                        Token {
                            customer: String::new(),
                            action: Action::Create,
                            email: e,
                        },
                    )
                };
                match handle.execute(command).await {
                    Ok(Outcome::Accepted {
                        operation_id,
                        customer_ref,
                        ..
                    }) => {
                        let mut token = token;
                        if token.action == Action::Create {
                            token.customer = customer_ref.clone();
                            mine.push(customer_ref);
                        }
                        log.acked.push((operation_id, token));
                    }
                    Ok(other) => {
                        log.unexpected.push(format!("unexpected outcome {other:?}"));
                        break;
                    }
                    Err(WriteError::Store(_)) if disk.is_cut() => {
                        log.in_flight.push(token);
                        break;
                    }
                    Err(e) => {
                        log.unexpected.push(format!("refused before the cut: {e}"));
                        break;
                    }
                }
                if disk.is_cut() {
                    break;
                }
            }
            log
        }));
    }
    let mut all = RoundLog::default();
    for t in tasks {
        let log = tokio::time::timeout(WAIT + ROUND_TIME, t)
            .await
            .expect("a writer hung after the cut")
            .expect("writer task");
        all.acked.extend(log.acked);
        all.in_flight.extend(log.in_flight);
        all.unexpected.extend(log.unexpected);
    }
    all
}

/// Every operation in the store, paged.
fn all_ops(store: &Store) -> Result<Vec<outpost::domain::Operation>, StoreError> {
    let mut out = Vec::new();
    let mut after = None;
    for _ in 0..100_000 {
        let page = store.operations(&OpFilter {
            state: None,
            after_seq: after,
            limit: 1_000,
        })?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        out.extend(page);
    }
    Ok(out)
}

/// Checks the reopened store against what was acknowledged and what was in flight; learns the
/// in-flight operations that landed (they are durable now). Returns (landed, errors).
fn verify(
    store: &Store,
    expected: &mut Expected,
    in_flight: &[Token],
    totals: &mut Totals,
) -> Vec<String> {
    let mut errors = Vec::new();
    let ops = match all_ops(store) {
        Ok(ops) => ops,
        Err(e) => return vec![format!("listing operations failed: {e}")],
    };
    let mut ids = HashSet::new();
    let mut seqs = HashSet::new();
    for op in &ops {
        if !ids.insert(op.id) {
            totals.duplicated += 1;
            errors.push(format!("operation {} listed twice", op.id));
        }
        if !seqs.insert(op.seq) {
            errors.push(format!("sequence number {} used twice", op.seq));
        }
    }
    match store.operation_counts() {
        Ok(counts) => {
            let sum: u64 = counts.iter().map(|(_, n)| n).sum();
            if sum != ops.len() as u64 {
                errors.push(format!(
                    "state index counts {sum} operations, the table {}",
                    ops.len()
                ));
            }
        }
        Err(e) => errors.push(format!("operation counts failed: {e}")),
    }
    let by_id: HashMap<OperationId, &outpost::domain::Operation> =
        ops.iter().map(|o| (o.id, o)).collect();
    for (id, token) in &expected.ops {
        match by_id.get(id) {
            None => {
                totals.lost += 1;
                errors.push(format!("acknowledged operation {id} ({token:?}) lost"));
            }
            Some(op) => {
                if op.customer_ref != token.customer
                    || op.action() != token.action
                    || op_email(&op.payload).as_deref() != Some(token.email.as_str())
                {
                    errors.push(format!("operation {id} changed: {op:?} vs {token:?}"));
                }
            }
        }
    }
    // Whatever else is there must have been in flight at the cut, and landed once.
    let mut flying: HashMap<&str, &Token> =
        in_flight.iter().map(|t| (t.email.as_str(), t)).collect();
    for op in &ops {
        if expected.ops.contains_key(&op.id) {
            continue;
        }
        let email = op_email(&op.payload).unwrap_or_default();
        match flying.remove(email.as_str()) {
            Some(t) if t.action == op.action() => {
                let customer = if t.action == Action::Create {
                    op.customer_ref.clone()
                } else {
                    t.customer.clone()
                };
                if customer != op.customer_ref {
                    errors.push(format!(
                        "in-flight edit landed on the wrong customer: {op:?}"
                    ));
                }
                if t.action == Action::Create {
                    expected.created.insert(email.clone(), customer.clone());
                }
                expected.ops.insert(
                    op.id,
                    Token {
                        customer,
                        action: t.action,
                        email,
                    },
                );
                totals.landed_unacked += 1;
            }
            _ => errors.push(format!(
                "operation {} ({email}) is there but was neither acknowledged nor in flight \
                 (or landed twice)",
                op.id
            )),
        }
    }
    // Each operation reads back by id (the id index), and each customer's view is its last
    // edit (the view table), found by its e-mail (the search index), for a sample.
    for op in &ops {
        match store.operation(op.id) {
            Ok(Some(o)) if o.seq == op.seq => {}
            other => errors.push(format!("operation {} by id: {other:?}", op.id)),
        }
    }
    let mut last_email: HashMap<&str, (u64, &str)> = HashMap::new();
    for op in &ops {
        if let Some(t) = expected.ops.get(&op.id) {
            let e = last_email
                .entry(op.customer_ref.as_str())
                .or_insert((0, ""));
            if op.seq >= e.0 {
                *e = (op.seq, t.email.as_str());
            }
        }
    }
    for (i, (customer, (_, want))) in last_email.iter().enumerate() {
        match store.customer(customer) {
            Ok(Some(c)) => {
                if c.view.fields.email.as_deref() != Some(*want) {
                    errors.push(format!(
                        "customer {customer} shows e-mail {:?}, its last operation set {want}",
                        c.view.fields.email
                    ));
                }
            }
            other => errors.push(format!("customer {customer} does not read back: {other:?}")),
        }
        if i < 20 {
            match store.search(want, 10) {
                Ok(found) if found.iter().any(|c| c.view.customer_ref == **customer) => {}
                other => errors.push(format!(
                    "search for {want} misses {customer}: {:?}",
                    other.map(|v| v.len())
                )),
            }
        }
    }
    errors
}

fn spawn_writer(
    store: &Store,
    rng: &mut StdRng,
) -> (writer::WriterHandle, std::thread::JoinHandle<()>) {
    let group = [1usize, 8, 64, 512][rng.gen_range(0..4)];
    writer::spawn(
        store.clone(),
        WriterOptions {
            store_id: "S0001".into(),
            queue: 1_024,
            group_commit_max: group,
            // Small and varied, so that merges of the search terms log meet the power cuts.
            merge: writer::MergeOptions {
                start_at_entries: [1usize, 64, 4096][rng.gen_range(0..3)],
                chunk_entries: [1usize, 16, 1024][rng.gen_range(0..3)],
                idle_after: std::time::Duration::from_millis(rng.gen_range(0..5)),
            },
            group_wait: std::time::Duration::ZERO,
            replies_on: None,
        },
    )
    .expect("spawn writer")
}

/// Joins the writer thread, bounded.
async fn join_writer(thread: std::thread::JoinHandle<()>) {
    let joined = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || thread.join()))
        .await
        .expect("the writer thread did not stop after the cut");
    assert!(matches!(joined, Ok(Ok(()))), "the writer thread panicked");
}

/// One chain: a fresh disk, optionally some committed history and a clean close, then 1–4
/// cycles of writers, power cut, reopen and check. Panics with the seed on any failure.
async fn chain(seed: u64, max_cycles: u64, totals: &mut Totals) -> u64 {
    let fail = |why: String| -> ! {
        panic!(
            "power-loss chain failed: {why}\nreplay with OUTPOST_POWERLOSS_SEED={seed} \
             cargo test --test power_loss -- --nocapture"
        )
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut expected = Expected::default();
    let mut known: Vec<String> = Vec::new();
    let disk = FaultyDisk::new();
    let store = Store::open_with(StoreLocation::faulty("disk", &disk), &options())
        .unwrap_or_else(|e| fail(format!("a new store did not open: {e}")));
    // Some history, committed and closed cleanly (as a node that was stopped and started).
    let history = rng.gen_range(0..200usize);
    if history > 0 {
        let (handle, thread) = spawn_writer(&store, &mut rng);
        for i in 0..history {
            let e = email("h", 0, 0, i);
            match handle.execute(create(&e)).await {
                Ok(Outcome::Accepted {
                    operation_id,
                    customer_ref,
                    ..
                }) => {
                    known.push(customer_ref.clone());
                    expected.created.insert(e.clone(), customer_ref.clone());
                    expected.ops.insert(
                        operation_id,
                        Token {
                            customer: customer_ref,
                            action: Action::Create,
                            email: e,
                        },
                    );
                }
                other => fail(format!("history write failed: {other:?}")),
            }
        }
        drop(handle);
        join_writer(thread).await;
    }
    drop(store);
    let mut image = disk.current_image();

    let cycles = rng.gen_range(1..=4u64).min(max_cycles);
    let mut in_flight: Vec<Token> = Vec::new();
    for round in 1..=cycles as usize {
        let loss = Loss::ALL[rng.gen_range(0..Loss::ALL.len())];
        let disk = FaultyDisk::from_image(image.clone());
        // Sometimes the power goes again while the store is being opened (repair, schema
        // check): the next open must still find everything.
        if rng.gen_bool(0.15) {
            disk.cut_after(rng.gen_range(1..=40));
            let opened = Store::open_with(StoreLocation::faulty("disk", &disk), &options());
            drop(opened);
            disk.cut();
            let (img, _) = disk.surviving_image(loss, &mut rng);
            image = img;
            totals.cuts_during_open += 1;
            // The same disk, with what the cut left, is opened below.
        }
        let disk = FaultyDisk::from_image(image.clone());
        let store = match Store::open_with(StoreLocation::faulty("disk", &disk), &options()) {
            Ok(s) => s,
            Err(e) => fail(format!(
                "round {round}: the store did not open after the cut: {e}"
            )),
        };
        let errors = verify(&store, &mut expected, &in_flight, totals);
        if !errors.is_empty() {
            fail(format!(
                "round {round}: {} problems after the reopen, e.g. {:?}",
                errors.len(),
                &errors[..errors.len().min(5)]
            ));
        }
        known.extend(expected.created.values().cloned());
        known.sort();
        known.dedup();

        // Writers, and a power cut at a random backend call (or by the clock).
        let writers = rng.gen_range(1..=12usize);
        let (handle, thread) = spawn_writer(&store, &mut rng);
        let cut_at = rng.gen_range(1..=600u64);
        disk.cut_after(cut_at);
        let clock = {
            let disk = disk.clone();
            tokio::spawn(async move {
                tokio::time::sleep(ROUND_TIME).await;
                disk.cut();
            })
        };
        let log = run_writers(&handle, &disk, writers, round, seed, &known).await;
        clock.abort();
        disk.cut();
        drop(handle);
        join_writer(thread).await;
        drop(store);
        if !log.unexpected.is_empty() {
            fail(format!(
                "round {round}: writers saw {:?}",
                &log.unexpected[..log.unexpected.len().min(5)]
            ));
        }
        totals.acked += log.acked.len() as u64;
        totals.in_flight += log.in_flight.len() as u64;
        for (id, token) in log.acked {
            if token.action == Action::Create {
                expected
                    .created
                    .insert(token.email.clone(), token.customer.clone());
            }
            if expected.ops.insert(id, token).is_some() {
                fail(format!(
                    "round {round}: operation id {id} acknowledged twice"
                ));
            }
        }
        in_flight = log.in_flight;
        let (img, report) = disk.surviving_image(loss, &mut rng);
        image = img;
        *totals.by_loss.entry(loss_name(loss)).or_default() += 1;
        totals.sectors_lost += report.sectors_lost as u64;
        totals.torn += u64::from(report.torn);
        totals.cycles += 1;
    }
    // The last cut's reopen and check.
    let disk = FaultyDisk::from_image(image);
    let store = Store::open_with(StoreLocation::faulty("disk", &disk), &options())
        .unwrap_or_else(|e| fail(format!("the store did not open after the last cut: {e}")));
    let errors = verify(&store, &mut expected, &in_flight, totals);
    if !errors.is_empty() {
        fail(format!(
            "after the last cut: {} problems, e.g. {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        ));
    }
    totals.chains += 1;
    cycles
}

fn loss_name(loss: Loss) -> &'static str {
    match loss {
        Loss::All => "all",
        Loss::RandomSectors => "random_sectors",
        Loss::TornPrefix => "torn_prefix",
        Loss::Nothing => "nothing",
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_lose_no_acknowledged_operation_and_duplicate_none() {
    let mut totals = Totals::default();
    let started = Instant::now();
    if let Some(seed) = env_u64("OUTPOST_POWERLOSS_SEED") {
        chain(seed, u64::MAX, &mut totals).await;
        eprintln!("seed {seed} passed: {totals:?}");
        return;
    }
    for &seed in REGRESSION_SEEDS {
        chain(seed, u64::MAX, &mut totals).await;
    }
    let want = env_u64("OUTPOST_POWERLOSS_CYCLES").unwrap_or(CI_CYCLES);
    let base = env_u64("OUTPOST_POWERLOSS_BASE_SEED").unwrap_or_else(rand::random);
    eprintln!("power loss: {want} cycles from base seed {base}");
    let mut done = 0;
    let mut i = 0u64;
    while done < want {
        let seed = splitmix(base.wrapping_add(i));
        i += 1;
        done += chain(seed, want - done, &mut totals).await;
        if i.is_multiple_of(50) {
            eprintln!("  {done} cycles, {:?} so far", started.elapsed());
        }
    }
    eprintln!(
        "power loss: {} cycles in {} chains (base seed {base}) in {:?}: {} acknowledged, {} in \
         flight at cuts of which {} landed, {} cuts during an open, sectors lost {}, torn {}, \
         by loss {:?}; lost {}, duplicated {}",
        totals.cycles,
        totals.chains,
        started.elapsed(),
        totals.acked,
        totals.in_flight,
        totals.landed_unacked,
        totals.cuts_during_open,
        totals.sectors_lost,
        totals.torn,
        totals.by_loss,
        totals.lost,
        totals.duplicated
    );
    assert_eq!(totals.lost, 0);
    assert_eq!(totals.duplicated, 0);
}
