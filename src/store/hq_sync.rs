//! The uploader's and outcome puller's bookkeeping: what HQ did with each operation, written in
//! the same transaction as the feed cursor so each outcome is applied exactly once.

use redb::ReadableTable;

use super::StoreError;
use super::schema;
use super::tables::Tables;
use super::writer::{Outcome, Refusable};
use crate::domain::operation::OpError;
use crate::domain::{OpState, OperationId};

/// HQ's answer for one uploaded operation.
#[derive(Debug, Clone)]
pub struct StageReport {
    /// The operation.
    pub id: OperationId,
    /// The revision HQ answered for.
    pub revision: u32,
    /// `None` when staged; HQ's refusal otherwise.
    pub refused: Option<OpError>,
    /// The outcome feed HQ said it staged the operation for (`None`: HQ did not say). A
    /// report for another feed than the stored one leaves the operation pending (it is sent
    /// again); with no feed stored yet, the report's feed is stored, so a later page from a new
    /// feed re-sends the operation.
    pub feed_id: Option<u64>,
}

/// What HQ's sync job concluded about an operation.
#[derive(Debug, Clone)]
pub enum HqVerdict {
    /// OnlineOperationCompleted = 1; the customer's HQ account number.
    Completed {
        /// HQ's account number for the customer.
        account_number: Option<String>,
        /// Fields of an edit HQ kept its own value for.
        conflicts: Vec<crate::domain::operation::Conflict>,
    },
    /// Refused by HQ-side validation.
    Failed(OpError),
    /// Waiting at HQ behind a failed operation of the same customer.
    Held(OpError),
}

/// One entry of HQ's outcome feed.
#[derive(Debug, Clone)]
pub struct HqOutcome {
    /// The operation.
    pub id: OperationId,
    /// The revision the verdict is for; verdicts on older revisions are ignored.
    pub revision: u32,
    /// The verdict.
    pub verdict: HqVerdict,
}

/// Key in the meta table of the outcome feed cursor.
pub const OUTCOME_CURSOR: &str = "outcome_cursor";
/// Key in the meta table of the identity of the feed the cursor belongs to.
pub const OUTCOME_FEED: &str = "outcome_feed";

impl Tables<'_> {
    pub(crate) fn mark_staged(
        &mut self,
        reports: &[StageReport],
        now: i64,
    ) -> Result<Refusable, StoreError> {
        let mut changed = 0;
        let mut stored_feed = self
            .meta
            .get(OUTCOME_FEED)
            .map_err(StoreError::db)?
            .map_or(0, |g| g.value());
        for report in reports {
            if let Some(feed) = report.feed_id.filter(|f| *f != 0) {
                if stored_feed == 0 {
                    // Staged before the first outcome page: remember the feed, so that an HQ
                    // that loses its history before that page is noticed (and this re-sent).
                    self.meta
                        .insert(OUTCOME_FEED, feed)
                        .map_err(StoreError::db)?;
                    stored_feed = feed;
                } else if feed != stored_feed {
                    // Staged in a feed the node has already left (HQ lost its history since
                    // the request went): HQ no longer has it; it stays pending and goes again.
                    continue;
                }
            }
            let Some(mut record) = self.op_record_by_id(report.id)? else {
                continue;
            };
            // Only the revision that was sent, and only if nothing moved it meanwhile.
            if record.revision != report.revision || record.state != OpState::Pending {
                continue;
            }
            match &report.refused {
                None => self.set_record_state(&mut record, OpState::Uploaded, None, now)?,
                Some(error) => self.fail(&mut record.operation()?, error.clone(), now)?,
            }
            changed += 1;
        }
        Ok(Ok(Outcome::Synced(changed)))
    }

    /// HQ's outcome feed is a new one (HQ lost its history): read it from the start, and send
    /// again every operation HQ staged but never answered — HQ deduplicates by id, so nothing
    /// it still has is applied twice.
    pub(crate) fn reset_feed(&mut self, feed_id: u64, now: i64) -> Result<Refusable, StoreError> {
        let code = OpState::Uploaded.code();
        let mut seqs = Vec::new();
        for entry in self
            .by_state
            .range((code, 0)..=(code, u64::MAX))
            .map_err(StoreError::db)?
        {
            seqs.push(entry.map_err(StoreError::db)?.0.value().1);
        }
        let mut moved = 0;
        for seq in seqs {
            let Some(bytes) = self.ops.get(seq).map_err(StoreError::db)? else {
                continue;
            };
            let mut op: crate::domain::Operation = super::schema::decode(bytes.value())?;
            drop(bytes);
            self.set_state(&mut op, OpState::Pending, None, now)?;
            moved += 1;
        }
        self.meta
            .insert(OUTCOME_CURSOR, 0)
            .map_err(StoreError::db)?;
        self.meta
            .insert(OUTCOME_FEED, feed_id)
            .map_err(StoreError::db)?;
        Ok(Ok(Outcome::Synced(moved)))
    }

    pub(crate) fn apply_outcomes(
        &mut self,
        outcomes: &[HqOutcome],
        next_cursor: u64,
        feed_id: u64,
        now: i64,
    ) -> Result<Refusable, StoreError> {
        self.meta
            .insert(OUTCOME_FEED, feed_id)
            .map_err(StoreError::db)?;
        let mut changed = 0;
        for outcome in outcomes {
            let Some(mut record) = self.op_record_by_id(outcome.id)? else {
                continue;
            };
            if record.revision != outcome.revision {
                continue;
            }
            match &outcome.verdict {
                HqVerdict::Completed {
                    account_number,
                    conflicts,
                } => {
                    if let Some(account) = account_number {
                        self.set_account_number(&record.customer_ref, account)?;
                    }
                    if record.state != OpState::Completed {
                        record.conflicts.clone_from(conflicts);
                        self.set_record_state(&mut record, OpState::Completed, None, now)?;
                        self.fold_into_base(&record)?;
                    }
                }
                HqVerdict::Failed(error) => {
                    self.fail(&mut record.operation()?, error.clone(), now)?;
                }
                HqVerdict::Held(error) => {
                    if record.state != OpState::Pending {
                        let error = Some(error.clone());
                        self.set_record_state(&mut record, OpState::Held, error, now)?;
                    }
                }
            }
            changed += 1;
        }
        self.meta
            .insert(OUTCOME_CURSOR, next_cursor)
            .map_err(StoreError::db)?;
        Ok(Ok(Outcome::Synced(changed)))
    }

    /// Marks `op` failed and holds the customer's later operations that have not gone to HQ.
    fn fail(
        &mut self,
        op: &mut crate::domain::Operation,
        error: OpError,
        now: i64,
    ) -> Result<(), StoreError> {
        self.set_state(op, OpState::Failed, Some(error), now)?;
        let hold = OpError {
            code: "held".into(),
            message: format!("waiting for operation {} which failed", op.id),
            field: None,
        };
        for mut later in self.customer_operations(&op.customer_ref)? {
            if later.seq > op.seq && later.state == OpState::Pending {
                self.set_state(&mut later, OpState::Held, Some(hold.clone()), now)?;
            }
        }
        Ok(())
    }

    fn set_account_number(&mut self, customer_ref: &str, account: &str) -> Result<(), StoreError> {
        let Some(old) = self.customer(customer_ref)? else {
            return Ok(());
        };
        if old.account_number.as_deref() == Some(account) {
            return Ok(());
        }
        let mut new = old.clone();
        new.account_number = Some(account.to_string());
        self.put_view_with_account(&old, &new)?;
        if let Some(mut base) = self.customer_base(customer_ref)? {
            base.account_number = Some(account.to_string());
            self.bases
                .insert(customer_ref, super::schema::encode(&base)?.as_slice())
                .map_err(StoreError::db)?;
        }
        Ok(())
    }
}

impl super::Store {
    /// The outcome feed cursor last applied, and the identity of its feed (0: none yet).
    pub fn outcome_cursor(&self) -> Result<(u64, u64), StoreError> {
        let tx = self.begin_read()?;
        let meta = tx.open_table(schema::META).map_err(StoreError::db)?;
        let get = |key: &str| -> Result<u64, StoreError> {
            Ok(meta
                .get(key)
                .map_err(StoreError::db)?
                .map_or(0, |g| g.value()))
        };
        Ok((get(OUTCOME_CURSOR)?, get(OUTCOME_FEED)?))
    }
}
