//! The emulator's HTTP surface: the node endpoints (behind fault injection) and the admin
//! endpoints (never faulted). Errors are JSON [`HqErrorBody`]s.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use serde::Deserialize;

use super::Shared;
use super::config::{ChannelError, ChannelSettingsRequest, FeatureRequest};
use super::faults::{Faults, Gate};
use super::state::{AdminError, RtsError, StageError};
use crate::domain::features::FeatureId;
use crate::domain::{Action, CustomerPatch, NewCustomer};
use crate::hq::wire::{
    DEFAULT_CUSTOMERS_LIMIT, DEFAULT_OUTCOME_LIMIT, HealthResponse, HqErrorBody,
    MAX_CUSTOMERS_LIMIT, MAX_OUTCOME_LIMIT, MAX_UPLOAD_BYTES, MAX_UPLOAD_OPERATIONS,
    MissingPrerequisites, RefusalBody, RtsRequest, StageStatus, UploadRequest, jobs,
};

type AppState = Arc<Shared>;

/// All routes: node endpoints behind the fault gate, admin endpoints beside them.
pub(crate) fn router(shared: AppState) -> Router {
    let node = Router::new()
        .route("/hq/v1/health", get(health))
        .route("/hq/v1/uploads", post(upload))
        .route("/hq/v1/outcomes", get(outcomes))
        .route("/hq/v1/cdx/{job}", get(cdx))
        .route("/hq/v1/rts/operations", post(rts))
        .route_layer(middleware::from_fn_with_state(shared.clone(), fault_gate));
    let admin = Router::new()
        .route(
            "/hq/v1/admin/customers",
            get(admin_customers).post(admin_create_customer),
        )
        .route(
            "/hq/v1/admin/customers/{account_number}",
            patch(admin_patch_customer),
        )
        .route("/hq/v1/admin/features", get(admin_features))
        .route("/hq/v1/admin/features/{id}", put(admin_put_feature))
        .route("/hq/v1/admin/channel", put(admin_put_channel))
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

/// A 422 refusal naming the field at fault.
fn refusal(e: crate::domain::operation::OpError) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(RefusalBody::from(e))).into_response()
}

fn bad_query(rejection: QueryRejection) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
        rejection.body_text(),
    )
}

/// Milliseconds since the Unix epoch: the stamp on CDX packages.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
    let store = request
        .headers()
        .get(crate::hq::wire::STORE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let response = gated(&shared, request, next).await;
    shared.log_request(super::RequestRecord {
        at,
        path,
        status: response.status().as_u16(),
        store,
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

/// Query of `GET /hq/v1/cdx/{job}` (each job reads the parameters it needs).
#[derive(Debug, Deserialize)]
struct CdxQuery {
    channel_id: Option<String>,
    after_version: Option<u64>,
    after_account: Option<String>,
    limit: Option<usize>,
}

/// `GET /hq/v1/cdx/{job}`: the data package of CDX download job 1110, 1070 or 1010.
async fn cdx(
    State(shared): State<AppState>,
    Path(job): Path<String>,
    query: Result<Query<CdxQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(rejection) => return bad_query(rejection),
    };
    match job.parse::<u32>() {
        Ok(jobs::GLOBAL) => Json(shared.config().global_package(now_ms())).into_response(),
        Ok(jobs::CHANNEL) => {
            let Some(channel_id) = q.channel_id.filter(|c| !c.trim().is_empty()) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    "channel_id is required",
                );
            };
            Json(shared.config().channel_package(&channel_id, now_ms())).into_response()
        }
        Ok(jobs::CUSTOMERS) => {
            let limit = q.limit.unwrap_or(DEFAULT_CUSTOMERS_LIMIT);
            if limit == 0 {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    "limit must be at least 1",
                );
            }
            let page = shared.model().customers_page(
                q.after_version.unwrap_or(0),
                q.after_account.as_deref(),
                limit.min(MAX_CUSTOMERS_LIMIT),
                now_ms(),
            );
            tracing::debug!(
                customers = page.customers.len(),
                version = page.version,
                full = page.full,
                "hq cdx 1010 page served"
            );
            Json(page).into_response()
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no CDX job {job} (known: {}, {}, {})",
                jobs::CUSTOMERS,
                jobs::CHANNEL,
                jobs::GLOBAL
            ),
        ),
    }
}

/// `POST /hq/v1/rts/operations`: a real-time call, applied now, idempotent by operation id.
async fn rts(
    State(shared): State<AppState>,
    body: Result<Json<RtsRequest>, JsonRejection>,
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
    let reject = shared.faults.reject_rule();
    let result = shared.model().real_time(&req, reject.as_ref());
    let op = &req.operation;
    match result {
        Ok(answer) => {
            // Ids and counts only: payloads carry customer PII.
            tracing::info!(
                store_id = %req.store_id,
                operation_id = %op.operation_id,
                kind = op.kind.as_str(),
                account_number = %answer.account_number,
                conflicts = answer.conflicts.len(),
                "hq real-time call applied"
            );
            let status = if op.action == Action::Create {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(answer)).into_response()
        }
        Err(RtsError::Refused(e)) => {
            tracing::info!(
                store_id = %req.store_id,
                operation_id = %op.operation_id,
                code = %e.code,
                field = ?e.field,
                "hq real-time call refused"
            );
            refusal(e)
        }
        Err(RtsError::Full(message)) => {
            tracing::warn!(store_id = %req.store_id, operation_id = %op.operation_id, "hq real-time call refused: full");
            error(StatusCode::INSUFFICIENT_STORAGE, "full", message)
        }
    }
}

/// `GET /hq/v1/admin/features`: feature management, every feature.
async fn admin_features(State(shared): State<AppState>) -> Response {
    Json(shared.config().features()).into_response()
}

/// `PUT /hq/v1/admin/features/{id}` with `{"enabled": bool}`.
async fn admin_put_feature(
    State(shared): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<FeatureRequest>, JsonRejection>,
) -> Response {
    let Ok(feature) = id.parse::<FeatureId>() else {
        let known: Vec<&str> = FeatureId::ALL.iter().map(|f| f.as_str()).collect();
        return error(
            StatusCode::NOT_FOUND,
            "unknown_feature",
            format!("no feature {id} (known: {})", known.join(", ")),
        );
    };
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return bad_json(rejection),
    };
    let result = shared.config().set_feature(feature, request.enabled);
    match result {
        Ok(change) => {
            tracing::info!(
                feature = %feature,
                enabled = change.enabled,
                in_force = change.in_force,
                version = change.version,
                "hq feature set"
            );
            Json(change).into_response()
        }
        Err(missing) => {
            let missing_names: Vec<String> = missing.iter().map(|f| f.name().to_string()).collect();
            let message = format!(
                "\"{}\" needs these features on first: {}",
                feature.name(),
                missing_names
                    .iter()
                    .map(|n| format!("\"{n}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            tracing::info!(feature = %feature, missing = missing.len(), "hq feature refused: prerequisites off");
            let body = MissingPrerequisites {
                error: "prerequisites_off".into(),
                missing,
                missing_names,
                message,
            };
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
    }
}

/// Query of `PUT /hq/v1/admin/channel`.
#[derive(Debug, Deserialize)]
struct ChannelQuery {
    channel_id: Option<String>,
}

/// `PUT /hq/v1/admin/channel[?channel_id=CH]` with `{"create_customer_async": bool}`.
async fn admin_put_channel(
    State(shared): State<AppState>,
    query: Result<Query<ChannelQuery>, QueryRejection>,
    body: Result<Json<ChannelSettingsRequest>, JsonRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(rejection) => return bad_query(rejection),
    };
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return bad_json(rejection),
    };
    let result = shared
        .config()
        .set_channel(q.channel_id.as_deref(), request.create_customer_async);
    match result {
        Ok(change) => {
            tracing::info!(
                channel_id = ?change.channel_id,
                create_customer_async = change.create_customer_async,
                version = change.version,
                "hq channel settings set"
            );
            Json(change).into_response()
        }
        Err(e @ ChannelError::InvalidId) => {
            error(StatusCode::BAD_REQUEST, "invalid_parameter", e.to_string())
        }
        Err(e @ ChannelError::Full) => {
            error(StatusCode::INSUFFICIENT_STORAGE, "full", e.to_string())
        }
    }
}

fn admin_error(e: AdminError) -> Response {
    match e {
        AdminError::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        AdminError::Invalid(e) => refusal(e),
        AdminError::Full(message) => error(StatusCode::INSUFFICIENT_STORAGE, "full", message),
    }
}

/// `POST /hq/v1/admin/customers`: a customer created at HQ (e.g. by a call-centre).
async fn admin_create_customer(
    State(shared): State<AppState>,
    body: Result<Json<NewCustomer>, JsonRejection>,
) -> Response {
    let fields = match body {
        Ok(Json(fields)) => fields,
        Err(rejection) => return bad_json(rejection),
    };
    let result = shared.model().admin_create_customer(fields);
    match result {
        Ok(record) => {
            tracing::info!(account_number = %record.account_number, version = record.version, "hq customer created at HQ");
            (StatusCode::CREATED, Json(record)).into_response()
        }
        Err(e) => admin_error(e),
    }
}

/// `PATCH /hq/v1/admin/customers/{account_number}`: a customer changed at HQ.
async fn admin_patch_customer(
    State(shared): State<AppState>,
    Path(account_number): Path<String>,
    body: Result<Json<CustomerPatch>, JsonRejection>,
) -> Response {
    let patch = match body {
        Ok(Json(patch)) => patch,
        Err(rejection) => return bad_json(rejection),
    };
    let result = shared.model().admin_patch_customer(&account_number, &patch);
    match result {
        Ok(record) => {
            tracing::info!(account_number = %record.account_number, version = record.version, "hq customer changed at HQ");
            Json(record).into_response()
        }
        Err(e) => admin_error(e),
    }
}
