//! A running node: the store, its writer, and the local API, started and stopped together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::hq::client::HqClient;
use crate::store::writer::{self, WriterOptions};
use crate::store::{Store, StoreError, StoreLocation, StoreOptions};
use crate::sync::{SyncConfig, SyncTasks};

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HQ client could not be built from the configuration.
    #[error("hq client: {0}")]
    HqClient(String),
    /// A thread or task could not be started or joined.
    #[error("node runtime: {0}")]
    Runtime(String),
    /// The listen address is reachable from other machines and no token is configured.
    #[error(
        "refusing to serve on {listen} without authentication: add at least one token under \
         `auth.tokens` in the configuration (`outpost hash-token` makes one), or listen on a \
         loopback address"
    )]
    Unprotected {
        /// The listen address.
        listen: SocketAddr,
    },
    /// The token configuration cannot be used.
    #[error(transparent)]
    Auth(#[from] crate::api::auth::AuthError),
}

/// A node serving on its listen address. Stop it with [`Node::shutdown`].
pub struct Node {
    local_addr: SocketAddr,
    store: Store,
    server: api::serve::Server,
    upkeep: tokio::task::JoinHandle<()>,
    metrics: crate::telemetry::metrics::Metrics,
    sync: SyncTasks,
    writer_thread: std::thread::JoinHandle<()>,
}

impl Node {
    /// Opens the store, starts the writer, binds the listener and starts serving.
    pub async fn start(config: &Config) -> Result<Node, NodeError> {
        Node::start_on(config, StoreLocation::File(config.store_path())).await
    }

    /// As [`Node::start`], with the store at `location` instead of the configured file (the
    /// reliability tests run nodes on simulated disks).
    pub async fn start_on(config: &Config, location: StoreLocation) -> Result<Node, NodeError> {
        // Before anything is opened or bound: a node reachable from the LAN never runs open.
        let tokens = Arc::new(api::auth::Tokens::from_config(&config.auth)?);
        if tokens.is_open() {
            if !config.node.listen.ip().is_loopback() {
                return Err(NodeError::Unprotected {
                    listen: config.node.listen,
                });
            }
            tracing::warn!(
                listen = %config.node.listen,
                "no auth.tokens configured: the local API is open to every program on this \
                 machine (allowed on loopback only)"
            );
        }
        let metrics = crate::telemetry::metrics::Metrics::new();
        let options = StoreOptions {
            max_concurrent_reads: config.store.max_concurrent_reads,
            ..StoreOptions::new(config.store.cache_bytes)
        };
        let store = tokio::task::spawn_blocking(move || Store::open_with(location, &options))
            .await
            .map_err(|e| NodeError::Runtime(e.to_string()))??;
        let (writer, writer_thread) = writer::spawn(
            store.clone(),
            WriterOptions {
                store_id: config.node.store_id.clone(),
                queue: config.limits.write_queue,
                group_commit_max: config.limits.group_commit_max,
                merge: config.store.merge(),
                group_wait: std::time::Duration::from_micros(config.limits.group_commit_wait_us),
                replies_on: Some(tokio::runtime::Handle::current()),
            },
        )
        .map_err(|e| NodeError::Runtime(e.to_string()))?;
        let listener = TcpListener::bind(config.node.listen)
            .await
            .map_err(|source| NodeError::Bind {
                addr: config.node.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: config.node.listen,
            source,
        })?;
        let client = HqClient::from_config(config)
            .map_err(|e| NodeError::HqClient(e.to_string()))?
            .with_metrics(metrics.clone());
        let sync = SyncTasks::spawn(
            store.clone(),
            writer.clone(),
            client.clone(),
            SyncConfig::from_config(config),
        );
        let realtime = crate::sync::realtime::Realtime::new(
            client,
            writer.clone(),
            store.clone(),
            config.node.store_id.clone(),
            sync.in_flight.clone(),
        );
        let app = api::router(AppState::new(api::Services {
            store: store.clone(),
            writer,
            limits: config.limits.clone(),
            sync: sync.control(),
            cdx: sync.cdx.clone(),
            realtime,
            identity: api::Identity {
                store_id: config.node.store_id.clone(),
                channel_id: config.node.channel_id.clone(),
            },
            runtime: api::diag::NodeRuntime::starting_now(config.store_path()),
            auth: tokens,
            metrics: metrics.clone(),
        }));
        let limits = &config.limits;
        let header_read_timeout = Duration::from_millis(limits.header_read_timeout_ms);
        let options = api::serve::ServeOptions {
            max_connections: limits.max_connections,
            header_read_timeout,
            // Every request under way ends within its own timeout; a connection still
            // waiting for headers, within the header timeout.
            drain_timeout: Duration::from_millis(limits.request_timeout_ms)
                + header_read_timeout
                + Duration::from_secs(1),
        };
        let server = api::serve::Server::spawn(listener, app, options, metrics.clone());
        let upkeep = {
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(crate::telemetry::metrics::UPKEEP_INTERVAL);
                loop {
                    tick.tick().await;
                    metrics.upkeep();
                }
            })
        };
        tracing::info!(%local_addr, store_id = %config.node.store_id, "node serving");
        Ok(Node {
            local_addr,
            store,
            server,
            upkeep,
            metrics,
            sync,
            writer_thread,
        })
    }

    /// The address the local API is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the sync tasks last did.
    pub fn sync_status(&self) -> crate::sync::status::SyncSnapshot {
        self.sync.status.snapshot()
    }

    /// The store (for in-process inspection by tests and tools).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This node's metrics registry (for in-process inspection by tests and tools).
    pub fn metrics(&self) -> &crate::telemetry::metrics::Metrics {
        &self.metrics
    }

    /// Stops accepting, lets in-flight requests finish, then lets the writer commit what it
    /// holds and stop.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        self.sync.shutdown().await;
        self.server
            .shutdown()
            .await
            .map_err(|e| NodeError::Runtime(e.to_string()))?;
        self.upkeep.abort();
        // The router (and with it every writer handle) is gone: the writer drains and ends.
        let writer = self.writer_thread;
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .map_err(|e| NodeError::Runtime(e.to_string()))?
            .map_err(|_| NodeError::Runtime("writer thread panicked".into()))?;
        // Sealed, the file opens next time without redb's walk of every page (`store::seal`).
        let store = self.store;
        match tokio::task::spawn_blocking(move || store.close()).await {
            Ok(Ok(true)) => tracing::info!("store closed and sealed"),
            Ok(Ok(false)) => tracing::info!("store closed (not sealed: next start checks it)"),
            Ok(Err(e)) => tracing::warn!(error = %e, "store close failed; next start checks it"),
            Err(e) => tracing::warn!(error = %e, "store close did not finish"),
        }
        tracing::info!("node stopped");
        Ok(())
    }
}
