//! Background work that talks to HQ: the uploader (P-job), the outcome puller, and the retry
//! policy they share.

pub mod cdx;
pub mod outcomes;
pub mod realtime;
pub mod retry;
pub mod status;
pub mod uploader;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::hq::client::HqClient;
use crate::store::{Store, WriterHandle};
use retry::{Jitter, RetryConfig, RetryPolicy};
use status::SyncStatus;

/// Settings of the sync tasks.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Pause between looks for work when idle.
    pub interval: Duration,
    /// Most operations in one upload batch.
    pub batch_size: usize,
    /// Most outcomes read in one page.
    pub outcome_page: usize,
    /// Retry delays.
    pub retry: RetryConfig,
    /// How long confirmed operations are kept before pruning.
    pub retention: Duration,
    /// CDX download interval; `None` = on demand only.
    pub cdx_interval: Option<Duration>,
    /// This store, to recognise its own customers in job 1010.
    pub store_id: String,
}

impl SyncConfig {
    /// From the node configuration.
    pub fn from_config(config: &crate::config::Config) -> Self {
        SyncConfig {
            interval: Duration::from_millis(config.upload.interval_ms),
            batch_size: config.upload.batch_size,
            outcome_page: config.upload.batch_size.max(100),
            retry: RetryConfig {
                initial: Duration::from_millis(config.upload.retry_initial_ms),
                max: Duration::from_millis(config.upload.retry_max_ms),
                jitter: match config.upload.retry_jitter {
                    crate::config::RetryJitter::Full => Jitter::Full,
                    crate::config::RetryJitter::None => Jitter::None,
                },
            },
            retention: Duration::from_secs(config.upload.completed_retention_secs),
            cdx_interval: (config.cdx.interval_secs > 0)
                .then(|| Duration::from_secs(config.cdx.interval_secs)),
            store_id: config.node.store_id.clone(),
        }
    }
}

/// The running sync tasks. Dropping it does not stop them; call [`SyncTasks::shutdown`].
pub struct SyncTasks {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Wakes the uploader now (the "upload now" action).
    pub wake_upload: Arc<Notify>,
    /// Wakes the outcome puller now.
    pub wake_outcomes: Arc<Notify>,
    /// What they last did.
    pub status: Arc<SyncStatus>,
    /// CDX downloads on demand.
    pub cdx: cdx::CdxControl,
    /// Operations whose real-time call is under way (the uploader skips them).
    pub in_flight: realtime::InFlight,
}

impl SyncTasks {
    /// Starts the uploader and the outcome puller.
    pub fn spawn(store: Store, writer: WriterHandle, client: HqClient, config: SyncConfig) -> Self {
        let (stop, stopped) = watch::channel(false);
        let status = Arc::new(SyncStatus::default());
        let wake_upload = Arc::new(Notify::new());
        let wake_outcomes = Arc::new(Notify::new());
        let staged = Arc::new(Notify::new());
        let seed = rand::random::<u64>();
        let in_flight = realtime::InFlight::default();
        let uploader = uploader::Uploader {
            store: store.clone(),
            writer: writer.clone(),
            client: client.clone(),
            batch_size: config.batch_size,
            interval: config.interval,
            retry: RetryPolicy::new(config.retry, seed),
            status: status.clone(),
            wake: wake_upload.clone(),
            stop: stopped.clone(),
            in_flight: in_flight.clone(),
            staged: staged.clone(),
        };
        let puller = outcomes::OutcomePuller {
            store: store.clone(),
            writer: writer.clone(),
            client: client.clone(),
            page: config.outcome_page,
            interval: config.interval,
            retry: RetryPolicy::new(config.retry, seed.rotate_left(17)),
            retention: config.retention,
            last_prune: None,
            status: status.clone(),
            wake: wake_outcomes.clone(),
            staged,
            stop: stopped.clone(),
        };
        let (downloader, cdx) = cdx::downloader(
            store.clone(),
            writer.clone(),
            client.clone(),
            config.store_id.clone(),
            config.cdx_interval,
            RetryPolicy::new(config.retry, seed.rotate_left(31)),
            stopped,
        );
        let tasks = vec![
            tokio::spawn(uploader.run()),
            tokio::spawn(puller.run()),
            tokio::spawn(downloader.run()),
        ];
        SyncTasks {
            stop,
            tasks,
            wake_upload,
            wake_outcomes,
            status,
            cdx,
            in_flight,
        }
    }

    /// A handle for the API's "upload now" action and status reads.
    pub fn control(&self) -> SyncControl {
        SyncControl {
            wake_upload: self.wake_upload.clone(),
            wake_outcomes: self.wake_outcomes.clone(),
            status: self.status.clone(),
        }
    }

    /// Stops both tasks (an HQ call in flight is abandoned: every call is idempotent).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What the API may ask of the sync tasks.
#[derive(Clone)]
pub struct SyncControl {
    wake_upload: Arc<Notify>,
    wake_outcomes: Arc<Notify>,
    /// What they last did.
    pub status: Arc<SyncStatus>,
}

impl SyncControl {
    /// Upload and read outcomes now instead of at the next interval (a pending retry delay is
    /// cut short too: the operator asked).
    pub fn sync_now(&self) {
        self.wake_upload.notify_one();
        self.wake_outcomes.notify_one();
    }
}

/// What ended a [`pause`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resumed {
    /// The delay ran out.
    Timer,
    /// `wake` was notified.
    Woken,
    /// `also` was notified.
    Also,
}

/// Waits `delay`, or until woken (by `wake`, or by `also` when given). `None` when told to
/// stop.
pub(crate) async fn pause(
    delay: Duration,
    wake: &Notify,
    also: Option<&Notify>,
    stop: &mut watch::Receiver<bool>,
) -> Option<Resumed> {
    if *stop.borrow() {
        return None;
    }
    let also = async {
        match also {
            Some(notify) => notify.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = tokio::time::sleep(delay) => Some(Resumed::Timer),
        () = wake.notified() => Some(Resumed::Woken),
        () = also => Some(Resumed::Also),
        _ = stop.changed() => None,
    }
}
