//! The uploader (P-job): sends pending operations to HQ in batches, in acceptance order, and
//! records what HQ staged. Transient failures are retried forever with backoff; a batch HQ
//! refuses outright is halved until the one operation it refuses is found and failed, so one
//! poison operation never blocks the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::retry::RetryPolicy;
use super::status::SyncStatus;
use crate::domain::operation::OpError;
use crate::domain::{OpState, Operation};
use crate::hq::client::{HqClient, HqError};
use crate::hq::wire::{StageStatus, WireOperation};
use crate::store::hq_sync::StageReport;
use crate::store::writer::{Command, WriteError};
use crate::store::{OpFilter, Store, StoreError, WriterHandle};

/// The uploader task's state.
pub struct Uploader {
    pub(crate) store: Store,
    pub(crate) writer: WriterHandle,
    pub(crate) client: HqClient,
    pub(crate) batch_size: usize,
    pub(crate) interval: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) status: Arc<SyncStatus>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) in_flight: super::realtime::InFlight,
    /// Told when HQ staged a batch, so the outcome puller reads the feed soon after.
    pub(crate) staged: Arc<Notify>,
}

enum Progress {
    /// Nothing (more) to send.
    Drained,
    /// A full batch went; more may be waiting.
    More,
}

#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error(transparent)]
    Hq(#[from] HqError),
    #[error("local store: {0}")]
    Local(String),
}

impl From<StoreError> for UploadError {
    fn from(e: StoreError) -> Self {
        UploadError::Local(e.to_string())
    }
}

impl From<WriteError> for UploadError {
    fn from(e: WriteError) -> Self {
        UploadError::Local(e.to_string())
    }
}

/// The wire form of an operation.
pub fn to_wire(op: &Operation) -> WireOperation {
    WireOperation {
        operation_id: op.id,
        revision: op.revision,
        seq: op.seq,
        customer_ref: op.customer_ref.clone(),
        kind: op.kind(),
        action: op.action(),
        record_id: op.record_id.clone(),
        payload: op.payload.clone(),
        accepted_at_ms: op.accepted_at_ms,
        base: op.base.clone(),
    }
}

impl Uploader {
    /// Runs until told to stop.
    pub async fn run(mut self) {
        let mut limit = self.batch_size;
        let mut delay = Duration::ZERO;
        let mut stop = self.stop.clone();
        while super::pause(delay, &self.wake, None, &mut stop)
            .await
            .is_some()
        {
            let result = tokio::select! {
                r = self.upload_once(limit) => r,
                _ = stop.changed() => return,
            };
            delay = match result {
                Ok(progress) => {
                    self.retry.reset();
                    limit = self.batch_size;
                    match progress {
                        Progress::More => Duration::ZERO,
                        Progress::Drained => self.interval,
                    }
                }
                Err(UploadError::Hq(HqError::Permanent { status, message })) => {
                    self.status
                        .upload_failed(format!("HQ refused the batch ({status}): {message}"), true);
                    if limit > 1 {
                        // Narrow down to the operation HQ refuses; the others go meanwhile.
                        limit = (limit / 2).max(1);
                        tracing::warn!(
                            status,
                            batch_limit = limit,
                            "HQ refused an upload batch; splitting it"
                        );
                        Duration::ZERO
                    } else {
                        match self.fail_head(status, message).await {
                            Ok(()) => Duration::ZERO,
                            Err(e) => self.retry_later(&e),
                        }
                    }
                }
                Err(e) => self.retry_later(&e),
            };
        }
    }

    fn retry_later(&mut self, e: &UploadError) -> Duration {
        let (retry_after, answered) = match e {
            UploadError::Hq(h) => (h.retry_after(), h.hq_answered()),
            UploadError::Local(_) => (None, true),
        };
        self.status.upload_failed(e.to_string(), answered);
        let delay = self.retry.next_delay(retry_after);
        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "upload failed; will retry");
        delay
    }

    async fn pending(&self, limit: usize) -> Result<Vec<Operation>, UploadError> {
        let store = self.store.clone();
        store
            .read(move |store| {
                store.operations(&OpFilter {
                    state: Some(OpState::Pending),
                    after_seq: None,
                    limit,
                })
            })
            .await
            .map_err(|e| UploadError::Local(e.to_string()))?
            .map_err(UploadError::from)
    }

    async fn upload_once(&mut self, limit: usize) -> Result<Progress, UploadError> {
        let mut ops = self.pending(limit).await?;
        let fetched = ops.len();
        // An operation in a real-time call is HQ's to answer now; it and any later operation
        // of its customer wait for the next round.
        let mut waiting: Vec<String> = Vec::new();
        ops.retain(|o| {
            if self.in_flight.contains(&o.id) || waiting.contains(&o.customer_ref) {
                waiting.push(o.customer_ref.clone());
                false
            } else {
                true
            }
        });
        if ops.is_empty() {
            return Ok(Progress::Drained);
        }
        let sent = ops.len();
        self.status.upload_attempt(sent as u64);
        let started = Instant::now();
        let response = self
            .client
            .upload(ops.iter().map(to_wire).collect())
            .await?;
        let latency_ms = started.elapsed().as_millis() as u64;
        let feed_id = response.feed_id;
        let reports: Vec<StageReport> = response
            .results
            .into_iter()
            .map(|r| StageReport {
                id: r.operation_id,
                revision: r.revision,
                refused: (r.status == StageStatus::Rejected).then(|| {
                    r.error.unwrap_or_else(|| OpError {
                        code: "rejected".into(),
                        message: "HQ refused the operation".into(),
                        field: None,
                    })
                }),
                feed_id,
            })
            .collect();
        let refused = reports.iter().filter(|r| r.refused.is_some()).count() as u64;
        let staged = reports.len() as u64 - refused;
        self.writer.execute(Command::MarkStaged(reports)).await?;
        self.status.upload_ok(staged, refused, latency_ms);
        if staged > 0 {
            self.staged.notify_one();
        }
        tracing::info!(
            sent,
            staged,
            refused,
            latency_ms,
            "upload batch staged at HQ"
        );
        Ok(if fetched == limit {
            Progress::More
        } else {
            Progress::Drained
        })
    }

    /// HQ refuses a batch of one: that operation is failed with HQ's message.
    async fn fail_head(&mut self, status: u16, message: String) -> Result<(), UploadError> {
        let Some(op) = self.pending(1).await?.into_iter().next() else {
            return Ok(());
        };
        tracing::warn!(operation_id = %op.id, status, "HQ refuses this operation; marking it failed");
        let report = StageReport {
            id: op.id,
            revision: op.revision,
            refused: Some(OpError {
                code: format!("hq_{status}"),
                message,
                field: None,
            }),
            feed_id: None,
        };
        self.writer
            .execute(Command::MarkStaged(vec![report]))
            .await?;
        Ok(())
    }
}
