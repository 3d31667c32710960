//! Sync status: list operations by state, show one with its HQ error, edit a failed one, and
//! queue it again.

use super::{ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::json::JsonValue;
use crate::domain::operation::OpError;
use crate::domain::rfc3339;
use crate::domain::{OpState, Operation, OperationId};
use crate::store::writer::Command;
use crate::store::{OpFilter, Outcome};

/// An operation as the sync-status page shows it.
#[derive(Serialize)]
pub struct OperationBody<'a> {
    /// Its id.
    pub operation_id: String,
    /// Acceptance order at this node (the paging cursor).
    pub seq: u64,
    /// The customer's temporary reference.
    pub customer_ref: &'a str,
    /// Record kind: customer, address, contact, affiliation, attribute.
    pub kind: &'static str,
    /// The HQ table the record is staged in.
    pub hq_table: &'static str,
    /// create or edit.
    pub action: crate::domain::Action,
    /// The sub-record, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_id: Option<&'a str>,
    /// pending, uploaded, completed, failed or held.
    pub state: OpState,
    /// HQ's error, or why it is held.
    pub error: Option<&'a OpError>,
    /// Fields HQ kept its own value for (an edit of data HQ had changed too).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub conflicts: &'a [crate::domain::operation::Conflict],
    /// Payload revision (bumped by each edit and save).
    pub revision: u32,
    /// When the node accepted it.
    pub accepted_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// The record, in the shape the till sent it (single-operation reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

impl<'a> OperationBody<'a> {
    /// The body of `op`, with its payload when `with_payload`.
    pub fn new(op: &'a Operation, with_payload: bool) -> Self {
        OperationBody {
            operation_id: op.id.to_string(),
            seq: op.seq,
            customer_ref: &op.customer_ref,
            kind: op.kind().as_str(),
            hq_table: op.kind().hq_table(),
            action: op.action(),
            record_id: op.record_id.as_deref(),
            state: op.state,
            error: op.error.as_ref(),
            conflicts: &op.conflicts,
            revision: op.revision,
            accepted_at: rfc3339(op.accepted_at_ms),
            updated_at: rfc3339(op.updated_at_ms),
            payload: with_payload.then(|| op.payload.record_json()),
        }
    }
}

/// Query of the operation listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

fn blocking_err(_: tokio::task::JoinError) -> ApiError {
    ApiError::plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "read task failed",
    )
}

/// `GET /v1/sync/operations?state=…&after=…&limit=…`
pub async fn list(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let state = match query.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<OpState>().map_err(|_| {
            ApiError::bad_param(
                "state",
                "enum",
                "must be one of pending, uploaded, completed, failed, held",
            )
        })?),
    };
    let after_seq = match query.after.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            ApiError::bad_param(
                "after",
                "integer",
                "must be the seq of the last operation of the previous page",
            )
        })?),
    };
    let limit = super::parse_limit(query.limit.as_deref(), 100, app.limits.max_page)?;
    let store = app.store.clone();
    let ops = store
        .read(move |store| {
            store.operations(&OpFilter {
                state,
                after_seq,
                limit,
            })
        })
        .await
        .map_err(blocking_err)??;
    let next_after = (ops.len() == limit)
        .then(|| ops.last().map(|o| o.seq))
        .flatten();
    let bodies: Vec<OperationBody<'_>> = ops.iter().map(|o| OperationBody::new(o, false)).collect();
    Ok(Json(
        serde_json::json!({ "operations": bodies, "next_after": next_after }),
    ))
}

fn parse_id(id: &str) -> Result<OperationId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::bad_param("operation_id", "uuid", "must be an operation id (a UUID)")
    })
}

/// `GET /v1/sync/operations/{id}`
pub async fn show(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&id)?;
    let store = app.store.clone();
    let op = store
        .read(move |store| store.operation(id))
        .await
        .map_err(blocking_err)??
        .ok_or_else(|| ApiError::not_found("operation_id", format!("no operation {id}")))?;
    Ok(Json(
        serde_json::to_value(OperationBody::new(&op, true)).unwrap_or_default(),
    ))
}

/// `PUT /v1/sync/operations/{id}` with `{"payload": {...}}`: edit and save a failed operation.
pub async fn update(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    JsonValue(body): JsonValue,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&id)?;
    let serde_json::Value::Object(mut body) = body else {
        return Err(ApiError::bad_param("body", "type", "must be a JSON object"));
    };
    let record = body.remove("payload").ok_or_else(|| {
        ApiError::invalid(crate::domain::FieldError::new(
            "payload",
            "required",
            "give the edited record under payload",
        ))
    })?;
    if let Some(extra) = body.keys().next() {
        // An empty key is named by where it is: the body (a refusal never names field "").
        let field = if extra.is_empty() {
            "body".to_string()
        } else {
            extra.clone()
        };
        return Err(ApiError::invalid(crate::domain::FieldError::new(
            field,
            "unknown_field",
            "only payload can be given",
        )));
    }
    if !record.is_object() {
        return Err(ApiError::invalid(crate::domain::FieldError::new(
            "payload",
            "type",
            "must be a JSON object",
        )));
    }
    let outcome = app
        .writer
        .execute(Command::EditPayload { id, record })
        .await?;
    updated(outcome, "operation payload edited")
}

/// `POST /v1/sync/operations/{id}/sync`: queue a failed operation again.
pub async fn resync(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&id)?;
    let outcome = app.writer.execute(Command::Resync { id }).await?;
    // The operator wants it at HQ now, not at the next interval.
    app.sync.sync_now();
    updated(outcome, "operation queued again")
}

fn updated(outcome: Outcome, what: &'static str) -> Result<Json<serde_json::Value>, ApiError> {
    match outcome {
        Outcome::Updated(op) => {
            tracing::info!(operation_id = %op.id, customer_ref = %op.customer_ref, revision = op.revision, "{what}");
            Ok(Json(
                serde_json::to_value(OperationBody::new(&op, true)).unwrap_or_default(),
            ))
        }
        Outcome::Accepted { .. } | Outcome::Synced(_) | Outcome::Realtime(..) => {
            Err(ApiError::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "unexpected writer outcome",
            ))
        }
    }
}

/// `POST /v1/sync/upload`: upload pending operations and read HQ's outcomes now.
pub async fn upload_now(State(app): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    app.sync.sync_now();
    tracing::info!("upload requested by an operator");
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "status": "upload requested" })),
    )
}

/// `POST /v1/sync/operations/resync-failed`: queue every failed operation again (and release
/// the operations held behind each), at most `limits.max_page` per call; the answer says how
/// many were queued, which were skipped and why, and how many are still failed.
pub async fn resync_failed(
    State(app): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = app.store.clone();
    let limit = app.limits.max_page;
    let failed = store
        .read(move |store| {
            store.operations(&OpFilter {
                state: Some(OpState::Failed),
                after_seq: None,
                limit,
            })
        })
        .await
        .map_err(blocking_err)??;
    // Sent together so the writer commits them in a few group commits, not one by one.
    let results = futures_util::future::join_all(
        failed
            .iter()
            .map(|op| app.writer.execute(Command::Resync { id: op.id })),
    )
    .await;
    let mut resynced = 0u64;
    let mut skipped = Vec::new();
    let mut store_error = None;
    for (op, result) in failed.iter().zip(results) {
        match result {
            Ok(_) => resynced += 1,
            // Another operator got there first (it is no longer failed): not an error.
            Err(crate::store::writer::WriteError::Command(e)) => skipped.push(serde_json::json!({
                "operation_id": op.id.to_string(),
                "reason": e.to_string(),
            })),
            Err(e) => store_error = Some(e),
        }
    }
    tracing::info!(
        resynced,
        skipped = skipped.len(),
        "failed operations queued again by an operator"
    );
    if let Some(e) = store_error {
        return Err(e.into());
    }
    let store = app.store.clone();
    let remaining = store
        .read(move |store| store.operation_counts())
        .await
        .map_err(blocking_err)??
        .into_iter()
        .find(|(state, _)| *state == OpState::Failed)
        .map_or(0, |(_, n)| n);
    if resynced > 0 {
        // The operator wants them at HQ now, not at the next interval.
        app.sync.sync_now();
    }
    Ok(Json(serde_json::json!({
        "resynced": resynced,
        "skipped": skipped,
        "remaining_failed": remaining,
    })))
}
