//! The local HTTP API the tills and technicians call. Thin: it parses, checks, and hands work
//! to the store; every refusal is JSON naming the field and rule.

pub mod auth;
pub mod backup;
pub mod customers;
pub mod diag;
pub mod error;
pub mod json;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod serve;
pub mod sync_status;
pub mod writes;

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{MethodRouter, get, patch, post};
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::Limits;
use crate::store::{Store, WriterHandle};
use error::ApiError;

/// What every handler can reach. Cloned for every request (axum's `State`), so it is one
/// shared allocation: cloning the parts themselves was a tenth of the server's time under load.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// Shares `services` with every handler.
    pub fn new(services: Services) -> Self {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The node's parts the handlers use.
pub struct Services {
    /// Reads.
    pub store: Store,
    /// Writes.
    pub writer: WriterHandle,
    /// Bounds.
    pub limits: Limits,
    /// The sync tasks.
    pub sync: crate::sync::SyncControl,
    /// CDX downloads on demand.
    pub cdx: crate::sync::cdx::CdxControl,
    /// Real-time calls to HQ.
    pub realtime: crate::sync::realtime::Realtime,
    /// Who this node is.
    pub identity: Identity,
    /// When it started and where its store file is, for diagnostics.
    pub runtime: diag::NodeRuntime,
    /// The tokens accepted (none: open, loopback only).
    pub auth: Arc<auth::Tokens>,
    /// This node's metrics registry.
    pub metrics: crate::telemetry::metrics::Metrics,
}

/// The node's identity, as diagnostics report it.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Store id.
    pub store_id: String,
    /// Channel id.
    pub channel_id: String,
}

/// The router's routes, recorded as they are added, so that the OpenAPI document and the
/// tests can be checked against exactly what the router serves.
pub struct Routes {
    router: Router<AppState>,
    paths: Vec<&'static str>,
}

impl Routes {
    fn new() -> Self {
        Routes {
            router: Router::new(),
            paths: Vec::new(),
        }
    }

    /// Adds a route, as `Router::route` does, and records its path.
    fn route(mut self, path: &'static str, method_router: MethodRouter<AppState>) -> Self {
        self.paths.push(path);
        self.router = self.router.route(path, method_router);
        self
    }
}

/// Every route of the local API. Access is decided in `auth::access`: a route added here needs
/// a technician token until it is listed there.
fn routes() -> Routes {
    Routes::new()
        .route("/healthz", get(healthz))
        .route("/", get(page::index))
        .route(
            "/v1/customers",
            post(customers::create).get(customers::search),
        )
        .route(
            "/v1/customers/{customer_ref}",
            get(customers::get).patch(customers::edit),
        )
        .route(
            "/v1/customers/{customer_ref}/{collection}",
            post(customers::add_sub_record),
        )
        .route(
            "/v1/customers/{customer_ref}/{collection}/{record_id}",
            patch(customers::edit_sub_record),
        )
        .route("/v1/sync/operations", get(sync_status::list))
        .route(
            "/v1/sync/operations/resync-failed",
            post(sync_status::resync_failed),
        )
        .route("/v1/sync/upload", post(sync_status::upload_now))
        .route("/v1/cdx/refresh", post(diag::cdx_refresh))
        .route("/diag", get(diag::report))
        .route("/v1/admin/backup", get(backup::download))
        .route(
            "/v1/sync/operations/{operation_id}",
            get(sync_status::show).put(sync_status::update),
        )
        .route(
            "/v1/sync/operations/{operation_id}/sync",
            post(sync_status::resync),
        )
        .route("/metrics", get(metrics::scrape))
        .route("/openapi.json", get(openapi::serve))
}

/// The path template of every route, in declaration order.
pub fn route_paths() -> Vec<&'static str> {
    routes().paths
}

/// Builds the router with its limits: body size, request timeout, concurrency, panic guard;
/// authentication; and request metrics.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// As [`router`], with `extra` routes served behind the same limits, authentication and
/// metrics as every route of the node (the HTTP bench's no-op route, its ceiling).
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let limits = state.limits.clone();
    let tokens = state.auth.clone();
    let metrics = state.metrics.clone();
    // Layers added later wrap the ones before: a request meets metrics, the panic guard, auth,
    // then the concurrency limit, timeout and body limit. Every layer sees the matched route.
    routes()
        .router
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(limits.body_bytes))
        .layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(request_timed_out))
                .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(
                    limits.request_timeout_ms,
                ))),
        )
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent_requests,
        ))
        .layer(axum::middleware::from_fn_with_state(tokens, auth::require))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the node hit an internal error; nothing was acknowledged",
            ))
        }))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The answer when `limits.request_timeout_ms` strikes (tower's own answer has no body).
async fn request_timed_out(_: tower::BoxError) -> ApiError {
    ApiError::field(
        StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
        "request",
        "time_limit",
        "the request took longer than this node allows (limits.request_timeout_ms); a write \
         under way may still have been saved: read before retrying",
    )
}

async fn not_found() -> ApiError {
    ApiError::not_found("path", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::field(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method",
        "allowed_method",
        "this endpoint does not take that method",
    )
}

/// Parses a `limit` query parameter: 1..=max, `default` when absent.
pub fn parse_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None | Some("") => Ok(default.min(max)),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_param(
                "limit",
                "range",
                format!("must be a whole number from 1 to {max}"),
            )),
        },
    }
}

/// A query string whose parse errors are JSON naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str::<T>(raw)
            .map(ApiQuery)
            .map_err(|e| {
                let named = crate::domain::validation::from_serde(".", &e.to_string());
                let field = if named.field == "body" {
                    "query".to_string()
                } else {
                    named.field
                };
                ApiError::bad_param(&field, named.rule, named.message)
            })
    }
}

/// Path parameters whose parse errors are JSON naming the parameter (axum's own rejection is
/// plain text).
pub struct ApiPath<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let message = e.body_text();
                Err(match e.into_kind() {
                    ErrorKind::InvalidUtf8InPathParam { key } => {
                        ApiError::bad_param(&key, "utf8", message)
                    }
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::DeserializeError { key, .. } => {
                        ApiError::bad_param(&key, "path_syntax", message)
                    }
                    _ => ApiError::bad_param("path", "path_syntax", message),
                })
            }
            Err(e) => Err(ApiError::bad_param("path", "path_syntax", e.body_text())),
        }
    }
}
