//! How a till's write goes: queued (asynchronous mode) or sent to HQ now (real-time mode), as
//! the configuration held decides, and answered accordingly.

use axum::Json;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use crate::domain::OpState;
use crate::domain::mode::{Decision, Intent, Mode, decide};
use crate::domain::operation::Conflict;
use crate::domain::view::SyncState;
use crate::store::writer::Command;
use crate::store::{Outcome, Submission};
use crate::sync::realtime::RealtimeResult;

/// How a write went to HQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Queued at the node (asynchronous mode).
    Async,
    /// Applied at HQ now (real-time mode).
    Realtime,
    /// Real-time mode, but HQ could not be reached: queued instead.
    AsyncFallback,
}

/// The answer to a till's write. For `async` and `async_fallback` the operation is durable at
/// the node (202); for `realtime` HQ applied it (201 for a create, 200 for an edit).
#[derive(Debug, Serialize, Deserialize)]
pub struct WriteAnswer {
    /// The operation.
    pub operation_id: String,
    /// The customer's reference at this node.
    pub customer_ref: String,
    /// The sub-record created or edited, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    /// `pending`, `held` (behind a failed operation) or `completed` (real time).
    pub state: OpState,
    /// How the write went.
    pub mode: WriteMode,
    /// Why that mode, naming the configuration held.
    pub mode_reason: String,
    /// For a fallback: why HQ could not be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// HQ's account number, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_number: Option<String>,
    /// Fields HQ kept its own value for (real-time edits of data changed at HQ too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
}

fn internal() -> ApiError {
    ApiError::plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "unexpected writer outcome",
    )
}

/// Decides the mode from what is held and carries the write out.
pub async fn write(
    app: &AppState,
    intent: Intent,
    submission: Submission,
) -> Result<(StatusCode, Json<WriteAnswer>), ApiError> {
    let store = app.store.clone();
    let key = match &submission {
        Submission::Change { customer, .. } => Some(customer.clone()),
        Submission::NewCustomer(_) => None,
    };
    let (held, customer) = match (store.held_config_cached(), key) {
        // A create with the configuration in memory reads nothing from the store.
        (Some(held), None) => (held, None),
        (_, key) => store
            .read(move |store| {
                let held = store.held_config()?;
                let customer = match key {
                    Some(k) => store.customer(&k)?,
                    None => None,
                };
                Ok::<_, crate::store::StoreError>((held, customer))
            })
            .await
            .map_err(|_| internal())??,
    };
    let mut decision = decide(&held, intent);
    if let Submission::Change { customer: key, .. } = &submission {
        let Some(customer) = customer else {
            return Err(ApiError::not_found(
                "customer_ref",
                format!("no customer {key}"),
            ));
        };
        let unconfirmed =
            customer.view.account_number.is_none() || customer.sync_state != SyncState::Synced;
        if decision.mode == Mode::RealTime && unconfirmed {
            // HQ cannot apply an edit before the changes queued ahead of it.
            decision = Decision {
                mode: Mode::Async,
                reason: "earlier changes to this customer are not confirmed by HQ yet: queued \\
                         behind them to keep their order"
                    .into(),
            };
        }
    }
    match decision.mode {
        Mode::Async => {
            let Outcome::Accepted {
                operation_id,
                customer_ref,
                record_id,
                state,
            } = app.writer.execute(Command::Submit(submission)).await?
            else {
                return Err(internal());
            };
            tracing::info!(%operation_id, %customer_ref, state = state.as_str(), "change queued");
            Ok((
                StatusCode::ACCEPTED,
                Json(WriteAnswer {
                    operation_id: operation_id.to_string(),
                    customer_ref,
                    record_id,
                    state,
                    mode: WriteMode::Async,
                    mode_reason: decision.reason,
                    fallback_reason: None,
                    account_number: None,
                    conflicts: Vec::new(),
                }),
            ))
        }
        Mode::RealTime => match app.realtime.send(intent, &decision, submission).await? {
            RealtimeResult::Applied {
                op,
                view,
                conflicts,
            } => {
                let status = match intent {
                    Intent::Create => StatusCode::CREATED,
                    Intent::Edit => StatusCode::OK,
                };
                Ok((
                    status,
                    Json(WriteAnswer {
                        operation_id: op.id.to_string(),
                        customer_ref: view.customer_ref.clone(),
                        record_id: op.record_id.clone(),
                        state: op.state,
                        mode: WriteMode::Realtime,
                        mode_reason: decision.reason,
                        fallback_reason: None,
                        account_number: view.account_number.clone(),
                        conflicts,
                    }),
                ))
            }
            RealtimeResult::Refused(error) => {
                let field = error.field.clone().unwrap_or_else(|| "body".into());
                Err(ApiError::field(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "hq_refused",
                    field,
                    "hq_validation",
                    format!("HQ refused the change: {}", error.message),
                ))
            }
            RealtimeResult::Fallback {
                operation_id,
                customer_ref,
                record_id,
                state,
                reason,
            } => Ok((
                StatusCode::ACCEPTED,
                Json(WriteAnswer {
                    operation_id: operation_id.to_string(),
                    customer_ref,
                    record_id,
                    state,
                    mode: WriteMode::AsyncFallback,
                    mode_reason: decision.reason,
                    fallback_reason: Some(reason),
                    account_number: None,
                    conflicts: Vec::new(),
                }),
            )),
        },
    }
}
