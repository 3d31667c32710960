//! `GET /v1/admin/backup`: a consistent copy of the store, made while the node runs.
//!
//! The running node holds the store file's lock, so no other process can copy it safely. The
//! node copies one snapshot into a scratch file beside the store, streams it to the client and
//! deletes it. The headers say what the copy holds, so the client can check what it received.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::AppState;
use super::error::ApiError;
use crate::store::backup::BackupReport;
use crate::store::{StoreError, now_ms};

/// Header: rows in the copy, all tables.
pub const ROWS_HEADER: &str = "x-outpost-rows";
/// Header: rows per table, `name=count` joined by commas.
pub const TABLES_HEADER: &str = "x-outpost-tables";
/// Header: schema version of the copy.
pub const SCHEMA_HEADER: &str = "x-outpost-schema-version";

/// Free space kept for the till's writes beyond the copy, bytes.
const RESERVE_BYTES: u64 = 64 * 1024 * 1024;

/// Bytes read from the scratch file per chunk sent.
const CHUNK: usize = 256 * 1024;

/// Stores with a backup under way (by file), so two at once cannot fill the disk.
static RUNNING: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Marks a store's backup as under way until dropped.
struct Running(PathBuf);

impl Running {
    fn start(store: &Path) -> Option<Running> {
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        running
            .get_or_insert_with(HashSet::new)
            .insert(store.to_path_buf())
            .then(|| Running(store.to_path_buf()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(set) = running.as_mut() {
            set.remove(&self.0);
        }
    }
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::db(redb::StorageError::Io(e))
}

/// The scratch copy and what it holds; the directory (and the file) go when this is dropped.
struct Scratch {
    file: std::fs::File,
    report: BackupReport,
    // Dropped after `file` (fields drop in order), so the file is closed before it is deleted.
    _dir: tempfile::TempDir,
    _running: Running,
}

fn make_copy(store: &crate::store::Store, running: Running) -> Result<Scratch, StoreError> {
    let Some(store_path) = store.path() else {
        return Err(StoreError::Encoding("the store is not a file".into()));
    };
    let dir = store_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // The copy is at most as large as the store file; refuse early rather than take the disk
    // space the till's writes need.
    let needed = std::fs::metadata(store_path).map_err(io)?.len();
    let free = fs4::available_space(dir).map_err(io)?;
    if free < needed.saturating_add(RESERVE_BYTES) {
        return Err(StoreError::NoSpace);
    }
    let scratch = tempfile::Builder::new()
        .prefix(".outpost-backup-")
        .tempdir_in(dir)
        .map_err(io)?;
    let path = scratch.path().join("backup.redb");
    let report = store.backup_to(&path, |_, _| {})?;
    let file = std::fs::File::open(&path).map_err(io)?;
    Ok(Scratch {
        file,
        report,
        _dir: scratch,
        _running: running,
    })
}

/// `GET /v1/admin/backup`: the store as one consistent redb file (application/octet-stream),
/// with `X-Outpost-Rows`, `X-Outpost-Tables` and `X-Outpost-Schema-Version`.
pub async fn download(State(app): State<AppState>) -> Result<Response, ApiError> {
    let Some(store_path) = app.store.path() else {
        return Err(ApiError::plain(
            StatusCode::CONFLICT,
            "backup_unsupported",
            "this node's store is not a file; there is nothing to copy",
        ));
    };
    let running = Running::start(store_path).ok_or_else(|| {
        ApiError::plain(
            StatusCode::CONFLICT,
            "backup_running",
            "a backup of this node is already being made; retry when it has finished",
        )
    })?;
    let store = app.store.clone();
    let started = std::time::Instant::now();
    let scratch = tokio::task::spawn_blocking(move || make_copy(&store, running))
        .await
        .map_err(|_| {
            ApiError::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "backup task failed",
            )
        })??;
    let report = scratch.report.clone();
    tracing::info!(
        rows = report.total_rows,
        bytes = report.bytes,
        ms = started.elapsed().as_millis() as u64,
        "backup made; sending it"
    );
    let tables = report
        .tables
        .iter()
        .map(|(name, n)| format!("{name}={n}"))
        .collect::<Vec<_>>()
        .join(",");
    let disposition = format!(
        "attachment; filename=\"outpost-backup-{}.redb\"",
        crate::domain::rfc3339(now_ms()).replace(':', "")
    );
    let body = Body::from_stream(futures_util::stream::unfold(
        Some(scratch),
        |state| async move {
            let mut scratch = state?;
            // std I/O off the async threads, as tokio::fs does.
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; CHUNK];
                let n = scratch.file.read(&mut buf);
                (scratch, buf, n)
            })
            .await;
            match read {
                Ok((scratch, mut buf, Ok(n))) if n > 0 => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), Some(scratch)))
                }
                // End of file: `scratch` drops here, deleting the copy.
                Ok((_, _, Ok(_))) => None,
                Ok((_, _, Err(e))) => Some((Err(e), None)),
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        },
    ));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set(header::CONTENT_TYPE, "application/octet-stream".into());
    set(header::CONTENT_LENGTH, report.bytes.to_string());
    set(header::CONTENT_DISPOSITION, disposition);
    set(
        header::HeaderName::from_static(ROWS_HEADER),
        report.total_rows.to_string(),
    );
    set(header::HeaderName::from_static(TABLES_HEADER), tables);
    if let Some(v) = report.schema_version {
        set(
            header::HeaderName::from_static(SCHEMA_HEADER),
            v.to_string(),
        );
    }
    Ok(response)
}
