//! Queue statistics for diagnostics: depth by state and by record kind, and how long the oldest
//! pending operation has waited. One read snapshot; a scan of the queue, bounded by a cap.

use std::collections::{BTreeMap, HashMap};

use super::schema::{self, decode};
use super::{Store, StoreError};
use crate::domain::{OpState, Operation, RecordKind};

/// The queue at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Operations in each state (exact: counted from the state index).
    pub by_state: BTreeMap<OpState, u64>,
    /// Operations by record kind and state (exact when `complete`).
    pub by_kind: HashMap<(RecordKind, OpState), u64>,
    /// Since when the longest-waiting pending operation has been pending (Unix ms): its
    /// acceptance, or the re-sync that queued it again.
    pub oldest_pending_ms: Option<i64>,
    /// Operations read to count by kind.
    pub scanned: u64,
    /// False when the scan stopped at its cap: `by_kind` then counts only the first `scanned`
    /// operations (pending first, completed last).
    pub complete: bool,
}

/// States in scan order: what needs attention first, so a capped scan still covers it.
const SCAN_ORDER: [OpState; 5] = [
    OpState::Pending,
    OpState::Failed,
    OpState::Held,
    OpState::Uploaded,
    OpState::Completed,
];

impl Store {
    /// Counts the queue by state and by kind, reading at most `max_scan` operations.
    pub fn queue_stats(&self, max_scan: usize) -> Result<QueueStats, StoreError> {
        let tx = self.begin_read()?;
        let by_state = tx
            .open_table(schema::OPS_BY_STATE)
            .map_err(StoreError::db)?;
        let ops = tx.open_table(schema::OPS).map_err(StoreError::db)?;
        let mut stats = QueueStats {
            complete: true,
            ..QueueStats::default()
        };
        for state in SCAN_ORDER {
            let code = state.code();
            let mut n = 0u64;
            for entry in by_state
                .range((code, 0)..=(code, u64::MAX))
                .map_err(StoreError::db)?
            {
                let (key, _) = entry.map_err(StoreError::db)?;
                n += 1;
                if stats.scanned >= max_scan as u64 {
                    stats.complete = false;
                    continue;
                }
                let Some(bytes) = ops.get(key.value().1).map_err(StoreError::db)? else {
                    continue;
                };
                let op: Operation = decode(bytes.value())?;
                stats.scanned += 1;
                *stats.by_kind.entry((op.kind(), state)).or_default() += 1;
                if state == OpState::Pending {
                    stats.oldest_pending_ms = Some(
                        stats
                            .oldest_pending_ms
                            .map_or(op.updated_at_ms, |t| t.min(op.updated_at_ms)),
                    );
                }
            }
            stats.by_state.insert(state, n);
        }
        Ok(stats)
    }
}
