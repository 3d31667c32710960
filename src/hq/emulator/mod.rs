//! The HQ emulator: HQ's side of the protocol (staging in the five async tables, the
//! "Synchronize customers and channel requests" job, the outcome feed, CDX data packages 1010,
//! 1070 and 1110, feature management, real-time calls), admin endpoints, and fault injection. `outpost hq-sim` runs it; tests start it in-process with [`HqEmulator`].
//! Its state lives in memory: a restart forgets everything.

pub mod config;
pub mod conflicts;
pub mod customer;
pub mod faults;
mod http;
pub mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{ChannelError, ChannelSettingsChange, FeatureChange, FeatureStatus, HqConfig};
pub use customer::{HqCustomer, HqSubRecord};
pub use faults::{Faults, FaultsError, RejectRule};
pub use state::{AdminError, HqModel, RowSource, RowState, RtsError, SyncRunReport, TableRow};

use faults::FaultInjector;

/// How long [`HqEmulator::shutdown`] waits for open connections before it stops serving.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How to run an emulator.
#[derive(Debug, Clone)]
pub struct HqEmulatorConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// How often the sync job runs by itself; `None` (or zero) = only on demand.
    pub sync_interval: Option<Duration>,
    /// Seed of the fault draws, so a run can be repeated.
    pub seed: u64,
}

impl HqEmulatorConfig {
    /// Loopback on a free port, sync job on demand only, seed 0: what tests want.
    pub fn local() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            sync_interval: None,
            seed: 0,
        }
    }
}

/// Why an emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum HqEmulatorError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What the HTTP handlers and the sync ticker share.
pub(crate) struct Shared {
    model: Mutex<HqModel>,
    config: Mutex<HqConfig>,
    faults: FaultInjector,
    requests: Mutex<std::collections::VecDeque<RequestRecord>>,
}

/// Most requests kept in the request log (oldest dropped first).
pub const REQUEST_LOG_CAPACITY: usize = 100_000;

/// One node request as HQ saw it, for tests that check timing and load (e.g. that a client
/// waited out Retry-After, or how a fleet's retries spread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// When it arrived.
    pub at: std::time::Instant,
    /// Its path, e.g. `/hq/v1/uploads`.
    pub path: String,
    /// The status HQ answered (200 also for a response then dropped).
    pub status: u16,
    /// The calling store, from the `x-outpost-store` header, if sent.
    pub store: Option<String>,
}

impl Shared {
    fn new(seed: u64) -> Self {
        Self {
            model: Mutex::new(HqModel::new()),
            config: Mutex::new(HqConfig::new()),
            faults: FaultInjector::new(seed),
            requests: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Records a node request in the bounded log.
    pub(crate) fn log_request(&self, record: RequestRecord) {
        let mut log = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() >= REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(record);
    }

    /// The model; never held across an `.await`.
    fn model(&self) -> MutexGuard<'_, HqModel> {
        // The model stays consistent between calls; a panic in one request must not make
        // every later one panic too.
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Feature management and channel settings; never held across an `.await`.
    fn config(&self) -> MutexGuard<'_, HqConfig> {
        // Plain data, consistent between calls, as the model.
        self.config.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run_sync(&self) -> SyncRunReport {
        let reject = self.faults.reject_rule();
        let report = self.model().run_sync(reject.as_ref());
        if report != SyncRunReport::default() {
            tracing::info!(
                processed = report.processed,
                completed = report.completed,
                failed = report.failed,
                held = report.held,
                waiting = report.waiting,
                "hq sync job ran"
            );
        }
        report
    }
}

/// A running HQ emulator. Stop it with [`HqEmulator::shutdown`] (dropping it stops it too).
pub struct HqEmulator {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    ticker: Option<JoinHandle<()>>,
}

impl HqEmulator {
    /// Binds the listener, starts serving, and starts the sync job's interval if any.
    pub async fn start(config: HqEmulatorConfig) -> Result<HqEmulator, HqEmulatorError> {
        let bind_err = |source| HqEmulatorError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        let shared = Arc::new(Shared::new(config.seed));
        let (stop, stopped) = watch::channel(false);
        let app = http::router(shared.clone());
        let mut server_stop = stopped.clone();
        let server = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // Resolves on shutdown, or when the emulator is dropped.
                    let _ = server_stop.changed().await;
                })
                .into_future(),
        );
        let ticker = config
            .sync_interval
            .filter(|d| !d.is_zero())
            .map(|every| tokio::spawn(tick(shared.clone(), every, stopped)));
        tracing::info!(%local_addr, "hq emulator serving");
        Ok(HqEmulator {
            local_addr,
            shared,
            stop,
            server,
            ticker,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Its base URL, e.g. `http://127.0.0.1:8090`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Runs the sync job now, in-process.
    pub fn run_sync_job(&self) -> SyncRunReport {
        self.shared.run_sync()
    }

    /// Replaces the faults in force (as `PUT /hq/v1/admin/faults` does); out-of-range values
    /// are brought into range (see [`Faults::clamped`]).
    pub fn set_faults(&self, faults: Faults) {
        let clamped = faults.clone().clamped();
        if clamped != faults {
            tracing::warn!("hq emulator faults out of range were brought into range");
        }
        self.shared.faults.set(clamped);
    }

    /// Replaces the faults in force, refusing out-of-range values as the admin endpoint does.
    pub fn try_set_faults(&self, faults: Faults) -> Result<(), FaultsError> {
        faults.validate()?;
        self.shared.faults.set(faults);
        Ok(())
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults.get()
    }

    /// Every customer HQ holds, in creation order.
    pub fn customers(&self) -> Vec<HqCustomer> {
        self.shared.model().customers()
    }

    /// Switches a feature on or off at HQ, as `PUT /hq/v1/admin/features/{id}` does; switching
    /// on is refused with the prerequisites that are not in force.
    pub fn set_feature(
        &self,
        id: crate::domain::features::FeatureId,
        enabled: bool,
    ) -> Result<FeatureChange, Vec<crate::domain::features::FeatureId>> {
        self.shared.config().set_feature(id, enabled)
    }

    /// Sets "create customer in async mode" for one channel, or (`None`) every channel and the
    /// default, as `PUT /hq/v1/admin/channel` does.
    pub fn set_create_customer_async(
        &self,
        channel_id: Option<&str>,
        enabled: bool,
    ) -> Result<ChannelSettingsChange, ChannelError> {
        self.shared.config().set_channel(channel_id, enabled)
    }

    /// Every feature on and async customer creation on for every channel: HQ configured for
    /// asynchronous mode (`hq-sim --enable-async`).
    pub fn enable_async(&self) {
        let mut config = self.shared.config();
        config.enable_all_features();
        // `None` = every channel: never an invalid id, and never full.
        let _ = config.set_channel(None, true);
    }

    /// Feature management as it stands.
    pub fn features(&self) -> Vec<FeatureStatus> {
        self.shared.config().features()
    }

    /// Node requests received (not admin ones), oldest first, at most
    /// [`REQUEST_LOG_CAPACITY`].
    pub fn request_log(&self) -> Vec<RequestRecord> {
        let log = self
            .shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        log.iter().cloned().collect()
    }

    /// The five staging tables by name.
    pub fn tables(&self) -> std::collections::BTreeMap<&'static str, Vec<TableRow>> {
        self.shared.model().tables()
    }

    /// Stops serving: open connections get a grace period, then the server is aborted.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Some(ticker) = self.ticker {
            let _ = ticker.await;
        }
        let mut server = self.server;
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "hq emulator server stopped with an error")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "hq emulator server task failed"),
            Err(_) => server.abort(),
        }
        tracing::info!(local_addr = %self.local_addr, "hq emulator stopped");
    }
}

/// Runs the sync job every `every` until told to stop.
async fn tick(shared: Arc<Shared>, every: Duration, mut stopped: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                shared.run_sync();
            }
            _ = stopped.changed() => break,
        }
    }
}
