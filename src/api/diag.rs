//! Diagnostics for a field technician: the queue, the link to HQ, the configuration held per
//! CDX job and what the node concludes from it, and every real-time call with its reason.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::domain::features::FeatureId;
use crate::domain::mode::{Intent, decide};
use crate::domain::rfc3339;
use crate::store::now_ms;

#[derive(Serialize)]
struct JobReport {
    job: u32,
    version: Option<u64>,
    received_at: Option<String>,
    age_secs: Option<i64>,
}

#[derive(Serialize)]
struct FeatureReport {
    feature: FeatureId,
    name: &'static str,
    enabled: bool,
    in_force: bool,
    prerequisites: Vec<FeatureId>,
    missing: Vec<FeatureId>,
}

/// `GET /diag`: the report as JSON.
pub async fn report(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let store = app.store.clone();
    let (counts, jobs, held) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::StoreError>((
            store.operation_counts()?,
            store.cdx_jobs()?,
            store.held_config()?,
        ))
    })
    .await
    .map_err(|_| {
        ApiError::plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "diag task failed",
        )
    })??;
    let now = now_ms();
    let jobs: Vec<JobReport> = jobs
        .into_iter()
        .map(|j| JobReport {
            job: j.job,
            version: j.held.as_ref().map(|h| h.version),
            received_at: j.held.as_ref().map(|h| rfc3339(h.received_at_ms)),
            age_secs: j.held.as_ref().map(|h| (now - h.received_at_ms) / 1000),
        })
        .collect();
    let features: Vec<FeatureReport> = FeatureId::ALL
        .into_iter()
        .map(|f| {
            let e = held.global.as_ref().map(|g| g.value.effective(f));
            FeatureReport {
                feature: f,
                name: f.name(),
                enabled: e.as_ref().is_some_and(|e| e.enabled),
                in_force: e.as_ref().is_some_and(|e| e.in_force),
                prerequisites: f.prerequisites().to_vec(),
                missing: e
                    .map(|e| e.missing)
                    .unwrap_or_else(|| f.prerequisites().to_vec()),
            }
        })
        .collect();
    let queue: serde_json::Map<String, serde_json::Value> = counts
        .into_iter()
        .map(|(state, n)| (state.as_str().to_string(), n.into()))
        .collect();
    Ok(Json(serde_json::json!({
        "node": {
            "store_id": app.identity.store_id,
            "channel_id": app.identity.channel_id,
            "version": env!("CARGO_PKG_VERSION"),
        },
        "queue": queue,
        "sync": app.sync.status.snapshot(),
        "cdx": { "jobs": jobs, "downloader": app.cdx.status() },
        "features": features,
        "mode": {
            "create": decide(&held, Intent::Create),
            "edit": decide(&held, Intent::Edit),
        },
        "realtime": app.realtime.stats(),
    })))
}

/// `POST /v1/cdx/refresh`: download jobs 1110, 1070 and 1010 now and apply them.
pub async fn cdx_refresh(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    match app.cdx.refresh().await {
        Ok(report) => Ok(Json(
            serde_json::json!({ "status": "applied", "applied": report }),
        )),
        Err(e) => Err(ApiError::plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "cdx_refresh_failed",
            format!("{e}; the configuration held stays in force"),
        )),
    }
}
