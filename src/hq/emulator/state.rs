//! HQ's in-memory model, with no I/O: the five staging tables, idempotent staging by operation
//! id, the customer master with its CDX 1010 versions, the per-store outcome feeds, the
//! "Synchronize customers and channel requests" job, and real-time (RTS) calls. The HTTP layer
//! wraps it in a mutex.

mod cdx;
mod rts;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::conflicts::merge_customer_edit;
use super::customer::{HqCustomer, find_mut, upsert};
use super::faults::RejectRule;
use crate::domain::operation::OpError;
use crate::domain::{OperationId, Payload, RecordKind};
use crate::hq::wire::{
    FieldConflict, Outcome, OutcomePage, OutcomeStatus, StageResult, StageStatus, UploadRequest,
    UploadResponse, WireOperation,
};

pub use cdx::AdminError;
pub use rts::RtsError;

/// Customer groups HQ knows; any other group fails HQ-side validation.
pub const KNOWN_CUSTOMER_GROUPS: [&str; 4] = ["RETAIL", "STAFF", "WHOLESALE", "LOYAL"];

/// Most rows HQ stages across its five tables before it refuses uploads (507).
pub const DEFAULT_MAX_ROWS: usize = 1_000_000;

/// Most outcome entries one store's feed holds before HQ refuses that store's uploads (507).
pub const DEFAULT_MAX_FEED: usize = 4_000_000;

/// Most customers HQ holds before it refuses to create more at HQ or in real time (507).
pub const DEFAULT_MAX_CUSTOMERS: usize = 1_000_000;

/// How a row reached HQ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowSource {
    /// Uploaded by the P-job and processed by the sync job.
    #[default]
    Upload,
    /// Applied at once by a real-time call (`POST /hq/v1/rts/operations`).
    RealTime,
}

/// A row's state in its staging table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    /// Staged, waiting for the sync job (OnlineOperationCompleted = 0).
    Staged,
    /// Processed by the sync job (OnlineOperationCompleted = 1).
    Completed,
    /// Refused by the sync job; waits for a new revision.
    Failed,
    /// Not processed: an earlier row of the same customer failed.
    Held,
}

/// One row of a staging table, as the admin endpoint shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRow {
    /// The operation.
    pub operation_id: OperationId,
    /// The revision staged.
    pub revision: u32,
    /// The store that uploaded it.
    pub store_id: String,
    /// The store's channel.
    pub channel_id: String,
    /// The customer's temporary reference at the store.
    pub customer_ref: String,
    /// The node's acceptance order.
    pub seq: u64,
    /// Create or edit.
    pub action: crate::domain::Action,
    /// The sub-record, for sub-record tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    /// 1 once the sync job processed the row successfully, else 0.
    pub online_operation_completed: u8,
    /// Staged, completed, failed or held.
    pub state: RowState,
    /// HQ's error (failed) or the hold reason (held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OpError>,
    /// The record as staged.
    pub payload: Payload,
    /// Uploaded, or applied by a real-time call.
    #[serde(default)]
    pub source: RowSource,
    /// The customer's account number, once the row completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_number: Option<String>,
    /// Fields of an edit HQ did not apply because HQ's copy had changed them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<FieldConflict>,
}

/// What one run of the sync job did. Counts are of transitions made in this run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRunReport {
    /// Rows completed or failed in this run.
    pub processed: usize,
    /// Rows completed (OnlineOperationCompleted set to 1).
    pub completed: usize,
    /// Rows failed by HQ-side validation.
    pub failed: usize,
    /// Rows newly held behind a failed row of the same customer.
    pub held: usize,
    /// Rows left staged because their customer does not exist at HQ yet.
    pub waiting: usize,
}

/// Why a batch could not be staged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    /// HQ's tables or the store's outcome feed are full; nothing of the batch was staged.
    #[error("HQ is full: {0}")]
    Full(String),
}

/// (store_id, customer_ref): the unit of ordering.
type CustomerKey = (String, String);

#[derive(Debug, Clone)]
struct StagedRow {
    store_id: String,
    channel_id: String,
    op: WireOperation,
    state: RowState,
    error: Option<OpError>,
    source: RowSource,
    /// Set once the row completed.
    account_number: Option<String>,
    conflicts: Vec<FieldConflict>,
    /// For a row applied in real time: whether an upload of it has been answered with a fresh
    /// completed outcome yet (see `stage_one`).
    reported_after_upload: bool,
}

impl StagedRow {
    fn key(&self) -> CustomerKey {
        (self.store_id.clone(), self.op.customer_ref.clone())
    }

    fn view(&self) -> TableRow {
        TableRow {
            operation_id: self.op.operation_id,
            revision: self.op.revision,
            store_id: self.store_id.clone(),
            channel_id: self.channel_id.clone(),
            customer_ref: self.op.customer_ref.clone(),
            seq: self.op.seq,
            action: self.op.action,
            record_id: self.op.record_id.clone(),
            online_operation_completed: u8::from(self.state == RowState::Completed),
            state: self.state,
            error: self.error.clone(),
            payload: self.op.payload.clone(),
            source: self.source,
            account_number: self.account_number.clone(),
            conflicts: self.conflicts.clone(),
        }
    }
}

/// What the sync job did with one row.
enum Step {
    Applied(String, Vec<FieldConflict>),
    Refused(OpError),
    Wait,
}

fn slot(kind: RecordKind) -> usize {
    match kind {
        RecordKind::Customer => 0,
        RecordKind::Address => 1,
        RecordKind::Contact => 2,
        RecordKind::Affiliation => 3,
        RecordKind::Attribute => 4,
    }
}

fn invalid(field: &str, message: impl Into<String>) -> OpError {
    OpError {
        code: "invalid".into(),
        message: message.into(),
        field: Some(field.into()),
    }
}

fn conflict(message: String) -> OpError {
    OpError {
        code: "conflict".into(),
        message,
        field: None,
    }
}

fn validation(field: impl Into<String>, message: impl Into<String>) -> OpError {
    OpError {
        code: "validation".into(),
        message: message.into(),
        field: Some(field.into()),
    }
}

fn state_name(state: RowState) -> &'static str {
    match state {
        RowState::Staged => "staged",
        RowState::Completed => "completed",
        RowState::Failed => "failed",
        RowState::Held => "held",
    }
}

/// HQ's whole state: staging tables, customers, outcome feeds.
pub struct HqModel {
    /// The five staging tables, in `RecordKind::ALL` order, each keyed by operation id.
    tables: [BTreeMap<OperationId, StagedRow>; 5],
    /// Which table holds each operation id (ids are unique across tables).
    index: HashMap<OperationId, RecordKind>,
    /// Per customer, its rows not yet completed, in (seq, id) order.
    queues: HashMap<CustomerKey, BTreeSet<(u64, OperationId)>>,
    /// Customers with rows the next sync run may change.
    pending: BTreeSet<CustomerKey>,
    /// The customer master, by account counter (so listing is in creation order).
    customers: BTreeMap<u64, HqCustomer>,
    by_ref: HashMap<CustomerKey, u64>,
    by_account: HashMap<String, u64>,
    /// Job 1010's index: every customer once, keyed by (version, account number).
    changes: BTreeMap<(u64, String), u64>,
    /// Job 1010's version: +1 on every change to any customer.
    customer_version: u64,
    /// Per store, its outcome feed; an entry's cursor is its position + 1.
    feeds: HashMap<String, Vec<Outcome>>,
    next_account: u64,
    max_rows: usize,
    max_feed: usize,
    max_customers: usize,
    /// Identity of the outcome feeds; new for every fresh model.
    feed_id: u64,
}

impl Default for HqModel {
    fn default() -> Self {
        Self::new()
    }
}

impl HqModel {
    /// An empty HQ with the default capacity.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_MAX_ROWS, DEFAULT_MAX_FEED)
    }

    /// An empty HQ that holds at most `max_rows` staged rows and `max_feed` outcomes per store.
    pub fn with_capacity(max_rows: usize, max_feed: usize) -> Self {
        Self {
            tables: Default::default(),
            index: HashMap::new(),
            queues: HashMap::new(),
            pending: BTreeSet::new(),
            customers: BTreeMap::new(),
            by_ref: HashMap::new(),
            by_account: HashMap::new(),
            changes: BTreeMap::new(),
            customer_version: 0,
            feeds: HashMap::new(),
            next_account: 1,
            max_rows,
            max_feed,
            max_customers: DEFAULT_MAX_CUSTOMERS,
            // Random: a restarted emulator has forgotten everything, and must say so.
            feed_id: rand::random::<u64>().max(1),
        }
    }

    /// The identity of this HQ's outcome feeds (see [`OutcomePage::feed_id`]).
    pub fn feed_id(&self) -> u64 {
        self.feed_id
    }

    /// Stages a batch: one result per operation, in request order. Idempotent by operation id.
    pub fn stage(&mut self, req: &UploadRequest) -> Result<UploadResponse, StageError> {
        let new_rows = req
            .operations
            .iter()
            .filter(|o| !self.index.contains_key(&o.operation_id))
            .count();
        if self.index.len().saturating_add(new_rows) > self.max_rows {
            return Err(StageError::Full(format!(
                "the staging tables hold at most {} rows",
                self.max_rows
            )));
        }
        if self.feeds.get(&req.store_id).map_or(0, Vec::len) >= self.max_feed {
            return Err(StageError::Full(format!(
                "the outcome feed of store {} holds at most {} entries",
                req.store_id, self.max_feed
            )));
        }
        let results = req
            .operations
            .iter()
            .map(|op| self.stage_one(&req.store_id, &req.channel_id, op))
            .collect();
        Ok(UploadResponse {
            results,
            feed_id: Some(self.feed_id),
        })
    }

    fn stage_one(&mut self, store_id: &str, channel_id: &str, op: &WireOperation) -> StageResult {
        let answer = |status, error| StageResult {
            operation_id: op.operation_id,
            revision: op.revision,
            status,
            error,
        };
        let rejected = |error| answer(StageStatus::Rejected, Some(error));
        if let Some(e) = structural_error(op) {
            return rejected(e);
        }
        let Some(kind) = self.index.get(&op.operation_id).copied() else {
            let row = StagedRow {
                store_id: store_id.to_string(),
                channel_id: channel_id.to_string(),
                op: op.clone(),
                state: RowState::Staged,
                error: None,
                source: RowSource::Upload,
                account_number: None,
                conflicts: Vec::new(),
                reported_after_upload: false,
            };
            let key = row.key();
            self.queues
                .entry(key.clone())
                .or_default()
                .insert((op.seq, op.operation_id));
            self.pending.insert(key);
            self.index.insert(op.operation_id, op.kind);
            self.tables[slot(op.kind)].insert(op.operation_id, row);
            return answer(StageStatus::Staged, None);
        };
        let Some(row) = self.tables[slot(kind)].get_mut(&op.operation_id) else {
            // The index and the tables are updated together; a miss would be a bug here.
            return rejected(conflict(format!(
                "operation {} is indexed but not staged",
                op.operation_id
            )));
        };
        let same_record = row.store_id == store_id
            && row.op.customer_ref == op.customer_ref
            && row.op.kind == op.kind
            && row.op.action == op.action
            && row.op.record_id == op.record_id
            && row.op.seq == op.seq;
        if !same_record {
            return rejected(conflict(format!(
                "operation {} was staged before for a different record",
                op.operation_id
            )));
        }
        match op.revision.cmp(&row.op.revision) {
            // A stale retry of an older revision: the newer one stands.
            std::cmp::Ordering::Less => answer(StageStatus::Staged, None),
            std::cmp::Ordering::Equal if row.op.payload == op.payload => {
                // Applied in real time, and now uploaded: the node fell back to its queue (the
                // RTS answer was lost) and may have skipped the outcome written then, before it
                // knew the operation. Report it once more, after the upload.
                let report = (row.source == RowSource::RealTime && !row.reported_after_upload)
                    .then(|| {
                        row.reported_after_upload = true;
                        completed_outcome(row)
                    });
                if let Some(outcome) = report {
                    self.append_outcome(store_id, outcome);
                }
                answer(StageStatus::Staged, None)
            }
            std::cmp::Ordering::Equal => rejected(conflict(format!(
                "operation {} revision {} was staged before with a different payload",
                op.operation_id, op.revision
            ))),
            std::cmp::Ordering::Greater if row.state == RowState::Failed => {
                // An operator fixed a failed operation: the new revision replaces it and is
                // processable again; the rows held behind it follow once it completes.
                row.op.revision = op.revision;
                row.op.payload = op.payload.clone();
                row.state = RowState::Staged;
                row.error = None;
                let key = row.key();
                self.pending.insert(key);
                answer(StageStatus::Staged, None)
            }
            std::cmp::Ordering::Greater => rejected(conflict(format!(
                "operation {} is {} at HQ; only a failed operation takes a new revision",
                op.operation_id,
                state_name(row.state)
            ))),
        }
    }

    /// Runs "Synchronize customers and channel requests" once over every customer with work.
    pub fn run_sync(&mut self, reject: Option<&RejectRule>) -> SyncRunReport {
        let mut report = SyncRunReport::default();
        let keys: Vec<CustomerKey> = self.pending.iter().cloned().collect();
        for key in keys {
            self.sync_customer(&key, reject, &mut report);
        }
        report
    }

    /// Processes one customer's rows in seq order; a failed row holds every later one.
    fn sync_customer(
        &mut self,
        key: &CustomerKey,
        reject: Option<&RejectRule>,
        report: &mut SyncRunReport,
    ) {
        let ids: Vec<(u64, OperationId)> = self
            .queues
            .get(key)
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default();
        let mut blocker: Option<OperationId> = None;
        let mut waiting = false;
        let mut done: Vec<(u64, OperationId)> = Vec::new();
        for (seq, id) in ids {
            let Some(row) = self.row(id) else { continue };
            let (state, op) = (row.state, row.op.clone());
            if waiting {
                if state == RowState::Staged {
                    report.waiting += 1;
                }
                continue;
            }
            match state {
                RowState::Completed => done.push((seq, id)),
                RowState::Failed => {
                    blocker.get_or_insert(id);
                }
                RowState::Staged | RowState::Held => {
                    if let Some(failed) = blocker {
                        let reason = OpError {
                            code: "held".into(),
                            message: format!("waiting for operation {failed} which failed"),
                            field: None,
                        };
                        let account = self.account_of(key);
                        if self.transition(id, RowState::Held, Some(reason), account) {
                            report.held += 1;
                        }
                        continue;
                    }
                    match self.apply(key, &op, reject) {
                        Step::Applied(account, conflicts) => {
                            self.complete(id, account, conflicts);
                            report.completed += 1;
                            report.processed += 1;
                            done.push((seq, id));
                        }
                        Step::Refused(error) => {
                            let account = self.account_of(key);
                            self.transition(id, RowState::Failed, Some(error), account);
                            report.failed += 1;
                            report.processed += 1;
                            blocker = Some(id);
                        }
                        Step::Wait => {
                            // Its customer is not at HQ yet; this row and every later one
                            // wait for the create, in order.
                            waiting = true;
                            report.waiting += 1;
                        }
                    }
                }
            }
        }
        if let Some(queue) = self.queues.get_mut(key) {
            for entry in &done {
                queue.remove(entry);
            }
            if queue.is_empty() {
                self.queues.remove(key);
            }
        }
        if !waiting {
            // Failed and held rows change only when an upload brings a new revision, and
            // that puts the customer back here.
            self.pending.remove(key);
        }
    }

    /// Applies one row to the customer master, or says why not. Changes nothing unless it
    /// returns `Applied`.
    fn apply(
        &mut self,
        key: &CustomerKey,
        op: &WireOperation,
        reject: Option<&RejectRule>,
    ) -> Step {
        if let Some(rule) = reject
            && rule.matches(&op.payload.record_json())
        {
            return Step::Refused(validation(
                rule.field.as_str(),
                format!("HQ refuses records with this {}", rule.field),
            ));
        }
        if let Err(e) = op.payload.validate() {
            return Step::Refused(validation(e.field, e.message));
        }
        if let Some(e) = customer_group_error(&op.payload) {
            return Step::Refused(e);
        }
        let target = self
            .by_ref
            .get(key)
            .or_else(|| self.by_account.get(&key.1))
            .copied();
        let number = match (&op.payload, target) {
            (Payload::CustomerCreate(fields), None) => {
                let (number, account_number) = self.create_customer(key, fields.clone());
                if let Some(c) = self.customers.get_mut(&number) {
                    c.operation_ids.push(op.operation_id);
                }
                return Step::Applied(account_number, Vec::new());
            }
            (_, None) => return Step::Wait,
            (_, Some(number)) => number,
        };
        let Some(customer) = self.customers.get_mut(&number) else {
            return Step::Wait;
        };
        let id = op.record_id.as_deref().unwrap_or_default();
        let missing = |what: &str| validation("record_id", format!("HQ holds no {what} {id}"));
        let mut conflicts = Vec::new();
        let applied: Result<(), OpError> = match &op.payload {
            // A create for a customer HQ already holds (a re-sent create under a new id)
            // replaces its fields, as the node's own view does.
            Payload::CustomerCreate(fields) => {
                customer.fields = fields.clone();
                Ok(())
            }
            Payload::CustomerEdit(patch) => {
                match merge_customer_edit(&customer.fields, patch, op.base.as_ref()) {
                    Ok(merge) => {
                        merge.apply.apply_to(&mut customer.fields);
                        conflicts = merge.conflicts;
                        Ok(())
                    }
                    Err(e) => Err(OpError {
                        code: "internal".into(),
                        message: e.to_string(),
                        field: None,
                    }),
                }
            }
            Payload::AddressCreate(a) => {
                upsert(&mut customer.addresses, id, a.clone());
                Ok(())
            }
            Payload::AddressEdit(p) => find_mut(&mut customer.addresses, id)
                .map(|a| p.apply_to(a))
                .ok_or_else(|| missing("address")),
            Payload::ContactCreate(c) => {
                upsert(&mut customer.contacts, id, c.clone());
                Ok(())
            }
            Payload::ContactEdit(p) => match find_mut(&mut customer.contacts, id) {
                Some(c) => p
                    .apply_checked(c)
                    .map_err(|e| validation(e.field, e.message)),
                None => Err(missing("contact")),
            },
            Payload::AffiliationCreate(a) => {
                upsert(&mut customer.affiliations, id, a.clone());
                Ok(())
            }
            Payload::AffiliationEdit(p) => find_mut(&mut customer.affiliations, id)
                .map(|a| p.apply_to(a))
                .ok_or_else(|| missing("affiliation")),
            Payload::AttributeCreate(a) => {
                upsert(&mut customer.attributes, id, a.clone());
                Ok(())
            }
            Payload::AttributeEdit(p) => find_mut(&mut customer.attributes, id)
                .map(|a| p.apply_to(a))
                .ok_or_else(|| missing("attribute")),
        };
        match applied {
            Ok(()) => {
                customer.operation_ids.push(op.operation_id);
                let account_number = customer.account_number.clone();
                // Every applied operation is a change for job 1010, even an edit whose every
                // field was in conflict: the store then needs HQ's values to converge.
                self.touch(number);
                Step::Applied(account_number, conflicts)
            }
            Err(e) => Step::Refused(e),
        }
    }

    /// Adds a customer to the master: a new account number, version, and (for a store's
    /// customer) its `(store_id, customer_ref)` key. `key.0` empty = created at HQ.
    fn create_customer(
        &mut self,
        key: &CustomerKey,
        fields: crate::domain::NewCustomer,
    ) -> (u64, String) {
        let number = self.next_account;
        self.next_account += 1;
        let account_number = format!("C{number:06}");
        let from_store = !key.0.is_empty();
        self.customers.insert(
            number,
            HqCustomer {
                account_number: account_number.clone(),
                store_id: key.0.clone(),
                // Stores refer to a customer created at HQ by its account number.
                customer_ref: if from_store {
                    key.1.clone()
                } else {
                    account_number.clone()
                },
                fields,
                addresses: Vec::new(),
                contacts: Vec::new(),
                affiliations: Vec::new(),
                attributes: Vec::new(),
                operation_ids: Vec::new(),
                version: 0,
            },
        );
        if from_store {
            self.by_ref.insert(key.clone(), number);
        }
        self.by_account.insert(account_number.clone(), number);
        self.touch(number);
        (number, account_number)
    }

    /// Gives a customer the next 1010 version (a change job 1010 must carry).
    fn touch(&mut self, number: u64) {
        let Some(customer) = self.customers.get_mut(&number) else {
            return;
        };
        self.changes
            .remove(&(customer.version, customer.account_number.clone()));
        self.customer_version += 1;
        customer.version = self.customer_version;
        self.changes
            .insert((customer.version, customer.account_number.clone()), number);
    }

    fn row(&self, id: OperationId) -> Option<&StagedRow> {
        let kind = self.index.get(&id)?;
        self.tables[slot(*kind)].get(&id)
    }

    fn account_of(&self, key: &CustomerKey) -> Option<String> {
        let number = self
            .by_ref
            .get(key)
            .or_else(|| self.by_account.get(&key.1))?;
        self.customers.get(number).map(|c| c.account_number.clone())
    }

    /// Marks a row completed with its account number and conflicts, and reports it.
    fn complete(&mut self, id: OperationId, account_number: String, conflicts: Vec<FieldConflict>) {
        if let Some(kind) = self.index.get(&id).copied()
            && let Some(row) = self.tables[slot(kind)].get_mut(&id)
        {
            row.account_number = Some(account_number.clone());
            row.conflicts.clone_from(&conflicts);
        }
        self.transition_with(
            id,
            RowState::Completed,
            None,
            Some(account_number),
            conflicts,
        );
    }

    /// Appends an outcome to a store's feed, giving it the next cursor.
    fn append_outcome(&mut self, store_id: &str, mut outcome: Outcome) {
        let feed = self.feeds.entry(store_id.to_string()).or_default();
        outcome.cursor = feed.len() as u64 + 1;
        feed.push(outcome);
    }

    /// Moves a row to `state` and appends the outcome to its store's feed, unless nothing
    /// changes. Returns whether it changed.
    fn transition(
        &mut self,
        id: OperationId,
        state: RowState,
        error: Option<OpError>,
        account_number: Option<String>,
    ) -> bool {
        self.transition_with(id, state, error, account_number, Vec::new())
    }

    /// [`Self::transition`] with the conflicts a completed edit reports.
    fn transition_with(
        &mut self,
        id: OperationId,
        state: RowState,
        error: Option<OpError>,
        account_number: Option<String>,
        conflicts: Vec<FieldConflict>,
    ) -> bool {
        let status = match state {
            RowState::Completed => OutcomeStatus::Completed,
            RowState::Failed => OutcomeStatus::Failed,
            RowState::Held => OutcomeStatus::Held,
            RowState::Staged => return false,
        };
        let Some(kind) = self.index.get(&id).copied() else {
            return false;
        };
        let Some(row) = self.tables[slot(kind)].get_mut(&id) else {
            return false;
        };
        if row.state == state && row.error == error {
            return false;
        }
        row.state = state;
        row.error.clone_from(&error);
        let outcome = Outcome {
            cursor: 0,
            operation_id: id,
            revision: row.op.revision,
            status,
            customer_ref: row.op.customer_ref.clone(),
            account_number,
            error,
            conflicts,
        };
        let store_id = row.store_id.clone();
        self.append_outcome(&store_id, outcome);
        true
    }

    /// A store's outcomes with cursor greater than `after`, at most `limit`, in cursor order.
    pub fn outcomes(&self, store_id: &str, after: u64, limit: usize) -> OutcomePage {
        let feed = self.feeds.get(store_id).map_or(&[][..], Vec::as_slice);
        // Cursors are positions + 1, so the entries after `after` start at index `after`.
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(feed.len());
        let outcomes: Vec<Outcome> = feed[start..].iter().take(limit).cloned().collect();
        let next_cursor = outcomes.last().map_or(after, |o| o.cursor);
        OutcomePage {
            outcomes,
            next_cursor,
            feed_id: self.feed_id,
        }
    }

    /// Every customer HQ holds, in creation order.
    pub fn customers(&self) -> Vec<HqCustomer> {
        self.customers.values().cloned().collect()
    }

    /// The five staging tables by name, rows in (store, seq) order.
    pub fn tables(&self) -> BTreeMap<&'static str, Vec<TableRow>> {
        RecordKind::ALL
            .into_iter()
            .map(|kind| {
                let mut rows: Vec<TableRow> = self.tables[slot(kind)]
                    .values()
                    .map(StagedRow::view)
                    .collect();
                rows.sort_by(|a, b| {
                    (&a.store_id, a.seq, a.operation_id).cmp(&(&b.store_id, b.seq, b.operation_id))
                });
                (kind.hq_table(), rows)
            })
            .collect()
    }

    /// One staged row, wherever it is.
    pub fn table_row(&self, id: OperationId) -> Option<TableRow> {
        self.row(id).map(StagedRow::view)
    }
}

/// The completed outcome of a completed row (cursor set when appended).
fn completed_outcome(row: &StagedRow) -> Outcome {
    Outcome {
        cursor: 0,
        operation_id: row.op.operation_id,
        revision: row.op.revision,
        status: OutcomeStatus::Completed,
        customer_ref: row.op.customer_ref.clone(),
        account_number: row.account_number.clone(),
        error: None,
        conflicts: row.conflicts.clone(),
    }
}

/// Checks what must hold for a row to be staged at all (not HQ's business validation).
fn structural_error(op: &WireOperation) -> Option<OpError> {
    if op.payload.kind() != op.kind {
        return Some(invalid("kind", "the payload is not of this kind"));
    }
    if op.payload.action() != op.action {
        return Some(invalid("action", "the payload is not of this action"));
    }
    if op.customer_ref.trim().is_empty() {
        return Some(invalid("customer_ref", "must not be empty"));
    }
    let has_record_id = op
        .record_id
        .as_deref()
        .is_some_and(|r| !r.trim().is_empty());
    if op.kind != RecordKind::Customer && !has_record_id {
        return Some(invalid(
            "record_id",
            "a sub-record operation needs its record id",
        ));
    }
    if op.base.as_ref().is_some_and(|b| !b.is_object()) {
        return Some(invalid(
            "base",
            "must be an object of field names to the values the store saw",
        ));
    }
    None
}

/// HQ-side validation no node can do: the customer group must exist at HQ.
fn customer_group_error(payload: &Payload) -> Option<OpError> {
    let group = match payload {
        Payload::CustomerCreate(c) => c.customer_group.as_deref(),
        Payload::CustomerEdit(p) => p.customer_group.as_ref().and_then(Option::as_deref),
        _ => None,
    }?;
    unknown_group(group)
}

/// The validation error for a customer group HQ does not know, if it does not.
fn unknown_group(group: &str) -> Option<OpError> {
    if KNOWN_CUSTOMER_GROUPS.contains(&group) {
        return None;
    }
    Some(validation(
        "customer_group",
        format!(
            "customer group {group} does not exist at HQ (known: {})",
            KNOWN_CUSTOMER_GROUPS.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cdx;
