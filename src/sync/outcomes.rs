//! The outcome puller: reads HQ's outcome feed after the stored cursor and applies each page
//! atomically with the new cursor, so every outcome is applied exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::retry::RetryPolicy;
use super::status::SyncStatus;
use crate::domain::operation::OpError;
use crate::hq::client::HqClient;
use crate::hq::wire::{Outcome, OutcomeStatus};
use crate::store::hq_sync::{HqOutcome, HqVerdict};
use crate::store::writer::Command;
use crate::store::{Store, WriterHandle};

/// How often pruning runs.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Most operations pruned at once (one transaction).
const PRUNE_MAX: usize = 2_000;
/// After HQ stages a batch, the first re-read of a feed that had no full page; each further one
/// waits twice as long, up to the interval. HQ answers a batch some time after staging it, so
/// one read right after would often come too early, and reading at the interval alone lets a
/// backlog's outcomes fall a whole interval behind its uploads.
const FOLLOW_UP_FIRST: Duration = Duration::from_millis(20);

/// The outcome puller task's state.
pub struct OutcomePuller {
    pub(crate) store: Store,
    pub(crate) writer: WriterHandle,
    pub(crate) client: HqClient,
    pub(crate) page: usize,
    pub(crate) interval: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) retention: Duration,
    pub(crate) last_prune: Option<Instant>,
    pub(crate) status: Arc<SyncStatus>,
    pub(crate) wake: Arc<Notify>,
    /// Told when HQ staged an upload batch: idle, the puller reads the feed then instead of
    /// at the next interval (a retry delay is kept: HQ asked for it).
    pub(crate) staged: Arc<Notify>,
    pub(crate) stop: watch::Receiver<bool>,
}

/// The domain's form of a field conflict.
pub fn conflict_from_wire(
    c: &crate::hq::wire::FieldConflict,
) -> crate::domain::operation::Conflict {
    crate::domain::operation::Conflict {
        field: c.field.clone(),
        store_value: c.store_value.clone(),
        hq_value: c.hq_value.clone(),
    }
}

/// The store's form of one feed entry.
pub fn from_wire(o: Outcome) -> HqOutcome {
    let error = || {
        o.error.clone().unwrap_or_else(|| OpError {
            code: "unknown".into(),
            message: "HQ gave no reason".into(),
            field: None,
        })
    };
    let verdict = match o.status {
        OutcomeStatus::Completed => HqVerdict::Completed {
            account_number: o.account_number.clone(),
            conflicts: o.conflicts.iter().map(conflict_from_wire).collect(),
        },
        OutcomeStatus::Failed => HqVerdict::Failed(error()),
        OutcomeStatus::Held => HqVerdict::Held(error()),
    };
    HqOutcome {
        id: o.operation_id,
        revision: o.revision,
        verdict,
    }
}

impl OutcomePuller {
    /// Runs until told to stop.
    pub async fn run(mut self) {
        let mut delay = Duration::ZERO;
        let mut idle = false;
        // The next follow-up delay, while HQ may still be answering a staged batch.
        let mut follow_up: Option<Duration> = None;
        let mut stop = self.stop.clone();
        let staged = self.staged.clone();
        while let Some(resumed) =
            super::pause(delay, &self.wake, idle.then_some(&*staged), &mut stop).await
        {
            if resumed == super::Resumed::Also {
                follow_up = Some(FOLLOW_UP_FIRST);
            }
            let result = tokio::select! {
                r = self.pull_once() => r,
                _ = stop.changed() => return,
            };
            idle = matches!(result, Ok(false));
            delay = match result {
                Ok(true) => {
                    self.retry.reset();
                    Duration::ZERO
                }
                Ok(false) => {
                    self.retry.reset();
                    self.prune_if_due().await;
                    match follow_up {
                        Some(d) if d < self.interval => {
                            follow_up = Some(d * 2);
                            d
                        }
                        _ => {
                            follow_up = None;
                            self.interval
                        }
                    }
                }
                Err((message, retry_after, answered)) => {
                    self.status.outcomes_failed(message.clone(), answered);
                    let delay = self.retry.next_delay(retry_after);
                    tracing::warn!(error = %message, retry_in_ms = delay.as_millis() as u64, "outcome pull failed; will retry");
                    delay
                }
            };
        }
    }

    /// Drops confirmed operations past the retention window, at most once a minute and a
    /// bounded number at a time.
    async fn prune_if_due(&mut self) {
        if self.last_prune.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            return;
        }
        self.last_prune = Some(Instant::now());
        let cutoff = crate::store::now_ms() - self.retention.as_millis() as i64;
        let command = Command::Prune {
            confirmed_before_ms: cutoff,
            max: PRUNE_MAX,
        };
        match self.writer.execute(command).await {
            Ok(crate::store::Outcome::Synced(n)) if n > 0 => {
                tracing::info!(pruned = n, "confirmed operations past retention pruned");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning failed; will try again later"),
        }
    }

    /// Reads and applies one page. `Ok(true)` when a full page came (more may wait).
    async fn pull_once(&mut self) -> Result<bool, (String, Option<Duration>, bool)> {
        let local = |e: String| (e, None, true);
        let store = self.store.clone();
        let (cursor, feed) = store
            .read(move |store| store.outcome_cursor())
            .await
            .map_err(|e| local(e.to_string()))?
            .map_err(|e| local(e.to_string()))?;
        let started = Instant::now();
        let page = self
            .client
            .outcomes(cursor, self.page)
            .await
            .map_err(|e| (e.to_string(), e.retry_after(), e.hq_answered()))?;
        self.status
            .outcomes_ok(started.elapsed().as_millis() as u64);
        if feed != 0 && page.feed_id != feed {
            // HQ lost its history: our cursor means nothing in the new feed.
            let reset = Command::ResetFeed {
                feed_id: page.feed_id,
            };
            let moved = self
                .writer
                .execute(reset)
                .await
                .map_err(|e| local(e.to_string()))?;
            let moved = match moved {
                crate::store::Outcome::Synced(n) => n,
                _ => 0,
            };
            tracing::warn!(
                requeued = moved,
                "HQ's outcome feed is new (HQ lost its history); re-reading it and re-sending unanswered operations"
            );
            return Ok(true);
        }
        let count = page.outcomes.len();
        if count == 0 {
            if feed == 0 && page.feed_id != 0 {
                // Remember which feed the cursor belongs to, even before any outcome.
                let first = Command::ApplyOutcomes {
                    outcomes: Vec::new(),
                    next_cursor: cursor,
                    feed_id: page.feed_id,
                };
                self.writer
                    .execute(first)
                    .await
                    .map_err(|e| local(e.to_string()))?;
            }
            return Ok(false);
        }
        let tally = |status: OutcomeStatus| {
            page.outcomes.iter().filter(|o| o.status == status).count() as u64
        };
        let verdicts = [
            tally(OutcomeStatus::Completed),
            tally(OutcomeStatus::Failed),
            tally(OutcomeStatus::Held),
        ];
        let outcomes = page.outcomes.into_iter().map(from_wire).collect();
        self.writer
            .execute(Command::ApplyOutcomes {
                outcomes,
                next_cursor: page.next_cursor,
                feed_id: page.feed_id,
            })
            .await
            .map_err(|e| local(e.to_string()))?;
        let [completed, failed, held] = verdicts;
        self.status.outcomes_applied(completed, failed, held);
        tracing::info!(count, cursor = page.next_cursor, "HQ outcomes applied");
        Ok(count == self.page)
    }
}
