//! The real server for HTTP benches (the node's own router, HQ unreachable so nothing but the
//! till's load runs), with a no-op JSON endpoint added by the bench only (behind the node's
//! layers, and bare beside them), and a minimal keep-alive HTTP/1.1 load generator (like wrk:
//! one connection per client, one request in flight per connection, latency per request).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use outpost::api::json::JsonValue;
use outpost::api::{self, AppState, Identity};
use outpost::config::Config;
use outpost::domain::{Action, Payload, RecordKind};
use outpost::hq::client::HqClient;
use outpost::store::{Store, WriterHandle};
use outpost::sync::{SyncConfig, SyncTasks};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The no-op endpoint: the same body parsing as `POST /v1/customers` (`JsonValue` and
/// `Payload::parse`), an answer of the same shape, and nothing written.
async fn noop(
    State(_): State<AppState>,
    JsonValue(body): JsonValue,
) -> (StatusCode, Json<serde_json::Value>) {
    match Payload::parse(RecordKind::Customer, Action::Create, body) {
        Ok(_) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "operation_id": "0192f1a2-0000-7000-8000-000000000000",
                "customer_ref": "S0001-T0",
                "state": "pending",
                "mode": "async",
                "mode_reason": "no-op endpoint",
            })),
        ),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({ "field": e.field })),
        ),
    }
}

/// Path of the bench-only no-op endpoint, served behind the node's own limits, authentication
/// and metrics, as every route of the node is: the HTTP ceiling.
pub const NOOP_PATH: &str = "/bench/noop";

/// Path of the same no-op endpoint served bare, outside the node's layers (information: what the
/// layers cost).
pub const BARE_NOOP_PATH: &str = "/bench/noop-bare";

/// A loopback address where nothing listens (bound, not listening), for HQ.
fn dead_hq() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    (socket, format!("http://{addr}"))
}

/// A server running the node's router (plus the no-op endpoint) over `store` and `writer`.
pub struct Server {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    sync: SyncTasks,
    _hq: tokio::net::TcpSocket,
}

impl Server {
    /// Starts serving on loopback. Call inside the server's runtime.
    pub async fn start(store: Store, writer: WriterHandle) -> Server {
        let dir = std::env::temp_dir();
        let (hq, url) = dead_hq();
        let mut config = Config::for_dir(&dir);
        config.hq.url = url;
        let client = HqClient::from_config(&config).expect("hq client");
        let sync = SyncTasks::spawn(
            store.clone(),
            writer.clone(),
            client.clone(),
            SyncConfig::from_config(&config),
        );
        let realtime = outpost::sync::realtime::Realtime::new(
            client,
            writer.clone(),
            store.clone(),
            config.node.store_id.clone(),
            sync.in_flight.clone(),
        );
        let state = AppState::new(api::Services {
            store,
            writer,
            limits: config.limits.clone(),
            sync: sync.control(),
            cdx: sync.cdx.clone(),
            realtime,
            identity: Identity {
                store_id: config.node.store_id.clone(),
                channel_id: config.node.channel_id.clone(),
            },
            auth: Arc::new(
                outpost::api::auth::Tokens::from_config(&config.auth).expect("open tokens"),
            ),
            metrics: outpost::telemetry::metrics::Metrics::new(),
            runtime: outpost::api::diag::NodeRuntime::starting_now(config.store_path()),
        });
        let app = Router::new()
            .route(BARE_NOOP_PATH, post(noop))
            .with_state(state.clone())
            .merge(api::router_with(
                state,
                Router::new().route(NOOP_PATH, post(noop)),
            ));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Server {
            addr,
            stop,
            task,
            sync,
            _hq: hq,
        }
    }

    /// Stops serving and the sync tasks.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.sync.shutdown().await;
    }
}

/// A request the load generator sends.
#[derive(Clone)]
pub enum Request {
    /// `POST path` with a JSON body made from a counter.
    Post(&'static str, Arc<dyn Fn(usize) -> String + Send + Sync>),
    /// `GET` of a path made from a counter.
    Get(Arc<dyn Fn(usize) -> String + Send + Sync>),
}

/// What a load run measured.
pub struct Load {
    /// Answers received per second.
    pub rps: f64,
    /// Latencies, ms.
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    /// Answers that were not 2xx.
    pub errors: usize,
    pub requests: usize,
}

async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).unwrap_or("");
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())
                        .flatten()
                })
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Runs `clients` keep-alive connections against `addr` for `duration` (after `warmup`), each
/// sending `request` in a loop; counters start at `offset + client * 10_000_000`.
pub async fn load(
    addr: SocketAddr,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    request: Request,
    offset: usize,
) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let stop = stop.clone();
        let measuring = measuring.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let mut latencies = Vec::with_capacity(4096);
            let mut errors = 0usize;
            let mut buf = Vec::with_capacity(8192);
            let mut i = offset + c * 10_000_000;
            let host = format!("{addr}");
            while !stop.load(Ordering::Relaxed) {
                let req = match &request {
                    Request::Post(path, body) => {
                        let body = body(i);
                        format!(
                            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    Request::Get(path) => {
                        format!("GET {} HTTP/1.1\r\nHost: {host}\r\n\r\n", path(i))
                    }
                };
                i += 1;
                let started = Instant::now();
                stream.write_all(req.as_bytes()).await.expect("send");
                let status = read_response(&mut stream, &mut buf).await.expect("answer");
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(started.elapsed());
                    if !(200..300).contains(&status) {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("client");
        all.extend(l);
        errors += e;
    }
    let requests = all.len();
    Load {
        rps: requests as f64 / elapsed.as_secs_f64(),
        p50: super::percentile_ms(&mut all, 50.0),
        p99: super::percentile_ms(&mut all, 99.0),
        p999: super::percentile_ms(&mut all, 99.9),
        errors,
        requests,
    }
}

/// Percent-encodes a query value.
pub fn encode_query(q: &str) -> String {
    let mut out = String::new();
    for b in q.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
