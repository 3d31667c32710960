//! `GET /metrics` in the Prometheus text format, and the middleware that counts and times every
//! request by route template.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::domain::OpState;
use crate::store::{OpFilter, now_ms};
use crate::telemetry::metrics::{Metrics, names};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A method as a label: the standard ones by name, anything else as `other`, so that a client
/// inventing methods cannot grow the label set.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: counts each request by route template (never the raw path: customer references
/// would make the label set unbounded), method and status, and times it.
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    // A cheap clone (the template is shared), not a copy of its text.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let _in_flight = metrics.request_started();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.http_request(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// `GET /metrics`: the node's metrics, gauges read from the store and the sync tasks now.
pub async fn scrape(State(app): State<AppState>) -> Result<Response, ApiError> {
    let store = app.store.clone();
    let (counts, oldest_pending_ms, jobs) = store
        .read(move |store| {
            let counts = store.operation_counts()?;
            // The pending listing is in acceptance order: its first is the oldest.
            let oldest = store
                .operations(&OpFilter {
                    state: Some(OpState::Pending),
                    after_seq: None,
                    limit: 1,
                })?
                .first()
                .map(|op| op.accepted_at_ms);
            Ok::<_, crate::store::StoreError>((counts, oldest, store.cdx_jobs()?))
        })
        .await
        .map_err(|_| {
            ApiError::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "metrics task failed",
            )
        })??;
    let m = &app.metrics;
    let now = now_ms();
    let secs_since = |ms: i64| (now.saturating_sub(ms)).max(0) as f64 / 1000.0;
    for (state, n) in counts {
        m.gauge(names::QUEUE_OPERATIONS, &[("state", state.as_str())])
            .set(n as f64);
    }
    m.gauge(names::QUEUE_OLDEST_PENDING, &[])
        .set(oldest_pending_ms.map_or(0.0, secs_since));
    for job in jobs {
        let Some(held) = job.held else { continue };
        let label = job.job.to_string();
        m.gauge(names::CDX_JOB_AGE, &[("job", &label)])
            .set(secs_since(held.received_at_ms));
        m.gauge(names::CDX_JOB_VERSION, &[("job", &label)])
            .set(held.version as f64);
    }

    // The sync tasks and the real-time sender keep their own tallies (shown by /diag too);
    // they are counters since the node started, exported as such.
    let sync = app.sync.status.snapshot();
    let batches = [("ok", sync.upload_batches_ok), ("retried", sync.retries)];
    for (result, n) in batches {
        m.counter(names::UPLOAD_BATCHES, &[("result", result)])
            .absolute(n);
    }
    let operations = [
        ("ok", sync.operations_uploaded),
        ("retried", sync.operations_retried),
        ("failed", sync.operations_refused),
    ];
    for (result, n) in operations {
        m.counter(names::UPLOAD_OPERATIONS, &[("result", result)])
            .absolute(n);
    }
    let outcomes = [
        ("completed", sync.outcomes_completed),
        ("failed", sync.outcomes_failed),
        ("held", sync.outcomes_held),
    ];
    for (result, n) in outcomes {
        m.counter(names::HQ_OUTCOMES, &[("result", result)])
            .absolute(n);
    }
    m.gauge(names::UPLOAD_CONSECUTIVE_FAILURES, &[])
        .set(sync.consecutive_failures as f64);
    if let Some(at) = sync.last_upload_success_ms {
        m.gauge(names::UPLOAD_LAST_SUCCESS, &[])
            .set(at as f64 / 1000.0);
    }
    if let Some(reachable) = sync.hq_reachable {
        m.gauge(names::HQ_REACHABLE, &[])
            .set(if reachable { 1.0 } else { 0.0 });
    }
    let rt = app.realtime.stats();
    let calls = [
        ("applied", rt.applied),
        ("refused", rt.refused),
        ("fallback", rt.fallbacks),
    ];
    for (result, n) in calls {
        m.counter(names::REALTIME_CALLS, &[("result", result)])
            .absolute(n);
    }
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], m.render()).into_response())
}
