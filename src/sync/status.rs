//! What the sync tasks last did, for diagnostics and metrics. Counters and timestamps only:
//! never customer data.

use std::sync::Mutex;

use serde::Serialize;

use crate::store::now_ms;

/// A point-in-time copy of the sync status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncSnapshot {
    /// When the uploader last tried to upload (Unix ms).
    pub last_upload_attempt_ms: Option<i64>,
    /// When an upload last succeeded (Unix ms).
    pub last_upload_success_ms: Option<i64>,
    /// The last upload error, in plain words.
    pub last_upload_error: Option<String>,
    /// When the outcome feed was last read successfully (Unix ms).
    pub last_outcome_pull_ms: Option<i64>,
    /// The last outcome-pull error.
    pub last_outcome_error: Option<String>,
    /// Whether HQ answered the last call.
    pub hq_reachable: Option<bool>,
    /// Round trip of the last successful HQ call, milliseconds.
    pub hq_latency_ms: Option<u64>,
    /// Upload batches HQ answered.
    pub upload_batches_ok: u64,
    /// Operations HQ staged.
    pub operations_uploaded: u64,
    /// Operations HQ refused at upload.
    pub operations_refused: u64,
    /// Failed attempts that will be retried.
    pub retries: u64,
    /// Operations sent in batches that failed and will be sent again.
    pub operations_retried: u64,
    /// Outcomes read from HQ's feed: operations HQ completed.
    pub outcomes_completed: u64,
    /// Outcomes read from HQ's feed: operations HQ's sync job failed.
    pub outcomes_failed: u64,
    /// Outcomes read from HQ's feed: operations HQ holds behind a failed one.
    pub outcomes_held: u64,
    /// Operations in the batch being sent (counted as retried if it fails).
    #[serde(skip)]
    pub batch_in_flight: u64,
    /// Failures since the last success.
    pub consecutive_failures: u64,
}

/// Shared, updated by the sync tasks, read by diagnostics.
#[derive(Debug, Default)]
pub struct SyncStatus {
    inner: Mutex<SyncSnapshot>,
}

impl SyncStatus {
    fn update(&self, f: impl FnOnce(&mut SyncSnapshot)) {
        // A poisoned lock only means another task panicked mid-update; the counters are
        // still worth reporting.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard);
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> SyncSnapshot {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// An upload of `operations` operations is about to be sent.
    pub fn upload_attempt(&self, operations: u64) {
        self.update(|s| {
            s.last_upload_attempt_ms = Some(now_ms());
            s.batch_in_flight = operations;
        });
    }

    /// HQ answered an upload.
    pub fn upload_ok(&self, staged: u64, refused: u64, latency_ms: u64) {
        self.update(|s| {
            s.last_upload_success_ms = Some(now_ms());
            s.upload_batches_ok += 1;
            s.operations_uploaded += staged;
            s.operations_refused += refused;
            s.hq_reachable = Some(true);
            s.hq_latency_ms = Some(latency_ms);
            s.consecutive_failures = 0;
            s.batch_in_flight = 0;
        });
    }

    /// An upload failed and will be retried.
    pub fn upload_failed(&self, error: String, hq_answered: bool) {
        self.update(|s| {
            s.last_upload_error = Some(error);
            s.retries += 1;
            s.operations_retried += s.batch_in_flight;
            s.batch_in_flight = 0;
            s.consecutive_failures += 1;
            s.hq_reachable = Some(hq_answered);
        });
    }

    /// The outcome feed was read.
    pub fn outcomes_ok(&self, latency_ms: u64) {
        self.update(|s| {
            s.last_outcome_pull_ms = Some(now_ms());
            s.hq_reachable = Some(true);
            s.hq_latency_ms = Some(latency_ms);
        });
    }

    /// A page of outcomes was applied.
    pub fn outcomes_applied(&self, completed: u64, failed: u64, held: u64) {
        self.update(|s| {
            s.outcomes_completed += completed;
            s.outcomes_failed += failed;
            s.outcomes_held += held;
        });
    }

    /// Reading the outcome feed failed.
    pub fn outcomes_failed(&self, error: String, hq_answered: bool) {
        self.update(|s| {
            s.last_outcome_error = Some(error);
            s.hq_reachable = Some(hq_answered);
        });
    }
}
