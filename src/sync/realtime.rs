//! Real-time mode: when asynchronous mode is not in force, a create or edit is sent to HQ at
//! once (an RTS call) and the till gets HQ's answer. The operation is made durable first, so a
//! node that dies mid-call, or a call whose answer is lost, falls back to the queue — and HQ,
//! which deduplicates by operation id across RTS and uploads, applies it once.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use super::cdx::copy_from_wire;
use super::outcomes::conflict_from_wire;
use crate::domain::mode::{Decision, Intent};
use crate::domain::operation::{Conflict, OpError};
use crate::domain::view::CustomerView;
use crate::domain::{OpState, Operation, OperationId};
use crate::hq::client::{HqClient, RtsOutcome};
use crate::store::writer::{Command, Submission, WriteError};
use crate::store::{Outcome, Store, WriterHandle, now_ms};

/// Most recent real-time calls kept for diagnostics.
const RECENT: usize = 50;

/// Operations whose real-time call is under way; the uploader leaves them alone until it ends.
#[derive(Debug, Default, Clone)]
pub struct InFlight(Arc<Mutex<HashSet<OperationId>>>);

impl InFlight {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<OperationId>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the operation's real-time call is under way.
    pub fn contains(&self, id: &OperationId) -> bool {
        self.set().contains(id)
    }

    /// How many real-time calls are under way.
    pub fn len(&self) -> usize {
        self.set().len()
    }

    /// Whether no real-time call is under way.
    pub fn is_empty(&self) -> bool {
        self.set().is_empty()
    }
}

/// One real-time call, for diagnostics (no customer data).
#[derive(Debug, Clone, Serialize)]
pub struct RealtimeCall {
    /// When (Unix ms).
    pub at_ms: i64,
    /// create or edit.
    pub intent: &'static str,
    /// Why real time: the mode decision's reason.
    pub reason: String,
    /// applied, refused, or fallback.
    pub result: &'static str,
    /// For a fallback: why HQ could not be used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// The operation.
    pub operation_id: String,
}

/// Counters of real-time calls.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RealtimeStats {
    /// Calls made.
    pub calls: u64,
    /// HQ applied the change.
    pub applied: u64,
    /// HQ refused the change.
    pub refused: u64,
    /// HQ could not be used; the change was queued.
    pub fallbacks: u64,
    /// The latest calls, newest last.
    pub recent: VecDeque<RealtimeCall>,
}

/// What became of a change sent in real time.
#[derive(Debug)]
pub enum RealtimeResult {
    /// HQ applied it; the customer as it now stands.
    Applied {
        /// The completed operation.
        op: Box<Operation>,
        /// The customer.
        view: Box<CustomerView>,
        /// Fields HQ kept its value for.
        conflicts: Vec<Conflict>,
    },
    /// HQ refused it; nothing was kept.
    Refused(OpError),
    /// HQ could not be reached: queued like an asynchronous change.
    Fallback {
        /// The queued operation.
        operation_id: OperationId,
        /// Its customer.
        customer_ref: String,
        /// The sub-record, if any.
        record_id: Option<String>,
        /// Its state (`pending`, or `held`).
        state: OpState,
        /// Why HQ could not be used.
        reason: String,
    },
}

/// Sends changes to HQ in real time and keeps count.
#[derive(Clone)]
pub struct Realtime {
    client: HqClient,
    writer: WriterHandle,
    store: Store,
    store_id: String,
    in_flight: InFlight,
    stats: Arc<Mutex<RealtimeStats>>,
}

impl Realtime {
    /// A real-time sender.
    pub fn new(
        client: HqClient,
        writer: WriterHandle,
        store: Store,
        store_id: String,
        in_flight: InFlight,
    ) -> Self {
        Realtime {
            client,
            writer,
            store,
            store_id,
            in_flight,
            stats: Arc::default(),
        }
    }

    /// Real-time calls under way now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Counters and the latest calls.
    pub fn stats(&self) -> RealtimeStats {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn count(
        &self,
        intent: Intent,
        decision: &Decision,
        result: &'static str,
        fallback: Option<String>,
        id: OperationId,
    ) {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.calls += 1;
        match result {
            "applied" => stats.applied += 1,
            "refused" => stats.refused += 1,
            _ => stats.fallbacks += 1,
        }
        if stats.recent.len() >= RECENT {
            stats.recent.pop_front();
        }
        stats.recent.push_back(RealtimeCall {
            at_ms: now_ms(),
            intent: match intent {
                Intent::Create => "create",
                Intent::Edit => "edit",
            },
            reason: decision.reason.clone(),
            result,
            fallback_reason: fallback,
            operation_id: id.to_string(),
        });
    }

    /// Makes the change durable, sends it to HQ now, and settles it by HQ's answer.
    pub async fn send(
        &self,
        intent: Intent,
        decision: &Decision,
        submission: Submission,
    ) -> Result<RealtimeResult, WriteError> {
        let id = OperationId::new_v7(now_ms() as u64);
        self.in_flight.set().insert(id);
        let result = self.send_in_flight(id, intent, decision, submission).await;
        self.in_flight.set().remove(&id);
        result
    }

    async fn send_in_flight(
        &self,
        id: OperationId,
        intent: Intent,
        decision: &Decision,
        submission: Submission,
    ) -> Result<RealtimeResult, WriteError> {
        let Outcome::Accepted {
            customer_ref,
            record_id,
            state,
            ..
        } = self
            .writer
            .execute(Command::SubmitAs(id, submission))
            .await?
        else {
            return Err(unexpected());
        };
        let store = self.store.clone();
        let op = store
            .read(move |store| store.operation(id))
            .await
            .map_err(|_| unexpected())?
            .map_err(|e| WriteError::Store(Arc::new(e)))?
            .ok_or_else(unexpected)?;
        match self.client.rts(super::uploader::to_wire(&op)).await {
            Ok(RtsOutcome::Applied(response)) => {
                let conflicts: Vec<Conflict> =
                    response.conflicts.iter().map(conflict_from_wire).collect();
                let copy = copy_from_wire(response.customer, &self.store_id, now_ms());
                let outcome = self
                    .writer
                    .execute(Command::CompleteRealtime {
                        id,
                        copy,
                        conflicts: conflicts.clone(),
                    })
                    .await?;
                self.count(intent, decision, "applied", None, id);
                tracing::info!(operation_id = %id, %customer_ref, "real-time call applied at HQ");
                match outcome {
                    Outcome::Realtime(op, view) => Ok(RealtimeResult::Applied {
                        op,
                        view,
                        conflicts,
                    }),
                    _ => Err(unexpected()),
                }
            }
            Ok(RtsOutcome::Refused(error)) => {
                self.writer.execute(Command::Discard { id }).await?;
                self.count(intent, decision, "refused", None, id);
                tracing::info!(operation_id = %id, %customer_ref, code = %error.code, "real-time call refused by HQ");
                Ok(RealtimeResult::Refused(error))
            }
            Err(e) => {
                let reason = format!(
                    "HQ could not be used ({e}); the change was queued and will be uploaded"
                );
                self.count(intent, decision, "fallback", Some(e.to_string()), id);
                tracing::warn!(operation_id = %id, %customer_ref, error = %e, "real-time call failed; queued instead");
                Ok(RealtimeResult::Fallback {
                    operation_id: id,
                    customer_ref,
                    record_id,
                    state,
                    reason,
                })
            }
        }
    }
}

fn unexpected() -> WriteError {
    WriteError::Store(Arc::new(crate::store::StoreError::Encoding(
        "unexpected writer outcome in a real-time call".into(),
    )))
}
