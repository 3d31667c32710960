//! The HTTP/1.1 server under the router, with the knobs `axum::serve` lacks: a cap on open
//! connections (further ones wait in the kernel's listen backlog, so a flood of idle or slow
//! clients cannot starve the tills of file descriptors or memory) and a header read timeout
//! (which also closes idle keep-alive connections). Shutdown is graceful: stop accepting, let
//! every request under way finish and be answered, then close; the writer drains after.
//!
//! HTTP/1.1 only: tills and browsers on the store LAN speak it, and it keeps the header timeout
//! meaningful (HTTP/2 has no equivalent).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::telemetry::metrics::Metrics;

/// Bounds of the server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for a request's headers, from the connection's start or the previous
    /// answer.
    pub header_read_timeout: Duration,
    /// Longest wait at shutdown for requests under way; connections still open then are cut.
    pub drain_timeout: Duration,
}

/// The serving task. Stop it with [`Server::shutdown`].
pub struct Server {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts serving `app` on `listener`.
    pub fn spawn(
        listener: TcpListener,
        app: Router,
        options: ServeOptions,
        metrics: Metrics,
    ) -> Server {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, app, options, metrics, stopped));
        Server { stop, task }
    }

    /// Stops accepting, waits (bounded by `drain_timeout`) for the requests under way to be
    /// answered, and returns when every connection is closed.
    pub async fn shutdown(self) -> Result<(), tokio::task::JoinError> {
        let _ = self.stop.send(true);
        self.task.await
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connection tasks so the set stays as small as the open connections.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: wait a
                    // little instead of spinning, and go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        // Small JSON answers: send them at once rather than waiting for more to coalesce.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let header_read_timeout = options.header_read_timeout;
        let mut conn_stop = stop.clone();
        let metrics = metrics.clone();
        connections.spawn(async move {
            let _slot = slot;
            let _open = metrics.connection_opened();
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = stopped(&mut conn_stop) => {
                    // Finish the request under way (if any), then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    metrics.header_timeout();
                }
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // No new connections from here on; the ones open finish what they are doing.
    drop(listener);
    let drained = tokio::time::timeout(options.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the drain timeout were closed"
        );
        connections.shutdown().await;
    }
}

/// Resolves once the stop flag is set (at once if it already is).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens once the server is being torn
    // down: treat it as a stop too.
    let _ = stop.wait_for(|s| *s).await;
}
