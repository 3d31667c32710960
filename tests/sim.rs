//! Deterministic simulation of the sync loop (docs/reliability.md, "Sync-loop simulation").
//!
//! One seed drives everything: the till's writes, the uploader's and outcome puller's rounds,
//! HQ's sync job, a message network that drops, delays, duplicates and reorders requests and
//! responses, HQ restarts, node crashes, and a poison record that an operator fixes. The node
//! is the real `Store` with the real writer thread (each command is awaited before the next
//! event, so the seed alone decides the order); HQ is the real `HqModel`; messages travel as
//! the real wire types through JSON. After the fault phase a fault-free quiescence phase must
//! finish everything, then the invariants are checked.
//!
//! `OUTPOST_SIM_SEEDS=n` runs seeds 0..n (default 100); `OUTPOST_SIM_SEED=s` replays one seed
//! with its whole trace; `OUTPOST_SIM_STEPS=n` sets the fault-phase length (default 400).

use std::collections::{BTreeMap, HashMap};

use outpost::domain::{Action, NewCustomer, OpState, Operation, OperationId, Payload, RecordKind};
use outpost::hq::emulator::faults::RejectRule;
use outpost::hq::emulator::state::HqModel;
use outpost::hq::wire::{OutcomePage, UploadRequest, UploadResponse};
use outpost::store::hq_sync::StageReport;
use outpost::store::writer::{self, WriterOptions};
use outpost::store::{Command, OpFilter, Outcome, Store, StoreOptions, Submission, WriterHandle};
use outpost::sync::outcomes::from_wire;
use outpost::sync::uploader::to_wire;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const STORE_ID: &str = "S0001";
/// The last name HQ's sync job refuses (the poison record).
const POISON: &str = "Poison";
/// Uploader batch size and outcome page size.
const BATCH: usize = 8;
const PAGE: usize = 8;
/// Virtual ticks the node waits for an answer before it gives up on a request.
const TIMEOUT: u64 = 12;
/// Bound of the quiescence phase, in rounds.
const QUIET_ROUNDS: usize = 300;
/// Trace lines printed with a failing seed.
const TRACE_TAIL: usize = 60;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
    })
}

/// A message on the simulated network.
#[derive(Debug, Clone)]
enum Msg {
    /// Node → HQ: an upload (JSON of `UploadRequest`), with the node's request number.
    UploadReq(u64, String),
    /// HQ → node: its answer (JSON of `UploadResponse`).
    UploadResp(u64, String),
    /// Node → HQ: outcomes after a cursor.
    OutcomesReq(u64, u64),
    /// HQ → node: a page (JSON of `OutcomePage`).
    OutcomesResp(u64, String),
}

/// Network fault rates, in percent.
#[derive(Clone, Copy)]
struct Faults {
    drop: u32,
    dup: u32,
    max_delay: u64,
}

const CALM: Faults = Faults {
    drop: 0,
    dup: 0,
    max_delay: 1,
};

#[derive(Default, Debug, Clone, Copy)]
struct Totals {
    seeds: u64,
    steps: u64,
    acked: u64,
    messages: u64,
    dropped: u64,
    duplicated: u64,
    hq_restarts: u64,
    node_crashes: u64,
    poisoned: u64,
    feed_resets: u64,
    lost: u64,
    duplicated_at_hq: u64,
    order_violations: u64,
}

struct Sim {
    rng: StdRng,
    now: u64,
    trace: Vec<String>,
    dir: tempfile::TempDir,
    store: Option<Store>,
    writer: Option<(WriterHandle, std::thread::JoinHandle<()>)>,
    rt: tokio::runtime::Runtime,
    hq: HqModel,
    /// In flight: (deliver at, order of sending, message).
    net: Vec<(u64, u64, Msg)>,
    sent: u64,
    /// The node's request numbers (never reused, across crashes too).
    next_req: u64,
    upload_wait: Option<(u64, u64)>,
    outcomes_wait: Option<(u64, u64)>,
    /// Every acknowledged operation: id → (customer, seq).
    acked: BTreeMap<OperationId, (String, u64)>,
    customers: Vec<String>,
    faults: Faults,
    /// Whether any operation may have completed at HQ (HQ restarts stop then).
    hq_restart_allowed: bool,
    totals: Totals,
    email_counter: u64,
}

fn store_options() -> StoreOptions {
    StoreOptions::new(1 << 20)
}

fn reject_rule() -> RejectRule {
    RejectRule {
        field: "last_name".into(),
        equals: POISON.into(),
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut sim = Sim {
            rng: StdRng::seed_from_u64(seed),
            now: 0,
            trace: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            store: None,
            writer: None,
            rt,
            hq: HqModel::new(),
            net: Vec::new(),
            sent: 0,
            next_req: 1,
            upload_wait: None,
            outcomes_wait: None,
            acked: BTreeMap::new(),
            customers: Vec::new(),
            faults: CALM,
            hq_restart_allowed: true,
            totals: Totals::default(),
            email_counter: 0,
        };
        sim.open_node();
        sim
    }

    fn log(&mut self, line: String) {
        self.trace.push(format!("t={} {line}", self.now));
    }

    fn open_node(&mut self) {
        let store = Store::open(&self.dir.path().join("outpost.redb"), &store_options())
            .expect("open the store");
        let writer = writer::spawn(
            store.clone(),
            WriterOptions {
                store_id: STORE_ID.into(),
                queue: 16,
                group_commit_max: 1,
                merge: writer::MergeOptions::default(),
                group_wait: std::time::Duration::ZERO,
                replies_on: None,
            },
        )
        .expect("spawn writer");
        self.store = Some(store);
        self.writer = Some(writer);
    }

    /// The node process dies: its tasks' state is gone, the store file stays.
    fn crash_node(&mut self) {
        if let Some((handle, thread)) = self.writer.take() {
            drop(handle);
            thread.join().expect("writer thread panicked");
        }
        self.store = None;
        self.upload_wait = None;
        self.outcomes_wait = None;
        self.open_node();
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("store open")
    }

    fn exec(&self, command: Command) -> Result<Outcome, String> {
        let handle = &self.writer.as_ref().expect("writer running").0;
        self.rt
            .block_on(handle.execute(command))
            .map_err(|e| e.to_string())
    }

    fn ops(&self, state: Option<OpState>, limit: usize) -> Vec<Operation> {
        self.store()
            .operations(&OpFilter {
                state,
                after_seq: None,
                limit,
            })
            .expect("read operations")
    }

    fn all_ops(&self) -> Vec<Operation> {
        let mut out: Vec<Operation> = Vec::new();
        for _ in 0..10_000 {
            let page = self
                .store()
                .operations(&OpFilter {
                    state: None,
                    after_seq: out.last().map(|o| o.seq),
                    limit: 500,
                })
                .expect("read operations");
            if page.is_empty() {
                break;
            }
            out.extend(page);
        }
        out
    }

    fn send(&mut self, msg: Msg) {
        self.totals.messages += 1;
        if self.rng.gen_range(0..100) < self.faults.drop {
            self.totals.dropped += 1;
            self.log(format!("net drop {}", msg_name(&msg)));
            return;
        }
        let copies = if self.rng.gen_range(0..100) < self.faults.dup {
            self.totals.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now + self.rng.gen_range(1..=self.faults.max_delay);
            self.sent += 1;
            self.net.push((at, self.sent, msg.clone()));
        }
    }

    // ---- the till ----

    fn till_write(&mut self) {
        self.email_counter += 1;
        let email = format!("c{}@example.ee", self.email_counter);
        let command = if self.customers.is_empty() || self.rng.gen_range(0..4) == 0 {
            Command::Submit(Submission::NewCustomer(NewCustomer {
                first_name: "Mari".into(),
                last_name: "Maasikas".into(),
                email: Some(email.clone()),
                phone: None,
                customer_group: None,
                language: None,
            }))
        } else {
            let customer = self.customers[self.rng.gen_range(0..self.customers.len())].clone();
            let poison = self.rng.gen_range(0..100) < 3;
            let record = if poison {
                self.totals.poisoned += 1;
                serde_json::json!({ "last_name": POISON })
            } else {
                serde_json::json!({ "email": email })
            };
            let payload =
                Payload::parse(RecordKind::Customer, Action::Edit, record).expect("a valid edit");
            Command::Submit(Submission::Change {
                customer,
                record_id: None,
                payload,
            })
        };
        match self.exec(command) {
            Ok(Outcome::Accepted {
                operation_id,
                customer_ref,
                ..
            }) => {
                let seq = self
                    .store()
                    .customer(&customer_ref)
                    .expect("read customer")
                    .expect("an accepted operation's customer is readable")
                    .view
                    .last_seq;
                if !self.customers.contains(&customer_ref) {
                    self.customers.push(customer_ref.clone());
                }
                self.log(format!(
                    "till accepted {operation_id} {customer_ref} seq={seq}"
                ));
                self.acked.insert(operation_id, (customer_ref, seq));
                self.totals.acked += 1;
            }
            other => panic!("till write refused: {other:?}"),
        }
    }

    // ---- the uploader (the logic of sync::uploader::Uploader::upload_once) ----

    fn upload_round(&mut self) {
        if self
            .upload_wait
            .is_some_and(|(_, deadline)| self.now < deadline)
        {
            return;
        }
        self.upload_wait = None;
        let ops = self.ops(Some(OpState::Pending), BATCH);
        if ops.is_empty() {
            return;
        }
        let req = self.next_req;
        self.next_req += 1;
        let request = UploadRequest {
            store_id: STORE_ID.into(),
            channel_id: "POS1".into(),
            batch_id: uuid::Uuid::from_u128(u128::from(req)),
            operations: ops.iter().map(to_wire).collect(),
        };
        let body = serde_json::to_string(&request).expect("encode upload");
        self.log(format!(
            "upload req#{req} seqs={:?}",
            ops.iter().map(|o| o.seq).collect::<Vec<_>>()
        ));
        self.upload_wait = Some((req, self.now + TIMEOUT));
        self.send(Msg::UploadReq(req, body));
    }

    fn on_upload_resp(&mut self, req: u64, body: &str) {
        if self.upload_wait.map(|(r, _)| r) != Some(req) {
            self.log(format!("upload resp#{req} ignored (not awaited)"));
            return;
        }
        self.upload_wait = None;
        let response: UploadResponse = serde_json::from_str(body).expect("decode upload resp");
        let feed_id = response.feed_id;
        let reports: Vec<StageReport> = response
            .results
            .into_iter()
            .map(|r| StageReport {
                id: r.operation_id,
                revision: r.revision,
                refused: (r.status == outpost::hq::wire::StageStatus::Rejected).then(|| {
                    r.error
                        .unwrap_or_else(|| outpost::domain::operation::OpError {
                            code: "rejected".into(),
                            message: "HQ refused the operation".into(),
                            field: None,
                        })
                }),
                feed_id,
            })
            .collect();
        let n = reports.len();
        let r = self.exec(Command::MarkStaged(reports));
        self.log(format!("upload resp#{req} {n} reports -> {r:?}"));
        r.expect("mark staged");
    }

    // ---- the outcome puller (the logic of sync::outcomes::OutcomePuller::pull_once) ----

    fn outcomes_round(&mut self) {
        if self
            .outcomes_wait
            .is_some_and(|(_, deadline)| self.now < deadline)
        {
            return;
        }
        let (cursor, _) = self.store().outcome_cursor().expect("cursor");
        let req = self.next_req;
        self.next_req += 1;
        self.outcomes_wait = Some((req, self.now + TIMEOUT));
        self.log(format!("outcomes req#{req} after={cursor}"));
        self.send(Msg::OutcomesReq(req, cursor));
    }

    fn on_outcomes_resp(&mut self, req: u64, body: &str) {
        if self.outcomes_wait.map(|(r, _)| r) != Some(req) {
            self.log(format!("outcomes resp#{req} ignored (not awaited)"));
            return;
        }
        self.outcomes_wait = None;
        let page: OutcomePage = serde_json::from_str(body).expect("decode page");
        let (cursor, feed) = self.store().outcome_cursor().expect("cursor");
        if feed != 0 && page.feed_id != feed {
            let r = self.exec(Command::ResetFeed {
                feed_id: page.feed_id,
            });
            self.totals.feed_resets += 1;
            self.log(format!("outcomes resp#{req} new feed -> reset {r:?}"));
            r.expect("reset feed");
            return;
        }
        if page.outcomes.is_empty() {
            if feed == 0 && page.feed_id != 0 {
                self.exec(Command::ApplyOutcomes {
                    outcomes: Vec::new(),
                    next_cursor: cursor,
                    feed_id: page.feed_id,
                })
                .expect("remember feed");
            }
            return;
        }
        let n = page.outcomes.len();
        let r = self.exec(Command::ApplyOutcomes {
            outcomes: page.outcomes.into_iter().map(from_wire).collect(),
            next_cursor: page.next_cursor,
            feed_id: page.feed_id,
        });
        self.log(format!(
            "outcomes resp#{req} {n} applied, cursor -> {} {r:?}",
            page.next_cursor
        ));
        r.expect("apply outcomes");
    }

    // ---- HQ ----

    fn hq_receive(&mut self, msg: Msg) {
        match msg {
            Msg::UploadReq(req, body) => {
                let request: UploadRequest = serde_json::from_str(&body).expect("decode upload");
                match self.hq.stage(&request) {
                    Ok(resp) => {
                        let body = serde_json::to_string(&resp).expect("encode resp");
                        self.log(format!("hq staged req#{req}"));
                        self.send(Msg::UploadResp(req, body));
                    }
                    Err(e) => self.log(format!("hq refused req#{req}: {e}")),
                }
            }
            Msg::OutcomesReq(req, after) => {
                let page = self.hq.outcomes(STORE_ID, after, PAGE);
                let body = serde_json::to_string(&page).expect("encode page");
                self.send(Msg::OutcomesResp(req, body));
            }
            _ => unreachable!("a response delivered to HQ"),
        }
    }

    fn hq_sync(&mut self) {
        let report = self.hq.run_sync(Some(&reject_rule()));
        if report.completed > 0 {
            // Completed customers are gone with a restart: no restart after this (see docs).
            self.hq_restart_allowed = false;
        }
        self.log(format!("hq sync {report:?}"));
    }

    /// Delivers every message due now (or, with `all`, everything), in (time, send) order.
    fn deliver(&mut self, all: bool) {
        for _ in 0..10_000 {
            self.net.sort_by_key(|(at, n, _)| (*at, *n));
            let Some(first) = self.net.first() else {
                return;
            };
            if !all && first.0 > self.now {
                return;
            }
            let (_, _, msg) = self.net.remove(0);
            match msg {
                Msg::UploadResp(req, body) => self.on_upload_resp(req, &body),
                Msg::OutcomesResp(req, body) => self.on_outcomes_resp(req, &body),
                other => self.hq_receive(other),
            }
        }
    }

    /// Delivers one message picked by the seed among those due (reordering).
    fn deliver_one(&mut self) {
        let due: Vec<usize> = (0..self.net.len())
            .filter(|&i| self.net[i].0 <= self.now)
            .collect();
        if due.is_empty() {
            return;
        }
        let i = due[self.rng.gen_range(0..due.len())];
        let (_, _, msg) = self.net.remove(i);
        match msg {
            Msg::UploadResp(req, body) => self.on_upload_resp(req, &body),
            Msg::OutcomesResp(req, body) => self.on_outcomes_resp(req, &body),
            other => self.hq_receive(other),
        }
    }

    /// The operator edits every failed operation so HQ accepts it, and re-syncs it.
    fn operator_fix(&mut self) {
        for op in self.ops(Some(OpState::Failed), 100) {
            let r = self.exec(Command::EditPayload {
                id: op.id,
                record: serde_json::json!({ "last_name": "Fixed" }),
            });
            self.log(format!("operator edit {} -> {}", op.id, r.is_ok()));
            r.expect("edit payload");
            let r = self.exec(Command::Resync { id: op.id });
            r.expect("resync");
        }
    }

    fn step(&mut self) {
        self.now += 1;
        self.totals.steps += 1;
        match self.rng.gen_range(0..100) {
            0..=24 => self.till_write(),
            25..=39 => self.upload_round(),
            40..=51 => self.outcomes_round(),
            52..=61 => self.hq_sync(),
            62..=89 => self.deliver_one(),
            90..=91 => {
                self.log("node crash".into());
                self.totals.node_crashes += 1;
                self.crash_node();
            }
            92 if self.hq_restart_allowed => {
                self.log("hq restart".into());
                self.totals.hq_restarts += 1;
                self.hq = HqModel::new();
            }
            93..=94 => self.operator_fix(),
            _ => {}
        }
    }

    fn quiesce(&mut self) -> bool {
        self.faults = CALM;
        self.upload_wait = None;
        self.outcomes_wait = None;
        for _ in 0..QUIET_ROUNDS {
            self.now += TIMEOUT;
            self.operator_fix();
            self.upload_round();
            self.deliver(true);
            self.hq_sync();
            self.outcomes_round();
            self.deliver(true);
            let ops = self.all_ops();
            if ops.iter().all(|o| o.state == OpState::Completed) {
                return true;
            }
        }
        false
    }

    /// The invariants; returns the violations.
    fn check(&mut self, quiet: bool) -> Vec<String> {
        let mut errors = Vec::new();
        if !quiet {
            errors.push("quiescence did not finish: something is stuck".into());
        }
        let ops: HashMap<OperationId, Operation> =
            self.all_ops().into_iter().map(|o| (o.id, o)).collect();
        for (id, (customer, _)) in &self.acked {
            match ops.get(id) {
                None => errors.push(format!("acked {id} ({customer}) lost at the node")),
                Some(o) if o.state != OpState::Completed => {
                    errors.push(format!("acked {id} ({customer}) is {:?}", o.state));
                }
                Some(_) => {}
            }
        }
        let mut applied: HashMap<OperationId, u32> = HashMap::new();
        for c in self.hq.customers() {
            let mut last_seq = 0;
            for id in &c.operation_ids {
                *applied.entry(*id).or_default() += 1;
                match self.acked.get(id) {
                    None => errors.push(format!("HQ applied unknown {id}")),
                    Some((customer, seq)) => {
                        if customer != &c.customer_ref {
                            errors.push(format!("{id} applied to {}", c.customer_ref));
                        }
                        if *seq <= last_seq {
                            self.totals.order_violations += 1;
                            errors.push(format!(
                                "order: {id} seq {seq} applied after seq {last_seq} on {customer}"
                            ));
                        }
                        last_seq = last_seq.max(*seq);
                    }
                }
            }
            if let Some(read) = self.store().customer(&c.customer_ref).expect("read")
                && read.view.fields.email != c.fields.email
            {
                errors.push(format!(
                    "{}: node email {:?}, HQ email {:?}",
                    c.customer_ref, read.view.fields.email, c.fields.email
                ));
            }
        }
        for id in self.acked.keys() {
            match applied.get(id).copied().unwrap_or(0) {
                1 => {}
                0 => {
                    self.totals.lost += 1;
                    errors.push(format!("acked {id} never applied at HQ"));
                }
                n => {
                    self.totals.duplicated_at_hq += 1;
                    errors.push(format!("acked {id} applied {n} times at HQ"));
                }
            }
        }
        errors
    }
}

fn msg_name(m: &Msg) -> String {
    match m {
        Msg::UploadReq(r, _) => format!("upload req#{r}"),
        Msg::UploadResp(r, _) => format!("upload resp#{r}"),
        Msg::OutcomesReq(r, _) => format!("outcomes req#{r}"),
        Msg::OutcomesResp(r, _) => format!("outcomes resp#{r}"),
    }
}

/// Runs one seed; `Err` carries the report of a failure (seed, violations, trace tail).
fn run_seed(seed: u64, steps: u64, full_trace: bool) -> Result<Totals, String> {
    let mut sim = Sim::new(seed);
    sim.faults = Faults {
        drop: sim.rng.gen_range(0..30),
        dup: sim.rng.gen_range(0..30),
        max_delay: sim.rng.gen_range(1..20),
    };
    for _ in 0..steps {
        sim.step();
    }
    sim.log("---- faults stop ----".into());
    let quiet = sim.quiesce();
    let errors = sim.check(quiet);
    sim.totals.seeds = 1;
    if full_trace {
        for line in &sim.trace {
            println!("{line}");
        }
    }
    if errors.is_empty() {
        return Ok(sim.totals);
    }
    let tail = sim.trace.len().saturating_sub(TRACE_TAIL);
    Err(format!(
        "seed {seed} failed (replay: OUTPOST_SIM_SEED={seed} cargo test --release --test sim -- --nocapture)\n\
         violations:\n  {}\ntrace tail:\n  {}",
        errors.join("\n  "),
        sim.trace[tail..].join("\n  ")
    ))
}

fn add(t: &mut Totals, s: &Totals) {
    t.seeds += s.seeds;
    t.steps += s.steps;
    t.acked += s.acked;
    t.messages += s.messages;
    t.dropped += s.dropped;
    t.duplicated += s.duplicated;
    t.hq_restarts += s.hq_restarts;
    t.node_crashes += s.node_crashes;
    t.poisoned += s.poisoned;
    t.feed_resets += s.feed_resets;
    t.lost += s.lost;
    t.duplicated_at_hq += s.duplicated_at_hq;
    t.order_violations += s.order_violations;
}

#[test]
fn sync_loop_simulation_loses_and_duplicates_nothing() {
    let steps = env_u64("OUTPOST_SIM_STEPS").unwrap_or(400);
    let seeds: Vec<u64> = match env_u64("OUTPOST_SIM_SEED") {
        Some(s) => vec![s],
        None => (0..env_u64("OUTPOST_SIM_SEEDS").unwrap_or(100)).collect(),
    };
    let replay = seeds.len() == 1;
    let mut totals = Totals::default();
    let mut failures = Vec::new();
    for seed in seeds {
        match run_seed(seed, steps, replay) {
            Ok(t) => add(&mut totals, &t),
            Err(report) => {
                eprintln!("{report}");
                failures.push(seed);
                if failures.len() >= 3 {
                    break;
                }
            }
        }
    }
    println!("sim totals: {totals:?}; failing seeds: {failures:?}");
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

/// Seeds that found bugs, kept whatever `OUTPOST_SIM_SEEDS` says: 19 (an HQ restart before the
/// node's first outcome page left uploaded operations stuck) and 3 (an operation accepted
/// behind one HQ reported held was never released).
#[test]
fn regression_seeds() {
    for seed in [3, 19] {
        if let Err(report) = run_seed(seed, 400, false) {
            panic!("{report}");
        }
    }
}
