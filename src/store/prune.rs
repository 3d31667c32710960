//! Pruning: confirmed operations are dropped after the retention window, never before. What
//! they did is already folded into each customer's base when HQ confirmed them.

use redb::ReadableTable;

use super::StoreError;
use super::schema::{decode, encode};
use super::tables::Tables;
use super::writer::{Outcome, Refusable};
use crate::domain::view::CustomerView;
use crate::domain::{OpState, Operation, Payload};

impl Tables<'_> {
    pub(crate) fn prune(
        &mut self,
        confirmed_before_ms: i64,
        max: usize,
    ) -> Result<Refusable, StoreError> {
        let code = OpState::Completed.code();
        let mut doomed: Vec<Operation> = Vec::new();
        // Bound the scan too: confirmed operations are not in time order by sequence number.
        let scan_cap = max.saturating_mul(10);
        let mut scanned = 0usize;
        for entry in self
            .by_state
            .range((code, 0)..=(code, u64::MAX))
            .map_err(StoreError::db)?
        {
            scanned += 1;
            if doomed.len() >= max || scanned > scan_cap {
                break;
            }
            let (key, _) = entry.map_err(StoreError::db)?;
            if let Some(bytes) = self.ops.get(key.value().1).map_err(StoreError::db)? {
                let op: Operation = decode(bytes.value())?;
                if op.updated_at_ms < confirmed_before_ms {
                    doomed.push(op);
                }
            }
        }
        for op in &doomed {
            self.keep_created_view(op)?;
            self.ops.remove(op.seq).map_err(StoreError::db)?;
            self.op_ids
                .remove(op.id.as_u128())
                .map_err(StoreError::db)?;
            self.by_state
                .remove((code, op.seq))
                .map_err(StoreError::db)?;
            self.customer_ops
                .remove((op.customer_ref.as_str(), op.seq))
                .map_err(StoreError::db)?;
        }
        Ok(Ok(Outcome::Synced(doomed.len())))
    }

    /// Before `op` goes: if it is the create of a customer with no view record, whose view it
    /// is (`store::views`), writes the record.
    fn keep_created_view(&mut self, op: &Operation) -> Result<(), StoreError> {
        let key = op.customer_ref.as_str();
        if !matches!(op.payload, Payload::CustomerCreate(_))
            || self.customers.get(key).map_err(StoreError::db)?.is_some()
        {
            return Ok(());
        }
        if let Some(view) = CustomerView::created_by(op) {
            self.customers
                .insert(key, encode(&view)?.as_slice())
                .map_err(StoreError::db)?;
        }
        Ok(())
    }
}
