//! The single writer: one thread owns every write. Requests that arrive together are committed
//! in one durable transaction (group commit), and each is answered only after that commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::gather::{Gather, GatherSignal};
use super::hq_sync::{HqOutcome, StageReport};
use super::prepare::PreparedCreate;
use super::schema::{self, encode};
pub use super::search_log::MergeOptions;
use super::search_log::MergedLog;
use super::tables::Tables;
use super::{Store, StoreError, now_ms};
use crate::domain::view::has_sub_record;
use crate::domain::{
    Action, FieldError, NewCustomer, OpState, Operation, OperationId, Payload, RecordKind,
};
use redb::ReadableTable;

/// A change the till asks for.
#[derive(Debug, Clone)]
pub enum Submission {
    /// A new customer.
    NewCustomer(NewCustomer),
    /// An edit of a customer, or a create or edit of one of its sub-records.
    Change {
        /// Temporary reference or HQ account number of the customer.
        customer: String,
        /// The sub-record edited; `None` for the customer itself and for creates.
        record_id: Option<String>,
        /// The validated record.
        payload: Payload,
    },
}

/// Everything the writer can be asked to do.
#[derive(Debug, Clone)]
pub enum Command {
    /// Accept a new operation from the till.
    Submit(Submission),
    /// Accept a new operation under an id chosen by the caller (a real-time call in flight
    /// must know its id before the operation is durable).
    SubmitAs(OperationId, Submission),
    /// Replace a failed operation's record (sync-status edit and save).
    EditPayload {
        /// The operation.
        id: OperationId,
        /// The new record, in the shape the till sends.
        record: serde_json::Value,
    },
    /// Queue a failed operation again, and release the operations held behind it.
    Resync {
        /// The operation.
        id: OperationId,
    },
    /// Record HQ's answer to an upload.
    MarkStaged(Vec<StageReport>),
    /// Drop confirmed operations older than a cutoff, folding them into each customer's base.
    Prune {
        /// Operations confirmed before this time (Unix ms) go.
        confirmed_before_ms: i64,
        /// Most operations dropped in one command.
        max: usize,
    },
    /// Hold a downloaded configuration package (job 1070 or 1110).
    ApplyConfig {
        /// The job.
        job: u32,
        /// The package.
        package: super::cdx::HeldPackage,
    },
    /// Apply a whole 1010 download: each customer becomes its base here.
    ApplyCustomers {
        /// The package summary held for job 1010.
        package: super::cdx::HeldPackage,
        /// Every customer of the download.
        copies: Vec<super::cdx::HqCopy>,
    },
    /// A real-time call succeeded: complete the operation and take HQ's copy.
    CompleteRealtime {
        /// The operation.
        id: OperationId,
        /// The customer as HQ now holds it.
        copy: super::cdx::HqCopy,
        /// Fields HQ kept its value for.
        conflicts: Vec<crate::domain::operation::Conflict>,
    },
    /// HQ refused a real-time call: forget the pending operation.
    Discard {
        /// The operation.
        id: OperationId,
    },
    /// Apply a page of HQ's outcome feed and advance the cursor, atomically.
    ApplyOutcomes {
        /// The outcomes, in feed order.
        outcomes: Vec<HqOutcome>,
        /// The cursor to store.
        next_cursor: u64,
        /// The identity of the feed the page came from.
        feed_id: u64,
    },
    /// HQ's outcome feed is new: start it over and re-send what HQ never answered.
    ResetFeed {
        /// The new feed's identity.
        feed_id: u64,
    },
}

/// What a committed command produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A new operation was accepted and is durable.
    Accepted {
        /// Its id.
        operation_id: OperationId,
        /// The customer it belongs to.
        customer_ref: String,
        /// The sub-record it created or edited.
        record_id: Option<String>,
        /// Its state at acceptance (`pending`, or `held` behind a failed operation).
        state: OpState,
    },
    /// An existing operation changed.
    Updated(Box<Operation>),
    /// An operation completed in real time; the customer as it now stands.
    Realtime(Box<Operation>, Box<crate::domain::view::CustomerView>),
    /// A sync bookkeeping command changed this many operations.
    Synced(usize),
}

impl Outcome {
    /// Attaches the customer view to an updated operation (real-time completion).
    pub(crate) fn with_view(self, view: crate::domain::view::CustomerView) -> Outcome {
        match self {
            Outcome::Updated(op) => Outcome::Realtime(op, Box::new(view)),
            other => other,
        }
    }
}

/// Why a command was refused; nothing of it was written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommandError {
    /// The customer, sub-record or operation does not exist.
    #[error("{what} not found: {id}")]
    NotFound {
        /// What was looked for, e.g. `customer`.
        what: &'static str,
        /// The id given.
        id: String,
    },
    /// The content breaks a rule.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The operation is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
}

/// A write that did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The command was refused.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The store failed; the whole group was rolled back.
    #[error(transparent)]
    Store(Arc<StoreError>),
}

struct Job {
    command: Command,
    /// A create's parts the caller worked out (`store::prepare`); the writer takes them.
    prepared: Option<PreparedCreate>,
    reply: oneshot::Sender<Result<Outcome, WriteError>>,
}

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Prefix of temporary customer references.
    pub store_id: String,
    /// Bound of the request channel.
    pub queue: usize,
    /// Most requests in one transaction.
    pub group_commit_max: usize,
    /// When the search terms log is merged into the main index.
    pub merge: MergeOptions,
    /// Longest a busy writer waits for the callers it just answered before it commits a group
    /// without them (`store::gather`); zero: it never waits.
    pub group_wait: Duration,
    /// The runtime of the callers, where a task hands out each group's replies; `None`: the
    /// writer thread sends them. A wake from outside the runtime costs it a system call per
    /// caller (up to a quarter of the writer's time in P2); from a task on it, one per group.
    pub replies_on: Option<tokio::runtime::Handle>,
}

/// Sends commands to the writer. Cheap to clone; the writer stops when every handle is gone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Job>,
    gathered: GatherSignal,
}

impl WriterHandle {
    /// Runs `command` and waits until it is committed (or refused).
    pub async fn execute(&self, command: Command) -> Result<Outcome, WriteError> {
        let (reply, rx) = oneshot::channel();
        let stopped = || WriteError::Store(Arc::new(StoreError::WriterStopped));
        // Here, on the caller's thread, not on the writer's.
        let prepared = prepare(&command).map_err(|e| WriteError::Store(Arc::new(e)))?;
        self.tx
            .send(Job {
                command,
                prepared,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        self.gathered
            .queued(self.tx.max_capacity() - self.tx.capacity());
        rx.await.map_err(|_| stopped())?
    }
}

/// The parts of `command` its caller works out for the writer: a customer create's.
fn prepare(command: &Command) -> Result<Option<PreparedCreate>, StoreError> {
    match command {
        Command::Submit(Submission::NewCustomer(fields))
        | Command::SubmitAs(_, Submission::NewCustomer(fields)) => {
            PreparedCreate::of(fields).map(Some)
        }
        _ => Ok(None),
    }
}

/// Starts the writer thread. It runs until every [`WriterHandle`] is dropped, then finishes the
/// requests already queued and returns.
pub fn spawn(
    store: Store,
    options: WriterOptions,
) -> std::io::Result<(WriterHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(options.queue);
    let (gather, gathered) = Gather::new(options.group_wait);
    let replies = options.replies_on.as_ref().map(|rt| {
        let (tx, mut rx) = mpsc::channel::<Vec<Reply>>(REPLY_BATCHES);
        rt.spawn(async move {
            while let Some(batch) = rx.recv().await {
                deliver(batch);
            }
        });
        tx
    });
    let thread = std::thread::Builder::new()
        .name("outpost-writer".into())
        .spawn(move || run(store, options, rx, replies, gather))?;
    Ok((WriterHandle { tx, gathered }, thread))
}

/// A caller's reply channel and what it is told.
type Reply = (
    oneshot::Sender<Result<Outcome, WriteError>>,
    Result<Outcome, WriteError>,
);

/// Most groups of replies waiting for the reply task; beyond, the writer sends them itself.
const REPLY_BATCHES: usize = 16;

/// Hands a group's replies to the reply task, or sends them here when there is none, it is
/// behind, or its runtime is gone (never waiting for it: the writer must not stall on it).
fn send_replies(task: Option<&mpsc::Sender<Vec<Reply>>>, batch: Vec<Reply>) {
    let batch = match task {
        Some(task) => match task.try_send(batch) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b)) => b,
        },
        None => batch,
    };
    deliver(batch);
}

/// Sends each caller of a group its reply.
fn deliver(batch: Vec<Reply>) {
    for (reply, result) in batch {
        // A caller that went away (timeout) still had its write committed.
        let _ = reply.send(result);
    }
}

fn run(
    store: Store,
    options: WriterOptions,
    mut rx: mpsc::Receiver<Job>,
    replies: Option<mpsc::Sender<Vec<Reply>>>,
    mut gather: Gather,
) {
    // Only to wait for a request with a time limit (the idle merge); nothing else runs on it.
    let timer = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            tracing::warn!(error = %e, "writer: no timer; the search terms log merges only when long");
            None
        }
    };
    let freer = Freer::start();
    let mut jobs = Vec::with_capacity(options.group_commit_max);
    let mut reopens = store.reopens();
    // After a merge failed, merging waits for a quiet spell again instead of retrying at once.
    let mut merge_failed = false;
    loop {
        let owed = !merge_failed && store.search_log.merge_due(options.merge.start_at_entries);
        // How long the writer waits for the next job (zero: it was queued already).
        let (next, idle) = match rx.try_recv() {
            Ok(job) => (Next::Job(job), Duration::ZERO),
            Err(mpsc::error::TryRecvError::Disconnected) => (Next::Stop, Duration::ZERO),
            // A merge is owed: one chunk between groups, or chunk after chunk while idle.
            Err(mpsc::error::TryRecvError::Empty) if owed => (Next::Idle, Duration::ZERO),
            Err(mpsc::error::TryRecvError::Empty) => {
                let waiting = Instant::now();
                let next = wait_for_job(&store, &options, &mut rx, timer.as_ref());
                (next, waiting.elapsed())
            }
        };
        let first = match next {
            Next::Stop => break,
            Next::Idle => {
                // Nothing merged while the log holds entries: the merge failed.
                merge_failed =
                    !merge_step(&store, &options.merge, &freer) && store.search_log.entries() > 0;
                continue;
            }
            Next::Job(job) => job,
        };
        if store.reopens() != reopens {
            // The file was reopened after an I/O failure: what it holds is the truth.
            reopens = store.reopens();
            if let Err(e) = store.reload_search_log() {
                tracing::warn!(error = %e, "search terms log not reloaded after a reopen");
            }
        }
        jobs.push(first);
        let committed = write_group(&store, &options, &mut gather, &mut rx, &mut jobs, idle);
        gather.committed(jobs.len(), rx.len());
        match committed {
            Ok(results) => {
                let batch = jobs
                    .drain(..)
                    .zip(results)
                    .map(|(job, result)| (job.reply, result.map_err(WriteError::Command)))
                    .collect();
                send_replies(replies.as_ref(), batch);
            }
            Err(e) => {
                tracing::error!(error = %e, group = jobs.len(), "write group rolled back");
                let e = Arc::new(store.after_write_failure(e));
                let batch = jobs
                    .drain(..)
                    .map(|job| (job.reply, Err(WriteError::Store(e.clone()))))
                    .collect();
                send_replies(replies.as_ref(), batch);
            }
        }
        merge_failed = false;
        if store.search_log.merge_due(options.merge.start_at_entries) {
            merge_step(&store, &options.merge, &freer);
            // Writes outpacing the merge (large groups, one chunk each): the log's memory is
            // bounded by merging more before the next group, as long as it is over twice its
            // threshold.
            let behind = 2 * options.merge.start_at_entries;
            for _ in 0..MAX_CATCH_UP_CHUNKS {
                if store.search_log.entries() <= behind
                    || !merge_step(&store, &options.merge, &freer)
                {
                    break;
                }
            }
        }
    }
}

/// Waits for the next job while the queue is empty: without a limit when the search terms log
/// is empty, else until the log's idle time has passed (then the writer merges).
fn wait_for_job(
    store: &Store,
    options: &WriterOptions,
    rx: &mut mpsc::Receiver<Job>,
    timer: Option<&tokio::runtime::Runtime>,
) -> Next {
    match timer {
        Some(timer) if store.search_log.entries() > 0 => {
            // The timeout is made inside `block_on`: it needs the timer's context.
            let idle_after = options.merge.idle_after;
            match timer.block_on(async { tokio::time::timeout(idle_after, rx.recv()).await }) {
                Ok(Some(job)) => Next::Job(job),
                Ok(None) => Next::Stop,
                Err(_) => Next::Idle,
            }
        }
        _ => rx.blocking_recv().map_or(Next::Stop, Next::Job),
    }
}

/// Most extra merge chunks between two groups when the search terms log is far behind.
const MAX_CATCH_UP_CHUNKS: usize = 64;

/// What the writer does next.
// A short-lived local, moved once: boxing the job would only add an allocation per group.
#[allow(clippy::large_enum_variant)]
enum Next {
    Job(Job),
    Idle,
    Stop,
}

/// Merges one chunk of the search terms log into the main index, in a transaction of its own.
/// The index is derived from records already durable, so chunks commit without waiting for
/// the disk, but for the last, which also drops the log rows merged. Returns whether a chunk
/// was merged.
fn merge_step(store: &Store, merge: &MergeOptions, freer: &Freer) -> bool {
    let result = (|| {
        let mut tx = store.begin_write()?;
        let Some(step) = store.search_log.merge_chunk(&tx, merge.chunk_entries)? else {
            return Ok(None);
        };
        if !step.is_last() {
            tx.set_durability(redb::Durability::None)
                .map_err(StoreError::db)?;
        }
        tx.commit().map_err(StoreError::db)?;
        Ok(Some(step))
    })();
    match result {
        Ok(Some(step)) => {
            if let Some(spent) = store.search_log.merged(step) {
                freer.free(spent);
            }
            true
        }
        Ok(None) => false,
        Err(e) => {
            store.search_log.abandon_merge();
            tracing::warn!(error = %e, "search terms merge rolled back; the log keeps its rows");
            store.after_write_failure(e);
            false
        }
    }
}

/// A thread of the writer's that frees what takes long to free (a finished merge's entries, up
/// to 140 ms), so that the writer goes on meanwhile. It takes one only while it waits for
/// work (a rendezvous channel): the writer frees one itself when the thread is still busy with
/// the last, or could not be started.
struct Freer(Option<std::sync::mpsc::SyncSender<MergedLog>>);

impl Freer {
    /// Starts the thread (the writer frees everything itself if it cannot).
    fn start() -> Freer {
        let (tx, rx) = std::sync::mpsc::sync_channel::<MergedLog>(0);
        let thread = std::thread::Builder::new()
            .name("outpost-freer".into())
            // Ends when the writer does (the sender is dropped).
            .spawn(move || rx.iter().for_each(drop));
        match thread {
            Ok(_) => Freer(Some(tx)),
            Err(e) => {
                tracing::warn!(error = %e, "writer: no thread to free merged search terms; it frees them itself");
                Freer(None)
            }
        }
    }

    /// Hands `spent` to the thread, or drops it here.
    fn free(&self, spent: MergedLog) {
        if let Some(tx) = &self.0 {
            // Busy or gone: the error gives `spent` back, and it is dropped here.
            let _ = tx.try_send(spent);
        }
    }
}

pub(crate) type Refusable = Result<Outcome, CommandError>;

/// Applies the group's first job, and each job that arrives while the gather waits as it
/// arrives, in one transaction, and commits it durably. Applying while waiting overlaps the
/// callers' return with the group's own work: gathered first and applied after, the group's
/// time was the wait plus the work. A refused command writes nothing; a store failure rolls
/// back the whole group.
fn write_group(
    store: &Store,
    options: &WriterOptions,
    gather: &mut Gather,
    rx: &mut mpsc::Receiver<Job>,
    jobs: &mut Vec<Job>,
    idle: Duration,
) -> Result<Vec<Refusable>, StoreError> {
    let tx = store.begin_write()?;
    let closed = {
        let mut group = OpenGroup::open(&tx)?;
        for job in jobs.iter_mut() {
            group.apply(options, &job.command, job.prepared.take());
        }
        let max = options.group_commit_max;
        gather.fill(jobs, max, idle, |jobs| {
            while jobs.len() < max {
                match rx.try_recv() {
                    Ok(mut job) => {
                        group.apply(options, &job.command, job.prepared.take());
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
        });
        group.close()?
    };
    tx.commit().map_err(StoreError::db)?;
    Ok(closed.committed(store))
}

/// A group's transaction while its commands are applied, one by one as they arrive.
struct OpenGroup<'tx> {
    tx: &'tx redb::WriteTransaction,
    tables: Tables<'tx>,
    next_seq: u64,
    /// The group's time: every command of it is made at once.
    now: i64,
    results: Vec<Refusable>,
    /// The store failure that ends the group: no command after it is applied, and the whole
    /// group is rolled back.
    failed: Option<StoreError>,
    /// Whether a command held a new configuration package.
    config_changed: bool,
}

impl<'tx> OpenGroup<'tx> {
    fn open(tx: &'tx redb::WriteTransaction) -> Result<Self, StoreError> {
        let tables = Tables::open(tx)?;
        let next_seq = tables
            .meta
            .get(schema::NEXT_SEQ)
            .map_err(StoreError::db)?
            .map_or(1, |g| g.value());
        Ok(OpenGroup {
            tx,
            tables,
            next_seq,
            now: now_ms(),
            results: Vec::new(),
            failed: None,
            config_changed: false,
        })
    }

    /// Applies `command` (with the parts of a create its caller `prepared`), or nothing once
    /// the group has failed.
    fn apply(
        &mut self,
        options: &WriterOptions,
        command: &Command,
        prepared: Option<PreparedCreate>,
    ) {
        if self.failed.is_some() {
            return;
        }
        match self.run(options, command, prepared) {
            Ok(result) => self.results.push(result),
            Err(e) => self.failed = Some(e),
        }
    }

    fn run(
        &mut self,
        options: &WriterOptions,
        command: &Command,
        prepared: Option<PreparedCreate>,
    ) -> Result<Refusable, StoreError> {
        let (t, now, seq) = (&mut self.tables, self.now, &mut self.next_seq);
        if !matches!(command, Command::Submit(Submission::NewCustomer(_))) {
            // Every other command may read what the creates before it wrote.
            t.flush_creates()?;
        }
        Ok(match command {
            Command::Submit(sub) => t.submit(options, None, sub, prepared, seq, now)?,
            Command::SubmitAs(id, sub) => t.submit(options, Some(*id), sub, prepared, seq, now)?,
            Command::EditPayload { id, record } => t.edit_payload(*id, record, now)?,
            Command::Resync { id } => t.resync(*id, now)?,
            Command::MarkStaged(reports) => t.mark_staged(reports, now)?,
            Command::ApplyConfig { job, package } => {
                self.config_changed = true;
                t.apply_config(*job, package)?
            }
            Command::ApplyCustomers { package, copies } => t.apply_customers(package, copies)?,
            Command::CompleteRealtime {
                id,
                copy,
                conflicts,
            } => t.complete_realtime(*id, copy, conflicts, now)?,
            Command::Discard { id } => t.discard(*id)?,
            Command::Prune {
                confirmed_before_ms,
                max,
            } => t.prune(*confirmed_before_ms, *max)?,
            Command::ApplyOutcomes {
                outcomes,
                next_cursor,
                feed_id,
            } => t.apply_outcomes(outcomes, *next_cursor, *feed_id, now)?,
            Command::ResetFeed { feed_id } => t.reset_feed(*feed_id, now)?,
        })
    }

    /// Writes what the group's commands leave to its end (the sequence counter, the search
    /// terms log) and closes its tables; the transaction is then ready to commit.
    fn close(mut self) -> Result<ClosedGroup, StoreError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let t = &mut self.tables;
        t.flush_creates()?;
        t.meta
            .insert(schema::NEXT_SEQ, self.next_seq)
            .map_err(StoreError::db)?;
        let changes = t.take_term_changes();
        let last_log_key = super::search_log::append(self.tx, &mut t.meta, &changes)?;
        Ok(ClosedGroup {
            results: self.results,
            changes,
            last_log_key,
            wrote_index: t.wrote_index,
            config_changed: self.config_changed,
        })
    }
}

/// A group whose transaction is ready to commit, and what readers learn once it has.
struct ClosedGroup {
    results: Vec<Refusable>,
    changes: Vec<schema::TermChange>,
    last_log_key: Option<u64>,
    wrote_index: bool,
    config_changed: bool,
}

impl ClosedGroup {
    /// After the commit, before any caller hears of it: tells the readers what changed, and
    /// gives the commands' results.
    fn committed(self, store: &Store) -> Vec<Refusable> {
        if let Some(last) = self.last_log_key {
            // An acknowledged write is found by the next search.
            store.search_log.publish(self.changes, last);
        }
        if self.wrote_index {
            // After the publish: this group's own log rows, made before its direct writes, count.
            store.search_log.index_written();
        }
        if self.config_changed {
            // A reader that sees the new generation reads the new data.
            store.held_config_changed();
        }
        self.results
    }
}

/// The till's and the operator's commands.
impl Tables<'_> {
    fn submit(
        &mut self,
        options: &WriterOptions,
        id: Option<OperationId>,
        sub: &Submission,
        prepared: Option<PreparedCreate>,
        next_seq: &mut u64,
        now: i64,
    ) -> Result<Refusable, StoreError> {
        if let Some(id) = id
            && self
                .op_ids
                .get(id.as_u128())
                .map_err(StoreError::db)?
                .is_some()
        {
            return Ok(Err(CommandError::Conflict(format!(
                "operation {id} exists already"
            ))));
        }
        match sub {
            Submission::NewCustomer(fields) => {
                let prepared = match prepared {
                    Some(prepared) => prepared,
                    None => PreparedCreate::of(fields)?,
                };
                self.create(options, id, prepared, next_seq, now)
            }
            Submission::Change {
                customer,
                record_id,
                payload,
            } => self.change(id, customer, record_id.as_deref(), payload, next_seq, now),
        }
    }

    /// Takes a customer create: it assigns the reference and writes the operation and the
    /// customer's search terms; nothing is refused.
    fn create(
        &mut self,
        options: &WriterOptions,
        id: Option<OperationId>,
        prepared: PreparedCreate,
        next_seq: &mut u64,
        now: i64,
    ) -> Result<Refusable, StoreError> {
        let seq = *next_seq;
        let id = id.unwrap_or_else(|| OperationId::new_v7(now as u64));
        let customer_ref = format!("{}-T{seq}", options.store_id);
        let create = prepared.assign(id, seq, customer_ref, now);
        *next_seq += 1;
        let customer_ref = create.record.customer_ref.clone();
        self.add_create(create, now)?;
        Ok(Ok(Outcome::Accepted {
            operation_id: id,
            customer_ref,
            record_id: None,
            state: OpState::Pending,
        }))
    }

    /// Takes a change of an existing customer (an edit, or a sub-record's create or edit), or
    /// refuses it.
    fn change(
        &mut self,
        id: Option<OperationId>,
        customer: &str,
        record_id: Option<&str>,
        payload: &Payload,
        next_seq: &mut u64,
        now: i64,
    ) -> Result<Refusable, StoreError> {
        let seq = *next_seq;
        let Some(view) = self.customer(customer)? else {
            return Ok(Err(CommandError::NotFound {
                what: "customer",
                id: customer.to_string(),
            }));
        };
        let record_id = match (payload.kind(), payload.action()) {
            (RecordKind::Customer, _) => None,
            (kind, Action::Create) => Some(format!("{}-{seq}", kind.id_prefix())),
            (kind, Action::Edit) => {
                let id = record_id.unwrap_or_default().to_string();
                if !has_sub_record(&view, payload, &id) {
                    return Ok(Err(CommandError::NotFound {
                        what: kind.as_str(),
                        id,
                    }));
                }
                Some(id)
            }
        };
        let state = if self.customer_blocked(&view.customer_ref)? {
            OpState::Held
        } else {
            OpState::Pending
        };
        let op = Operation {
            id: id.unwrap_or_else(|| OperationId::new_v7(now as u64)),
            seq,
            customer_ref: view.customer_ref.clone(),
            record_id,
            payload: payload.clone(),
            state,
            error: None,
            revision: 0,
            accepted_at_ms: now,
            updated_at_ms: now,
            base: match payload {
                Payload::CustomerEdit(patch) => Some(patch.base_values(&view.fields)),
                _ => None,
            },
            conflicts: Vec::new(),
        };
        let mut new_view = view.clone();
        if let Err(e) = new_view.apply(&op) {
            return Ok(Err(e.into()));
        }
        // Every check passed: from here on only writes.
        self.keep_base(&view)?;
        *next_seq += 1;
        self.insert_op(&op)?;
        self.put_view(Some(&view), &new_view)?;
        Ok(Ok(Outcome::Accepted {
            operation_id: op.id,
            customer_ref: op.customer_ref,
            record_id: op.record_id,
            state: op.state,
        }))
    }

    fn edit_payload(
        &mut self,
        id: OperationId,
        record: &serde_json::Value,
        now: i64,
    ) -> Result<Refusable, StoreError> {
        let Some(mut op) = self.op_by_id(id)? else {
            return Ok(Err(CommandError::NotFound {
                what: "operation",
                id: id.to_string(),
            }));
        };
        if op.state != OpState::Failed {
            return Ok(Err(CommandError::Conflict(format!(
                "only a failed operation can be edited; this one is {}",
                op.state.as_str()
            ))));
        }
        let payload = match Payload::parse(op.kind(), op.action(), record.clone()) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e.nested("payload").into())),
        };
        op.payload = payload;
        op.revision += 1;
        op.updated_at_ms = now;
        let Some(old_view) = self.customer(&op.customer_ref)? else {
            return Err(StoreError::Encoding(format!(
                "operation {id} has no customer view"
            )));
        };
        let new_view = match self.compute_view(&op.customer_ref, Some(&op))? {
            Ok(Some(v)) => v,
            Ok(None) => {
                return Err(StoreError::Encoding(format!(
                    "customer {} has no create operation",
                    op.customer_ref
                )));
            }
            Err(e) => return Ok(Err(e.nested("payload").into())),
        };
        self.ops
            .insert(op.seq, encode(&op)?.as_slice())
            .map_err(StoreError::db)?;
        self.put_view(Some(&old_view), &new_view)?;
        Ok(Ok(Outcome::Updated(Box::new(op))))
    }

    fn resync(&mut self, id: OperationId, now: i64) -> Result<Refusable, StoreError> {
        let Some(op) = self.op_by_id(id)? else {
            return Ok(Err(CommandError::NotFound {
                what: "operation",
                id: id.to_string(),
            }));
        };
        if op.state != OpState::Failed {
            return Ok(Err(CommandError::Conflict(format!(
                "only a failed operation can be re-synced; this one is {}",
                op.state.as_str()
            ))));
        }
        let mut updated = None;
        for mut o in self.customer_operations(&op.customer_ref)? {
            let release = o.seq == op.seq || (o.seq > op.seq && o.state == OpState::Held);
            if release {
                if o.seq == op.seq {
                    // A re-sync is a new attempt: HQ re-processes only a new revision.
                    o.revision += 1;
                }
                self.set_state(&mut o, OpState::Pending, None, now)?;
                if o.seq == op.seq {
                    updated = Some(o);
                }
            }
        }
        Ok(updated
            .map(|o| Outcome::Updated(Box::new(o)))
            .ok_or_else(|| CommandError::NotFound {
                what: "operation",
                id: id.to_string(),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Action, RecordKind};
    use crate::store::StoreOptions;
    use crate::store::read::OpFilter;

    fn options() -> WriterOptions {
        WriterOptions {
            store_id: "S0001".into(),
            queue: 16,
            group_commit_max: 64,
            merge: MergeOptions::default(),
            group_wait: Duration::ZERO,
            replies_on: None,
        }
    }

    fn create(i: usize) -> Command {
        Command::Submit(Submission::NewCustomer(NewCustomer {
            first_name: format!("Mari{i}"),
            last_name: "Tamm".into(),
            email: Some(format!("mari{i}@example.ee")),
            phone: None,
            customer_group: None,
            language: None,
        }))
    }

    /// One group of the commands given, applied as the writer applies them, committed.
    fn commit_group(store: &Store, commands: Vec<Command>) -> Vec<Refusable> {
        let options = options();
        let tx = store.begin_write().expect("write");
        let closed = {
            let mut group = OpenGroup::open(&tx).expect("group");
            for command in &commands {
                group.apply(&options, command, prepare(command).expect("prepared"));
            }
            group.close().expect("closed")
        };
        tx.commit().expect("commit");
        closed.committed(store)
    }

    #[test]
    fn a_command_in_a_group_sees_the_creates_before_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            Store::open(&dir.path().join("s.redb"), &StoreOptions::new(8 << 20)).expect("store");
        let edit = Payload::parse(
            RecordKind::Customer,
            Action::Edit,
            serde_json::json!({"last_name": "Kask"}),
        )
        .expect("an edit");
        let id = OperationId::new_v7(1_796_000_000_000);
        let realtime = |i| match create(i) {
            Command::Submit(sub) => Command::SubmitAs(id, sub),
            _ => unreachable!("a create"),
        };
        let mut commands: Vec<Command> = (1..=12).map(create).collect();
        commands.push(Command::Submit(Submission::Change {
            customer: "S0001-T3".into(),
            record_id: None,
            payload: edit,
        }));
        commands.extend((14..=23).map(create));
        commands.push(realtime(24));
        commands.push(realtime(25));
        let results = commit_group(&store, commands);
        assert_eq!(results.len(), 25);
        for (i, result) in results.iter().enumerate().take(24) {
            assert!(
                matches!(result, Ok(Outcome::Accepted { .. })),
                "command {i}: {result:?}"
            );
        }
        assert!(
            matches!(results[24], Err(CommandError::Conflict(_))),
            "the second use of one id is refused: {:?}",
            results[24]
        );
        let edited = store.customer("S0001-T3").expect("read").expect("customer");
        assert_eq!(edited.view.fields.last_name, "Kask");
        for seq in (1..=12).chain(14..=24) {
            let customer = store
                .customer(&format!("S0001-T{seq}"))
                .expect("read")
                .unwrap_or_else(|| panic!("customer {seq}"));
            assert_eq!(customer.view.fields.first_name, format!("Mari{seq}"));
        }
        assert_eq!(store.customer_count().expect("count"), 23);
        let pending = store
            .operations(&OpFilter {
                state: Some(OpState::Pending),
                after_seq: None,
                limit: 100,
            })
            .expect("operations");
        assert_eq!(pending.len(), 24);
        assert!(store.operation(id).expect("read").is_some());
        let found = store.search("mari17", 20).expect("search");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].view.customer_ref, "S0001-T17");
        // A later group reads them all from the tables.
        let results = commit_group(&store, vec![create(26)]);
        assert!(matches!(results[0], Ok(Outcome::Accepted { .. })));
        assert_eq!(store.customer_count().expect("count"), 24);
    }
}
