//! Real-time service (RTS) calls: one operation applied at once, as the sync job would apply
//! it, idempotently by operation id in the same registry as uploads.

use super::{
    CustomerKey, HqModel, RowSource, RowState, StagedRow, Step, SyncRunReport, completed_outcome,
    conflict, slot, state_name, structural_error, validation,
};
use crate::domain::operation::OpError;
use crate::hq::emulator::faults::RejectRule;
use crate::hq::wire::{RtsRequest, RtsResponse, StageStatus};

/// Why a real-time call was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtsError {
    /// HQ refused the operation (validation, conflict, held, customer unknown); nothing was
    /// applied and nothing recorded, unless the operation was uploaded before (then its row
    /// holds the error, as after a sync run).
    #[error("HQ refused the operation: {}", .0.message)]
    Refused(OpError),
    /// HQ's tables, the store's outcome feed, or the customer master are full.
    #[error("HQ is full: {0}")]
    Full(String),
}

impl HqModel {
    /// Applies one operation now (`POST /hq/v1/rts/operations`). Idempotent by operation id:
    /// an id HQ already completed (in real time or by the sync job) is answered with its
    /// original result; an id uploaded but not completed yet is processed now, with the rows
    /// of its customer before it. A new operation whose customer has unfinished uploaded rows
    /// at HQ waits for them (they are processed first), so per-customer order holds.
    pub fn real_time(
        &mut self,
        req: &RtsRequest,
        reject: Option<&RejectRule>,
    ) -> Result<RtsResponse, RtsError> {
        let op = &req.operation;
        if let Some(e) = structural_error(op) {
            return Err(RtsError::Refused(e));
        }
        if self.index.contains_key(&op.operation_id) {
            return self.real_time_again(req, reject);
        }
        let key: CustomerKey = (req.store_id.clone(), op.customer_ref.clone());
        if self.queues.contains_key(&key) {
            let mut report = SyncRunReport::default();
            self.sync_customer(&key, reject, &mut report);
            let first = self
                .queues
                .get(&key)
                .and_then(|q| q.iter().next())
                .map(|(_, id)| *id);
            if let Some(id) = first {
                let state = self.row(id).map_or("unknown", |r| state_name(r.state));
                return Err(RtsError::Refused(OpError {
                    code: "held".into(),
                    message: format!(
                        "waiting for operation {id} of the same customer, which is {state} at HQ"
                    ),
                    field: None,
                }));
            }
        }
        self.check_room(req)?;
        match self.apply(&key, op, reject) {
            Step::Applied(account_number, conflicts) => {
                let row = StagedRow {
                    store_id: req.store_id.clone(),
                    channel_id: req.channel_id.clone(),
                    op: op.clone(),
                    state: RowState::Completed,
                    error: None,
                    source: RowSource::RealTime,
                    account_number: Some(account_number.clone()),
                    conflicts: conflicts.clone(),
                    reported_after_upload: false,
                };
                // Reported now too: a node that got this answer learns nothing new from it,
                // and one that lost the answer learns the result from the feed.
                let outcome = completed_outcome(&row);
                self.index.insert(op.operation_id, op.kind);
                self.tables[slot(op.kind)].insert(op.operation_id, row);
                self.append_outcome(&req.store_id, outcome);
                self.answer(op.operation_id, &account_number, conflicts)
            }
            Step::Refused(e) => Err(RtsError::Refused(e)),
            Step::Wait => Err(RtsError::Refused(validation(
                "customer_ref",
                format!(
                    "HQ holds no customer {} of store {}",
                    op.customer_ref, req.store_id
                ),
            ))),
        }
    }

    /// A real-time call for an operation id HQ already holds.
    fn real_time_again(
        &mut self,
        req: &RtsRequest,
        reject: Option<&RejectRule>,
    ) -> Result<RtsResponse, RtsError> {
        let op = &req.operation;
        let Some(row) = self.row(op.operation_id) else {
            return Err(RtsError::Refused(conflict(format!(
                "operation {} is indexed but not staged",
                op.operation_id
            ))));
        };
        let same_record = row.store_id == req.store_id
            && row.op.customer_ref == op.customer_ref
            && row.op.kind == op.kind
            && row.op.action == op.action
            && row.op.record_id == op.record_id
            && row.op.seq == op.seq;
        if !same_record {
            return Err(RtsError::Refused(conflict(format!(
                "operation {} was applied or staged before for a different record",
                op.operation_id
            ))));
        }
        if row.state == RowState::Completed {
            return match op.revision.cmp(&row.op.revision) {
                std::cmp::Ordering::Greater => Err(RtsError::Refused(conflict(format!(
                    "operation {} is completed at HQ; only a failed operation takes a new revision",
                    op.operation_id
                )))),
                std::cmp::Ordering::Equal if row.op.payload != op.payload => {
                    Err(RtsError::Refused(conflict(format!(
                        "operation {} revision {} was applied before with a different payload",
                        op.operation_id, op.revision
                    ))))
                }
                // A repeat (or a stale retry of an older revision): the original result.
                _ => self.completed_answer(op.operation_id),
            };
        }
        // Uploaded, not completed yet: stage this revision as an upload would (a failed row
        // takes a higher one), then process the customer's rows now, in order.
        let key = row.key();
        let staged = self.stage_one(&req.store_id, &req.channel_id, op);
        if staged.status == StageStatus::Rejected {
            return Err(RtsError::Refused(staged.error.unwrap_or_else(|| {
                conflict(format!("operation {} was refused", op.operation_id))
            })));
        }
        let mut report = SyncRunReport::default();
        self.sync_customer(&key, reject, &mut report);
        let Some(row) = self.row(op.operation_id) else {
            return Err(RtsError::Refused(conflict(format!(
                "operation {} vanished",
                op.operation_id
            ))));
        };
        match row.state {
            RowState::Completed => self.completed_answer(op.operation_id),
            RowState::Failed | RowState::Held => {
                Err(RtsError::Refused(row.error.clone().unwrap_or_else(|| {
                    validation("body", format!("operation {} failed", op.operation_id))
                })))
            }
            RowState::Staged => Err(RtsError::Refused(validation(
                "customer_ref",
                format!(
                    "HQ holds no customer {} of store {}",
                    op.customer_ref, req.store_id
                ),
            ))),
        }
    }

    /// The original answer for a completed row.
    fn completed_answer(&self, id: crate::domain::OperationId) -> Result<RtsResponse, RtsError> {
        let Some(row) = self.row(id) else {
            return Err(RtsError::Refused(conflict(format!(
                "operation {id} is not held at HQ"
            ))));
        };
        let Some(account_number) = row.account_number.clone() else {
            return Err(RtsError::Refused(conflict(format!(
                "operation {id} is completed without an account number"
            ))));
        };
        self.answer(id, &account_number, row.conflicts.clone())
    }

    fn answer(
        &self,
        operation_id: crate::domain::OperationId,
        account_number: &str,
        conflicts: Vec<crate::hq::wire::FieldConflict>,
    ) -> Result<RtsResponse, RtsError> {
        let customer = self.customer_record(account_number).ok_or_else(|| {
            RtsError::Refused(validation(
                "customer_ref",
                format!("HQ holds no customer {account_number}"),
            ))
        })?;
        Ok(RtsResponse {
            operation_id,
            account_number: account_number.to_string(),
            conflicts,
            customer,
        })
    }

    /// Refuses a new real-time operation when HQ has no room for its row, outcome or customer.
    fn check_room(&self, req: &RtsRequest) -> Result<(), RtsError> {
        if self.index.len() >= self.max_rows {
            return Err(RtsError::Full(format!(
                "the staging tables hold at most {} rows",
                self.max_rows
            )));
        }
        if self.feeds.get(&req.store_id).map_or(0, Vec::len) >= self.max_feed {
            return Err(RtsError::Full(format!(
                "the outcome feed of store {} holds at most {} entries",
                req.store_id, self.max_feed
            )));
        }
        let creates = matches!(
            req.operation.payload,
            crate::domain::Payload::CustomerCreate(_)
        );
        if creates && self.customers.len() >= self.max_customers {
            return Err(RtsError::Full(format!(
                "HQ holds at most {} customers",
                self.max_customers
            )));
        }
        Ok(())
    }
}
