//! The emulator's HTTP surface: the node endpoints (behind fault injection) and the admin
//! endpoints (never faulted). Errors are JSON [`HqErrorBody`]s.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::Shared;
use super::faults::{Faults, Gate};
use super::state::StageError;
use crate::hq::wire::{
    DEFAULT_OUTCOME_LIMIT, HealthResponse, HqErrorBody, MAX_OUTCOME_LIMIT, MAX_UPLOAD_BYTES,
    MAX_UPLOAD_OPERATIONS, StageStatus, UploadRequest,
};

type AppState = Arc<Shared>;

/// All routes: node endpoints behind the fault gate, admin endpoints beside them.
pub(crate) fn router(shared: AppState) -> Router {
    let node = Router::new()
        .route("/hq/v1/health", get(health))
        .route("/hq/v1/uploads", post(upload))
        .route("/hq/v1/outcomes", get(outcomes))
        .route_layer(middleware::from_fn_with_state(shared.clone(), fault_gate));
    let admin = Router::new()
        .route("/hq/v1/admin/customers", get(admin_customers))
        .route("/hq/v1/admin/tables", get(admin_tables))
        .route("/hq/v1/admin/jobs/sync-customers/run", post(admin_run_sync))
        .route(
            "/hq/v1/admin/faults",
            get(admin_get_faults).put(admin_put_faults),
        );
    node.merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .with_state(shared)
}

/// A JSON error answer.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = HqErrorBody {
        error: code.to_string(),
        message: message.into(),
    };
    (status, Json(body)).into_response()
}

fn bad_json(rejection: JsonRejection) -> Response {
    // Keep axum's status (400, 413, 415, 422) so a too-large body reads as such.
    let status = match rejection.status() {
        StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
        other => other,
    };
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too_large"
    } else {
        "malformed_body"
    };
    error(status, code, rejection.body_text())
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such HQ endpoint")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this HQ endpoint does not take that method",
    )
}

/// Applies the faults in force to a node request: latency, then offline, throttling and
/// errors before any processing, then (after the work is done) a lost response.
async fn fault_gate(State(shared): State<AppState>, request: Request, next: Next) -> Response {
    let at = std::time::Instant::now();
    let path = request.uri().path().to_string();
    let response = gated(&shared, request, next).await;
    shared.log_request(super::RequestRecord {
        at,
        path,
        status: response.status().as_u16(),
    });
    response
}

async fn gated(shared: &AppState, request: Request, next: Next) -> Response {
    let plan = shared.faults.plan();
    if let Some(delay) = plan.latency {
        tokio::time::sleep(delay).await;
    }
    match plan.gate {
        Gate::Pass => {}
        Gate::Offline => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "offline",
                "HQ is offline (fault injection)",
            );
        }
        Gate::Throttle(seconds) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                format!("HQ is throttling; retry after {seconds} s (fault injection)"),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            return response;
        }
        Gate::Error => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "HQ failed before processing the request (fault injection)",
            );
        }
    }
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    if plan.drop_response {
        tracing::info!(%path, status = response.status().as_u16(), "hq response dropped after the work was done (fault injection)");
        return lost_response();
    }
    response
}

/// A response whose body fails at once: hyper aborts the connection, so the client sees a
/// transport error although HQ committed the work.
fn lost_response() -> Response {
    let failing = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "response dropped by fault injection",
        ))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(failing),
    )
        .into_response()
}

async fn health() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
    })
}

/// `POST /hq/v1/uploads`: stages a batch, idempotently by operation id.
async fn upload(
    State(shared): State<AppState>,
    body: Result<Json<UploadRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(req)) => req,
        Err(rejection) => return bad_json(rejection),
    };
    if req.store_id.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            "store_id must not be empty",
        );
    }
    if req.channel_id.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            "channel_id must not be empty",
        );
    }
    if req.operations.len() > MAX_UPLOAD_OPERATIONS {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a batch holds at most {MAX_UPLOAD_OPERATIONS} operations"),
        );
    }
    let result = shared.model().stage(&req);
    match result {
        Ok(response) => {
            let rejected = response
                .results
                .iter()
                .filter(|r| r.status == StageStatus::Rejected)
                .count();
            // Ids and counts only: payloads carry customer PII.
            tracing::info!(
                store_id = %req.store_id,
                batch_id = %req.batch_id,
                operations = req.operations.len(),
                rejected,
                "hq upload staged"
            );
            Json(response).into_response()
        }
        Err(StageError::Full(message)) => {
            tracing::warn!(store_id = %req.store_id, batch_id = %req.batch_id, "hq upload refused: full");
            error(StatusCode::INSUFFICIENT_STORAGE, "full", message)
        }
    }
}

/// Query of `GET /hq/v1/outcomes`.
#[derive(Debug, Deserialize)]
struct OutcomesQuery {
    store_id: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

/// `GET /hq/v1/outcomes?store_id=…&after=…&limit=…`.
async fn outcomes(
    State(shared): State<AppState>,
    query: Result<Query<OutcomesQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                rejection.body_text(),
            );
        }
    };
    let Some(store_id) = q.store_id.filter(|s| !s.trim().is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "store_id is required",
        );
    };
    let limit = q.limit.unwrap_or(DEFAULT_OUTCOME_LIMIT);
    if limit == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "limit must be at least 1",
        );
    }
    let page = shared.model().outcomes(
        &store_id,
        q.after.unwrap_or(0),
        limit.min(MAX_OUTCOME_LIMIT),
    );
    Json(page).into_response()
}

async fn admin_customers(State(shared): State<AppState>) -> Response {
    let customers = shared.model().customers();
    Json(customers).into_response()
}

async fn admin_tables(State(shared): State<AppState>) -> Response {
    let tables = shared.model().tables();
    Json(tables).into_response()
}

async fn admin_run_sync(State(shared): State<AppState>) -> Response {
    Json(shared.run_sync()).into_response()
}

async fn admin_get_faults(State(shared): State<AppState>) -> Json<Faults> {
    Json(shared.faults.get())
}

async fn admin_put_faults(
    State(shared): State<AppState>,
    body: Result<Json<Faults>, JsonRejection>,
) -> Response {
    let faults = match body {
        Ok(Json(faults)) => faults,
        Err(rejection) => return bad_json(rejection),
    };
    if let Err(e) = faults.validate() {
        return error(StatusCode::BAD_REQUEST, "invalid_fault", e.to_string());
    }
    tracing::info!(
        offline = faults.offline,
        error_rate = ?faults.error_rate,
        drop_response_rate = ?faults.drop_response_rate,
        latency_ms = ?faults.latency_ms,
        throttle_retry_after_s = ?faults.throttle_retry_after_s,
        reject_field = ?faults.reject.as_ref().map(|r| r.field.as_str()),
        "hq faults set"
    );
    shared.faults.set(faults.clone());
    Json(faults).into_response()
}
