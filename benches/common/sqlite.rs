//! The SQLite baselines: the same operation queue and the same customer cache and search index,
//! kept in SQLite (WAL, synchronous=FULL) with the same record layout (JSON records, the same
//! operation and view encoding the node uses, the same search terms) and the same batching
//! (one writer thread, one transaction per group of requests that arrived together), and the
//! same search: the same candidates from the same index ranges, checked by the same key records.

use std::path::Path;

use outpost::domain::search;
use outpost::domain::view::{CustomerView, SyncState};
use outpost::domain::{NewCustomer, OpState, Operation, OperationId, Payload};
use outpost::store::cdx::HqCopy;
use outpost::store::gather::{Gather, GatherSignal};
use outpost::store::schema;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

/// Most candidates one search examines (as the node's `CANDIDATE_CAP`).
const CANDIDATE_CAP: usize = 10_000;
/// Most distinct first words a pair search visits (as the node's `MAX_PAIR_FIRST_WORDS`).
const MAX_PAIR_FIRST_WORDS: usize = 64;

/// Opens (or creates) the baseline database at `path`.
pub fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("sqlite open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    conn.pragma_update(None, "cache_size", -65536i64)
        .expect("cache");
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS ops (
             seq INTEGER PRIMARY KEY,
             id BLOB NOT NULL UNIQUE,
             state INTEGER NOT NULL,
             customer_ref TEXT NOT NULL,
             body TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS ops_by_state ON ops(state, seq);
         CREATE INDEX IF NOT EXISTS ops_by_customer ON ops(customer_ref, seq);
         CREATE TABLE IF NOT EXISTS customers (
             ref TEXT PRIMARY KEY,
             account TEXT UNIQUE,
             updated_at INTEGER NOT NULL,
             keys BLOB NOT NULL,
             body TEXT NOT NULL) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS terms (
             term TEXT NOT NULL,
             ref TEXT NOT NULL,
             updated_at INTEGER NOT NULL,
             PRIMARY KEY (term, ref)) WITHOUT ROWID;",
    )
    .expect("schema");
    conn
}

fn put_view(tx: &rusqlite::Transaction<'_>, view: &CustomerView) {
    let terms = search::terms(view);
    tx.prepare_cached(
        "INSERT OR REPLACE INTO customers (ref, account, updated_at, keys, body) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .expect("prepare")
    .execute(params![
        view.customer_ref,
        view.account_number,
        view.updated_at_ms,
        // The node's key record, kept beside the view as the node keeps it.
        schema::encode_keys(view.updated_at_ms, &terms),
        serde_json::to_string(view).expect("view json")
    ])
    .expect("customer");
    let mut insert = tx
        .prepare_cached("INSERT OR REPLACE INTO terms (term, ref, updated_at) VALUES (?1, ?2, ?3)")
        .expect("prepare");
    for term in terms {
        insert
            .execute(params![term, view.customer_ref, view.updated_at_ms])
            .expect("term");
    }
}

/// Accepts one customer create exactly as the node's writer does: a new operation with a new
/// id, its view, and its search terms.
fn submit(tx: &rusqlite::Transaction<'_>, seq: u64, fields: &NewCustomer, now: i64) {
    let op = Operation {
        id: OperationId::new_v7(now as u64),
        seq,
        customer_ref: format!("S0001-T{seq}"),
        record_id: None,
        payload: Payload::CustomerCreate(fields.clone()),
        state: OpState::Pending,
        error: None,
        revision: 0,
        accepted_at_ms: now,
        updated_at_ms: now,
        base: None,
        conflicts: Vec::new(),
    };
    let view = CustomerView::created_by(&op).expect("view");
    tx.prepare_cached(
        "INSERT INTO ops (seq, id, state, customer_ref, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .expect("prepare")
    .execute(params![
        seq as i64,
        op.id.as_u128().to_be_bytes().to_vec(),
        op.state.code(),
        op.customer_ref,
        serde_json::to_string(&op).expect("op json")
    ])
    .expect("op");
    put_view(tx, &view);
}

fn next_seq(tx: &rusqlite::Transaction<'_>) -> u64 {
    tx.query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
    .expect("next_seq")
    .map_or(1, |v| v as u64)
}

fn set_next_seq(tx: &rusqlite::Transaction<'_>, seq: u64) {
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('next_seq', ?1)",
        params![seq as i64],
    )
    .expect("next_seq");
}

struct Job {
    fields: NewCustomer,
    reply: oneshot::Sender<u64>,
}

/// The baseline queue: one writer thread, group commit of up to `group_commit_max` creates.
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::Sender<Job>,
    gathered: GatherSignal,
}

impl Queue {
    /// Starts the writer thread on the database at `path`.
    pub fn spawn(path: &Path, group_commit_max: usize) -> (Queue, std::thread::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Job>(4096);
        // The node's writer fills its groups this way (`store::gather`): so does the baseline.
        let (mut gather, gathered) = Gather::new(super::group_wait());
        let path = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            let mut conn = open(&path);
            let mut jobs = Vec::with_capacity(group_commit_max);
            loop {
                let (first, idle) = match rx.try_recv() {
                    Ok(job) => (job, std::time::Duration::ZERO),
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        let waiting = std::time::Instant::now();
                        match rx.blocking_recv() {
                            Some(job) => (job, waiting.elapsed()),
                            None => break,
                        }
                    }
                };
                // Each request is written as it arrives, while the group fills, as the node's
                // writer applies its commands (`store::writer::write_group`).
                let tx = conn.transaction().expect("begin");
                let mut seq = next_seq(&tx);
                let now = outpost::store::now_ms();
                let mut seqs = Vec::with_capacity(group_commit_max);
                let mut take = |jobs: &mut Vec<Job>, job: Job| {
                    submit(&tx, seq, &job.fields, now);
                    seqs.push(seq);
                    seq += 1;
                    jobs.push(job);
                };
                take(&mut jobs, first);
                gather.fill(&mut jobs, group_commit_max, idle, |jobs| {
                    while jobs.len() < group_commit_max {
                        match rx.try_recv() {
                            Ok(job) => take(jobs, job),
                            Err(_) => break,
                        }
                    }
                });
                set_next_seq(&tx, seq);
                tx.commit().expect("commit");
                gather.committed(jobs.len(), rx.len());
                for (job, seq) in jobs.drain(..).zip(seqs) {
                    let _ = job.reply.send(seq);
                }
            }
        });
        (Queue { tx, gathered }, thread)
    }

    /// Queues a create and waits until it is committed.
    pub async fn create(&self, fields: NewCustomer) -> u64 {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { fields, reply })
            .await
            .expect("sqlite writer");
        self.gathered
            .queued(self.tx.max_capacity() - self.tx.capacity());
        rx.await.expect("sqlite commit")
    }
}

/// Loads HQ copies as the node's 1010 apply does (each becomes a view with its terms), one
/// transaction per `chunk`.
pub fn load_customers(conn: &mut Connection, copies: impl Iterator<Item = HqCopy>, chunk: usize) {
    let mut tx = conn.transaction().expect("begin");
    let mut in_tx = 0;
    for copy in copies {
        let mut view = copy.view;
        view.customer_ref.clone_from(&copy.account_number);
        view.account_number = Some(copy.account_number);
        put_view(&tx, &view);
        in_tx += 1;
        if in_tx == chunk {
            tx.commit().expect("commit");
            tx = conn.transaction().expect("begin");
            in_tx = 0;
        }
    }
    tx.commit().expect("commit");
}

/// Queues local creates directly (no writer thread), `chunk` per transaction.
pub fn load_creates(
    conn: &mut Connection,
    creates: impl Iterator<Item = NewCustomer>,
    chunk: usize,
) {
    let mut tx = conn.transaction().expect("begin");
    let mut seq = next_seq(&tx);
    let now = outpost::store::now_ms();
    let mut in_tx = 0;
    for fields in creates {
        submit(&tx, seq, &fields, now);
        seq += 1;
        in_tx += 1;
        if in_tx == chunk {
            set_next_seq(&tx, seq);
            tx.commit().expect("commit");
            tx = conn.transaction().expect("begin");
            in_tx = 0;
        }
    }
    set_next_seq(&tx, seq);
    tx.commit().expect("commit");
}

/// A customer found, with its sync state (as the node's `CustomerRead`).
pub struct Found {
    pub view: CustomerView,
    pub sync_state: SyncState,
}

fn prefix_end(term: &str) -> String {
    // Terms are folded to ASCII: the next string after every extension of `term`.
    let mut end = term.to_string();
    end.push('\u{7f}');
    end
}

/// Adds the refs of the terms starting with `prefix` to `found`, with the time of change each
/// entry holds, at most `cap` of them.
fn scan_prefix(conn: &Connection, prefix: &str, cap: usize, found: &mut Vec<(String, i64)>) {
    let mut stmt = conn
        .prepare_cached(
            "SELECT ref, updated_at FROM terms WHERE term >= ?1 AND term < ?2 \
             ORDER BY term, ref LIMIT ?3",
        )
        .expect("prepare range");
    let rows = stmt
        .query_map(params![prefix, prefix_end(prefix), cap as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .expect("range");
    found.extend(rows.map(|r| r.expect("ref")));
}

/// The node's `pairs_matching` over SQLite: one seek per distinct first word of the term
/// that begins fewer (`search::pair_plan`), then one range per word.
fn pairs_matching(conn: &Connection, a: &str, b: &str) -> Option<Vec<(String, i64)>> {
    let mut next = conn
        .prepare_cached("SELECT term FROM terms WHERE term >= ?1 ORDER BY term LIMIT 1")
        .expect("prepare seek");
    let plan = search::pair_plan(a, b, MAX_PAIR_FIRST_WORDS, |seek| {
        next.query_row(params![seek], |r| r.get(0)).optional()
    })
    .expect("seek")?;
    let mut out = Vec::new();
    for word in &plan.first_words {
        let room = CANDIDATE_CAP.saturating_sub(out.len());
        scan_prefix(conn, &search::pair_term(word, plan.second), room, &mut out);
    }
    Some(out)
}

/// As the node's `Store::search`: the same candidates from the same index ranges (name pairs
/// for two terms or more, else the most selective term's plain terms and pairs); those the
/// ranges prove ranked by the time their entries hold, the others checked and ranked by their
/// key records; the views of the first `limit` decoded with their sync state.
pub fn search(conn: &Connection, q: &str, limit: usize) -> Vec<Found> {
    let terms = search::query_terms(q);
    if terms.is_empty() {
        return Vec::new();
    }
    let (proven, mut unproven) =
        pair_candidates(conn, &terms).unwrap_or_else(|| term_candidates(conn, &terms));
    unproven.sort();
    unproven.dedup();
    let mut keys = conn
        .prepare_cached("SELECT keys FROM customers WHERE ref = ?1")
        .expect("prepare keys");
    // Ranked as the node ranks them (`search::Ranking`): the proven by their entries' times,
    // but a customer among those checked, whose check rules.
    let mut ranking = search::Ranking::new(limit);
    for (r, time) in &proven {
        if ranking.admits(*time, r) && unproven.binary_search(r).is_err() {
            ranking.offer(*time, r);
        }
    }
    for r in &unproven {
        let bytes: Option<Vec<u8>> = keys
            .query_row(params![r], |row| row.get(0))
            .optional()
            .expect("keys");
        let Some(bytes) = bytes else { continue };
        let record = schema::CustomerKeys::parse(&bytes).expect("key record");
        if record.matches_all(&terms) {
            ranking.offer(record.updated_at_ms, r);
        }
    }
    let mut body = conn
        .prepare_cached("SELECT body FROM customers WHERE ref = ?1")
        .expect("prepare body");
    let mut states = conn
        .prepare_cached("SELECT state FROM ops WHERE customer_ref = ?1")
        .expect("prepare states");
    let mut out = Vec::new();
    for (_, r) in ranking.into_ranked() {
        let body: String = body.query_row(params![r], |row| row.get(0)).expect("body");
        let view: CustomerView = serde_json::from_str(&body).expect("view");
        let codes: Vec<u8> = states
            .query_map(params![view.customer_ref], |r| r.get::<_, u8>(0))
            .expect("states")
            .map(|c| c.expect("state"))
            .collect();
        let sync_state = SyncState::summarise(
            codes
                .into_iter()
                .filter_map(|c| OpState::ALL.into_iter().find(|s| s.code() == c)),
        );
        out.push(Found { view, sync_state });
    }
    out
}

/// Candidates: those the index ranges prove, with their entries' times, and those to check.
type Candidates = (Vec<(String, i64)>, Vec<String>);

/// The node's `pair_candidates` over SQLite.
fn pair_candidates(conn: &Connection, terms: &[String]) -> Option<Candidates> {
    let mut by_length: Vec<&str> = terms.iter().map(String::as_str).collect();
    by_length.sort_by_key(|t| std::cmp::Reverse(t.len()));
    let [long, short, ..] = by_length[..] else {
        return None;
    };
    let pairs = pairs_matching(conn, short, long)?;
    let (proven, mut unproven) = if terms.len() == 2 {
        (pairs, Vec::new())
    } else {
        (Vec::new(), pairs.into_iter().map(|(r, _)| r).collect())
    };
    for prefix in [short, long, search::MANY_NAME_WORDS] {
        let mut plain = Vec::new();
        scan_prefix(conn, prefix, CANDIDATE_CAP, &mut plain);
        unproven.extend(plain.into_iter().map(|(r, _)| r));
    }
    Some((proven, unproven))
}

/// The node's `term_candidates` over SQLite: the term with the fewest matches drives; its
/// matches prove a query of one term.
fn term_candidates(conn: &Connection, terms: &[String]) -> Candidates {
    let mut order: Vec<&String> = terms.iter().collect();
    order.sort_by_key(|t| std::cmp::Reverse(t.len()));
    let mut refs: Option<Vec<(String, i64)>> = None;
    for term in order {
        let bound = refs.as_ref().map_or(CANDIDATE_CAP, Vec::len);
        let mut found = Vec::new();
        for prefix in [term.clone(), search::pair_first_prefix(term)] {
            if found.len() < bound {
                let room = bound - found.len();
                scan_prefix(conn, &prefix, room, &mut found);
            }
        }
        if refs.is_none() || found.len() < bound {
            refs = Some(found);
        }
    }
    let refs = refs.unwrap_or_default();
    if terms.len() == 1 {
        (refs, Vec::new())
    } else {
        (Vec::new(), refs.into_iter().map(|(r, _)| r).collect())
    }
}
