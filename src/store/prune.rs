//! Pruning: confirmed operations are dropped after the retention window, never before, and
//! only as a prefix of each customer's operations (what HQ confirmed in order). What they did is
//! kept in the customer's base, so a later rebuild of the view loses nothing.

use redb::ReadableTable;

use super::StoreError;
use super::schema::encode;
use super::tables::Tables;
use super::writer::{Outcome, Refusable};
use crate::domain::OpState;
use crate::domain::view::CustomerView;

impl Tables<'_> {
    pub(crate) fn prune(
        &mut self,
        confirmed_before_ms: i64,
        max: usize,
    ) -> Result<Refusable, StoreError> {
        // Candidates: confirmed operations, oldest first.
        let mut customers: Vec<String> = Vec::new();
        let code = OpState::Completed.code();
        for entry in self
            .by_state
            .range((code, 0)..=(code, u64::MAX))
            .map_err(StoreError::db)?
        {
            let (key, _) = entry.map_err(StoreError::db)?;
            let seq = key.value().1;
            if let Some(bytes) = self.ops.get(seq).map_err(StoreError::db)? {
                let op: crate::domain::Operation = super::schema::decode(bytes.value())?;
                if op.updated_at_ms < confirmed_before_ms && !customers.contains(&op.customer_ref) {
                    customers.push(op.customer_ref);
                }
            }
            if customers.len() >= max {
                break;
            }
        }
        let mut dropped = 0;
        for customer_ref in customers {
            if dropped >= max {
                break;
            }
            let mut base = self.customer_base(&customer_ref)?;
            let mut changed = false;
            for op in self.customer_operations(&customer_ref)? {
                let prunable =
                    op.state == OpState::Completed && op.updated_at_ms < confirmed_before_ms;
                if !prunable || dropped >= max {
                    break;
                }
                match base.as_mut() {
                    Some(view) => {
                        // A fold error here means the operation never applied; keep going so
                        // one odd record cannot stop housekeeping.
                        let _ = view.apply(&op);
                    }
                    None => base = CustomerView::created_by(&op),
                }
                self.ops.remove(op.seq).map_err(StoreError::db)?;
                self.op_ids
                    .remove(op.id.as_u128())
                    .map_err(StoreError::db)?;
                self.by_state
                    .remove((code, op.seq))
                    .map_err(StoreError::db)?;
                self.customer_ops
                    .remove((customer_ref.as_str(), op.seq))
                    .map_err(StoreError::db)?;
                dropped += 1;
                changed = true;
            }
            if changed && let Some(mut view) = base {
                // The base carries what HQ knows that the operations do not.
                if let Some(current) = self.customer(&customer_ref)? {
                    view.account_number = current.account_number;
                }
                self.bases
                    .insert(customer_ref.as_str(), encode(&view)?.as_slice())
                    .map_err(StoreError::db)?;
            }
        }
        Ok(Ok(Outcome::Synced(dropped)))
    }
}
