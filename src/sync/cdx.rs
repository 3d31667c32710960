//! The CDX downloader: pulls jobs 1110, 1070 and 1010 from HQ on an interval and on demand,
//! and applies each job's package in one transaction. A failed or partial download changes
//! nothing; the configuration held stays in force, however old.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::retry::RetryPolicy;
use crate::domain::view::CustomerView;
use crate::hq::client::{HqClient, HqError};
use crate::hq::wire::{CustomersCursor, HqCustomerRecord};
use crate::store::cdx::{HeldPackage, HqCopy, JOB_CHANNEL, JOB_CUSTOMERS, JOB_GLOBAL};
use crate::store::writer::Command;
use crate::store::{Store, WriterHandle, now_ms};

/// Customers asked for per 1010 page.
const PAGE: usize = 5_000;
/// Most pages in one 1010 download (bounds memory and time: 5,000,000 customers).
const MAX_PAGES: usize = 1_000;

/// Why a download failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CdxError {
    /// HQ could not be reached or refused.
    #[error("job {job}: {source}")]
    Hq {
        /// The job.
        job: u32,
        /// HQ's failure.
        source: HqError,
    },
    /// The local store failed.
    #[error("job {job}: local store: {message}")]
    Local {
        /// The job.
        job: u32,
        /// What failed.
        message: String,
    },
    /// The downloader is not running.
    #[error("the CDX downloader is stopped")]
    Stopped,
    /// HQ sent more pages than the node accepts in one download.
    #[error("job 1010: more than {MAX_PAGES} pages; download stopped and nothing applied")]
    TooLarge,
}

/// What one download applied.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CdxReport {
    /// Version of 1110 now held.
    pub global_version: Option<u64>,
    /// Version of 1070 now held.
    pub channel_version: Option<u64>,
    /// Version of 1010 now held.
    pub customers_version: Option<u64>,
    /// Customers applied from 1010.
    pub customers_applied: usize,
}

/// What the downloader last did, for diagnostics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CdxStatus {
    /// When a download last finished without error (Unix ms).
    pub last_success_ms: Option<i64>,
    /// When a download last failed (Unix ms).
    pub last_failure_ms: Option<i64>,
    /// Why it failed.
    pub last_error: Option<String>,
}

type Request = oneshot::Sender<Result<CdxReport, CdxError>>;

/// Asks the downloader for a refresh now.
#[derive(Clone)]
pub struct CdxControl {
    requests: mpsc::Sender<Request>,
    status: Arc<Mutex<CdxStatus>>,
}

impl CdxControl {
    /// Downloads and applies every job now; answers what was applied or why not.
    pub async fn refresh(&self) -> Result<CdxReport, CdxError> {
        let (tx, rx) = oneshot::channel();
        self.requests.try_send(tx).map_err(|_| CdxError::Stopped)?;
        rx.await.map_err(|_| CdxError::Stopped)?
    }

    /// What the downloader last did.
    pub fn status(&self) -> CdxStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The downloader task.
pub struct CdxDownloader {
    pub(crate) store: Store,
    pub(crate) writer: WriterHandle,
    pub(crate) client: HqClient,
    pub(crate) store_id: String,
    /// `None`: only on demand.
    pub(crate) interval: Option<Duration>,
    pub(crate) retry: RetryPolicy,
    pub(crate) requests: mpsc::Receiver<Request>,
    pub(crate) status: Arc<Mutex<CdxStatus>>,
    pub(crate) stop: watch::Receiver<bool>,
}

/// Builds a downloader and its control handle.
pub fn downloader(
    store: Store,
    writer: WriterHandle,
    client: HqClient,
    store_id: String,
    interval: Option<Duration>,
    retry: RetryPolicy,
    stop: watch::Receiver<bool>,
) -> (CdxDownloader, CdxControl) {
    // A few refresh requests may wait; more are refused rather than queued without bound.
    let (tx, rx) = mpsc::channel(8);
    let status = Arc::new(Mutex::new(CdxStatus::default()));
    let control = CdxControl {
        requests: tx,
        status: status.clone(),
    };
    let task = CdxDownloader {
        store,
        writer,
        client,
        store_id,
        interval,
        retry,
        requests: rx,
        status,
        stop,
    };
    (task, control)
}

/// A customer HQ sent down, as a base for this node.
pub fn copy_from_wire(record: HqCustomerRecord, store_id: &str, now: i64) -> HqCopy {
    let origin_ref = match (&record.origin_store_id, record.origin_customer_ref) {
        (Some(s), Some(r)) if s == store_id => Some(r),
        _ => None,
    };
    HqCopy {
        account_number: record.account_number.clone(),
        origin_ref,
        view: CustomerView {
            customer_ref: String::new(),
            account_number: Some(record.account_number),
            fields: record.fields,
            addresses: record.addresses,
            contacts: record.contacts,
            affiliations: record.affiliations,
            attributes: record.attributes,
            last_seq: 0,
            created_at_ms: now,
            updated_at_ms: now,
        },
    }
}

impl CdxDownloader {
    /// Runs until told to stop: on the interval (retrying failures with backoff) and whenever
    /// a refresh is requested.
    pub async fn run(mut self) {
        let mut next = self.interval.map(|_| Duration::ZERO);
        loop {
            let tick = async {
                match next {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
            };
            let reply = tokio::select! {
                () = tick => None,
                req = self.requests.recv() => match req {
                    Some(reply) => Some(reply),
                    None => return,
                },
                _ = self.stop.changed() => return,
            };
            let mut stop = self.stop.clone();
            let result = tokio::select! {
                r = self.download() => r,
                _ = stop.changed() => return,
            };
            self.record(&result);
            next = match (&result, self.interval) {
                (_, None) => None,
                (Ok(_), Some(every)) => {
                    self.retry.reset();
                    Some(every)
                }
                (Err(CdxError::Hq { source, .. }), Some(_)) => {
                    Some(self.retry.next_delay(source.retry_after()))
                }
                (Err(_), Some(_)) => Some(self.retry.next_delay(None)),
            };
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
    }

    fn record(&self, result: &Result<CdxReport, CdxError>) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(report) => {
                status.last_success_ms = Some(now_ms());
                tracing::info!(
                    global = ?report.global_version,
                    channel = ?report.channel_version,
                    customers = ?report.customers_version,
                    applied = report.customers_applied,
                    "CDX download applied"
                );
            }
            Err(e) => {
                status.last_failure_ms = Some(now_ms());
                status.last_error = Some(e.to_string());
                tracing::warn!(error = %e, "CDX download failed; the configuration held stays in force");
            }
        }
    }

    async fn apply(&self, job: u32, command: Command) -> Result<(), CdxError> {
        self.writer
            .execute(command)
            .await
            .map(|_| ())
            .map_err(|e| CdxError::Local {
                job,
                message: e.to_string(),
            })
    }

    /// Downloads and applies 1110, then 1070, then 1010.
    pub async fn download(&self) -> Result<CdxReport, CdxError> {
        let mut report = CdxReport::default();
        let global = self
            .client
            .cdx_global()
            .await
            .map_err(|source| CdxError::Hq {
                job: JOB_GLOBAL,
                source,
            })?;
        let package = HeldPackage {
            version: global.version,
            received_at_ms: now_ms(),
            generated_at_ms: global.generated_at_ms,
            body: serde_json::to_value(&global.features).unwrap_or_default(),
        };
        self.apply(
            JOB_GLOBAL,
            Command::ApplyConfig {
                job: JOB_GLOBAL,
                package,
            },
        )
        .await?;
        report.global_version = Some(global.version);

        let channel = self
            .client
            .cdx_channel()
            .await
            .map_err(|source| CdxError::Hq {
                job: JOB_CHANNEL,
                source,
            })?;
        let package = HeldPackage {
            version: channel.version,
            received_at_ms: now_ms(),
            generated_at_ms: channel.generated_at_ms,
            body: serde_json::json!({ "create_customer_async": channel.create_customer_async }),
        };
        self.apply(
            JOB_CHANNEL,
            Command::ApplyConfig {
                job: JOB_CHANNEL,
                package,
            },
        )
        .await?;
        report.channel_version = Some(channel.version);

        let (version, generated_at_ms, copies) = self.download_customers().await?;
        report.customers_applied = copies.len();
        let package = HeldPackage {
            version,
            received_at_ms: now_ms(),
            generated_at_ms,
            body: serde_json::json!({ "customers": copies.len() }),
        };
        self.apply(JOB_CUSTOMERS, Command::ApplyCustomers { package, copies })
            .await?;
        report.customers_version = Some(version);
        Ok(report)
    }

    /// Every page of 1010 since the version held (everything when none is).
    async fn download_customers(&self) -> Result<(u64, i64, Vec<HqCopy>), CdxError> {
        let store = self.store.clone();
        let held = store
            .read(move |store| store.cdx_jobs())
            .await
            .map_err(|e| CdxError::Local {
                job: JOB_CUSTOMERS,
                message: e.to_string(),
            })?
            .map_err(|e| CdxError::Local {
                job: JOB_CUSTOMERS,
                message: e.to_string(),
            })?
            .into_iter()
            .find(|j| j.job == JOB_CUSTOMERS)
            .and_then(|j| j.held)
            .map_or(0, |h| h.version);
        let mut cursor = (held > 0).then(|| CustomersCursor {
            after_version: held,
            after_account: String::new(),
        });
        let mut copies = Vec::new();
        let now = now_ms();
        for _ in 0..MAX_PAGES {
            let page = self
                .client
                .cdx_customers(cursor.as_ref(), PAGE)
                .await
                .map_err(|source| CdxError::Hq {
                    job: JOB_CUSTOMERS,
                    source,
                })?;
            copies.extend(
                page.customers
                    .into_iter()
                    .map(|r| copy_from_wire(r, &self.store_id, now)),
            );
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok((page.version.max(held), page.generated_at_ms, copies)),
            }
        }
        Err(CdxError::TooLarge)
    }
}
