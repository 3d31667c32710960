//! A running node: the store, its writer, and the local API, started and stopped together.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::hq::client::HqClient;
use crate::store::writer::{self, WriterOptions};
use crate::store::{Store, StoreError, StoreOptions};
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
}

/// A node serving on its listen address. Stop it with [`Node::shutdown`].
pub struct Node {
    local_addr: SocketAddr,
    store: Store,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    sync: SyncTasks,
    writer_thread: std::thread::JoinHandle<()>,
}

impl Node {
    /// Opens the store, starts the writer, binds the listener and starts serving.
    pub async fn start(config: &Config) -> Result<Node, NodeError> {
        let path = config.store_path();
        let options = StoreOptions::new(config.store.cache_bytes);
        let store = tokio::task::spawn_blocking(move || Store::open(&path, &options))
            .await
            .map_err(|e| NodeError::Runtime(e.to_string()))??;
        let (writer, writer_thread) = writer::spawn(
            store.clone(),
            WriterOptions {
                store_id: config.node.store_id.clone(),
                queue: config.limits.write_queue,
                group_commit_max: config.limits.group_commit_max,
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
        let client =
            HqClient::from_config(config).map_err(|e| NodeError::HqClient(e.to_string()))?;
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
        let app = api::router(AppState {
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
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .into_future(),
        );
        tracing::info!(%local_addr, store_id = %config.node.store_id, "node serving");
        Ok(Node {
            local_addr,
            store,
            stop,
            server,
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

    /// Stops accepting, lets in-flight requests finish, then lets the writer commit what it
    /// holds and stop.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        self.sync.shutdown().await;
        let _ = self.stop.send(());
        self.server
            .await
            .map_err(|e| NodeError::Runtime(e.to_string()))?
            .map_err(|e| NodeError::Runtime(e.to_string()))?;
        // The router (and with it every writer handle) is gone: the writer drains and ends.
        let writer = self.writer_thread;
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .map_err(|e| NodeError::Runtime(e.to_string()))?
            .map_err(|_| NodeError::Runtime("writer thread panicked".into()))?;
        tracing::info!("node stopped");
        Ok(())
    }
}
