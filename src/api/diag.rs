//! Diagnostics for a field technician: the queue, the link to HQ, the configuration held per
//! CDX job and what the node concludes from it, every real-time call with its reason, the
//! store file and its disk, and findings in plain words with what to do.

use std::path::PathBuf;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::domain::features::FeatureId;
use crate::domain::findings::{self, Facts, JobFact, Thresholds};
use crate::domain::mode::{Intent, decide};
use crate::domain::{OpState, RecordKind, rfc3339};
use crate::store::now_ms;

/// Most operations one report reads to count the queue by record kind (the counts by state
/// are exact whatever the size; past this the by-kind counts say they are partial).
const MAX_KIND_SCAN: usize = 100_000;

/// What diagnostics know of the running node beyond its store: when it started and where its
/// file lives.
#[derive(Clone, Debug)]
pub struct NodeRuntime {
    /// When the node started (Unix ms), for display.
    pub started_at_ms: i64,
    /// When the node started, for the uptime (monotonic).
    pub started: Instant,
    /// The store file.
    pub store_path: PathBuf,
}

impl NodeRuntime {
    /// A node starting now with its store at `store_path`.
    pub fn starting_now(store_path: PathBuf) -> Self {
        NodeRuntime {
            started_at_ms: now_ms(),
            started: Instant::now(),
            store_path,
        }
    }
}

/// The store file and the disk it is on.
#[derive(Serialize)]
struct StoreReport {
    path: String,
    file_bytes: Option<u64>,
    disk_free_bytes: Option<u64>,
    disk_total_bytes: Option<u64>,
}

fn store_report(path: &std::path::Path) -> StoreReport {
    // Sizes are best effort: a report without them is still worth having.
    let file_bytes = std::fs::metadata(path).ok().map(|m| m.len());
    let disk = fs4::statvfs(path).ok();
    StoreReport {
        path: path.display().to_string(),
        file_bytes,
        disk_free_bytes: disk.as_ref().map(fs4::FsStats::available_space),
        disk_total_bytes: disk.as_ref().map(fs4::FsStats::total_space),
    }
}

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
    let path = app.runtime.store_path.clone();
    let (stats, jobs, held, file) = store
        .read(move |store| {
            Ok::<_, crate::store::StoreError>((
                store.queue_stats(MAX_KIND_SCAN)?,
                store.cdx_jobs()?,
                store.held_config()?,
                store_report(&path),
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
    let sync = app.sync.status.snapshot();
    let cdx_status = app.cdx.status();
    let realtime = app.realtime.stats();
    let in_flight = app.realtime.in_flight();
    let create = decide(&held, Intent::Create);
    let edit = decide(&held, Intent::Edit);

    let count = |state: OpState| stats.by_state.get(&state).copied().unwrap_or(0);
    let facts = Facts {
        now_ms: now,
        started_at_ms: app.runtime.started_at_ms,
        pending: count(OpState::Pending),
        failed: count(OpState::Failed),
        held: count(OpState::Held),
        oldest_pending_ms: stats.oldest_pending_ms,
        hq_reachable: sync.hq_reachable,
        hq_last_answer_ms: sync.last_upload_success_ms.max(sync.last_outcome_pull_ms),
        upload_error: (sync.consecutive_failures > 0)
            .then(|| sync.last_upload_error.clone())
            .flatten(),
        cdx_error: cdx_status
            .last_failure_ms
            .filter(|f| cdx_status.last_success_ms.is_none_or(|s| f > &s))
            .and(cdx_status.last_error.clone()),
        jobs: jobs
            .iter()
            .map(|j| JobFact {
                job: j.job,
                received_at_ms: j.held.as_ref().map(|h| h.received_at_ms),
            })
            .collect(),
        create_mode: create.clone(),
        edit_mode: edit.clone(),
        realtime_calls: realtime.calls,
        realtime_fallbacks: realtime.fallbacks,
        features: held
            .global
            .as_ref()
            .map(|g| FeatureId::ALL.map(|f| g.value.effective(f)).to_vec())
            .unwrap_or_default(),
        disk_free_bytes: file.disk_free_bytes,
        disk_total_bytes: file.disk_total_bytes,
    };
    let findings = findings::findings(&facts, &Thresholds::default());

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
    let mut queue: serde_json::Map<String, serde_json::Value> = OpState::ALL
        .into_iter()
        .map(|state| (state.as_str().to_string(), count(state).into()))
        .collect();
    let by_kind: serde_json::Map<String, serde_json::Value> = RecordKind::ALL
        .into_iter()
        .map(|kind| {
            let states: serde_json::Map<String, serde_json::Value> = OpState::ALL
                .into_iter()
                .map(|state| {
                    let n = stats.by_kind.get(&(kind, state)).copied().unwrap_or(0);
                    (state.as_str().to_string(), n.into())
                })
                .collect();
            (kind.as_str().to_string(), states.into())
        })
        .collect();
    queue.insert("in_flight".into(), in_flight.into());
    queue.insert(
        "completed_not_pruned".into(),
        count(OpState::Completed).into(),
    );
    queue.insert("by_kind".into(), by_kind.into());
    queue.insert("by_kind_complete".into(), stats.complete.into());
    queue.insert(
        "oldest_pending_since".into(),
        stats.oldest_pending_ms.map(rfc3339).into(),
    );
    queue.insert(
        "oldest_pending_age_secs".into(),
        stats
            .oldest_pending_ms
            .map(|t| (now - t).max(0) / 1000)
            .into(),
    );
    let hq = serde_json::json!({
        "reachable": sync.hq_reachable,
        "latency_ms": sync.hq_latency_ms,
        "last_contact_at": facts.hq_last_answer_ms.map(rfc3339),
        "last_upload_attempt_at": sync.last_upload_attempt_ms.map(rfc3339),
        "last_upload_success_at": sync.last_upload_success_ms.map(rfc3339),
        "last_upload_error": sync.last_upload_error,
        "consecutive_failures": sync.consecutive_failures,
    });
    Ok(Json(serde_json::json!({
        "node": {
            "store_id": app.identity.store_id,
            "channel_id": app.identity.channel_id,
            "version": env!("CARGO_PKG_VERSION"),
        },
        "started_at": rfc3339(app.runtime.started_at_ms),
        "uptime_secs": app.runtime.started.elapsed().as_secs(),
        "now": rfc3339(now),
        "findings": findings,
        "queue": queue,
        "hq": hq,
        "sync": sync,
        "cdx": { "jobs": jobs, "downloader": cdx_status },
        "features": features,
        "mode": {
            "create": create,
            "edit": edit,
        },
        "realtime": realtime,
        "store": file,
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
