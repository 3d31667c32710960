//! Shared plumbing of the integration tests: an in-process node on a temp dir, the real binary
//! as a child process, and a small JSON client over loopback. Every wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use outpost::config::Config;
use outpost::node::Node;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Longest wait for a node to start, stop, or answer one request.
pub const WAIT: Duration = Duration::from_secs(15);

/// An HQ address where nothing answers: a loopback port held bound (so nothing else can take
/// it) but not listening, so every connection is refused at once. Tests of the till's API point
/// the node here, so that operations stay `pending` and no test data reaches an HQ emulator
/// that may be running on the machine's default HQ port.
pub fn dead_hq_url() -> String {
    static DEAD: OnceLock<(tokio::net::TcpSocket, SocketAddr)> = OnceLock::new();
    let (_, addr) = DEAD.get_or_init(|| {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        let addr = socket.local_addr().expect("local addr");
        (socket, addr)
    });
    format!("http://{addr}")
}

/// `Config::for_dir(dir)` with HQ unreachable (see [`dead_hq_url`]).
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config::for_dir(dir);
    config.hq.url = dead_hq_url();
    config
}

/// The raw token of the test till (role `pos`).
pub const POS_TOKEN: &str = "pos-token-for-tests-7c1e0f9a3b";
/// The raw token of the test technician (role `technician`).
pub const TECH_TOKEN: &str = "tech-token-for-tests-52d8aa61c4";
/// A token no test node accepts.
pub const WRONG_TOKEN: &str = "wrong-token-for-tests-0000000000";

/// The `[[auth.tokens]]` entries of the test till and technician.
pub fn test_tokens() -> Vec<outpost::config::TokenConfig> {
    use outpost::api::auth::hash_token;
    use outpost::config::{Role, TokenConfig};
    vec![
        TokenConfig {
            name: "till-1".into(),
            role: Role::Pos,
            sha256: hash_token(POS_TOKEN),
        },
        TokenConfig {
            name: "tech-1".into(),
            role: Role::Technician,
            sha256: hash_token(TECH_TOKEN),
        },
    ]
}

/// [`test_config`] with the test tokens configured (authentication on).
pub fn auth_config(dir: &Path) -> Config {
    let mut config = test_config(dir);
    config.auth.tokens = test_tokens();
    config
}

/// The TOML of [`test_tokens`], for a binary's configuration file.
pub fn test_tokens_toml() -> String {
    test_tokens()
        .iter()
        .map(|t| {
            format!(
                "[[auth.tokens]]\nname = {:?}\nrole = {:?}\nsha256 = {:?}\n\n",
                t.name,
                t.role.as_str(),
                t.sha256
            )
        })
        .collect()
}

/// Starts an in-process node on `dir` (loopback, ephemeral port, HQ unreachable).
pub async fn start_node(dir: &Path) -> Node {
    start_node_with(test_config(dir)).await
}

/// Starts an in-process node with `config`.
pub async fn start_node_with(config: Config) -> Node {
    tokio::time::timeout(WAIT, Node::start(&config))
        .await
        .expect("node did not start in time")
        .expect("node failed to start")
}

/// Stops an in-process node, bounded in time.
pub async fn stop_node(node: Node) {
    tokio::time::timeout(WAIT, node.shutdown())
        .await
        .expect("node did not stop in time")
        .expect("node failed to stop cleanly");
}

/// Sum of operations in every state, read from the store directly.
pub fn op_total(node: &Node) -> u64 {
    node.store()
        .operation_counts()
        .expect("operation counts")
        .iter()
        .map(|(_, n)| n)
        .sum()
}

/// A reqwest client for loopback: no proxy, bounded timeouts.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(WAIT)
        .build()
        .expect("reqwest client")
}

/// A response: status, content type and body (parsed as JSON when it is JSON, else
/// `Value::String` of the raw text).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Value,
    pub is_json: bool,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    /// Panics unless the status is `want`; returns the body.
    #[track_caller]
    pub fn expect(&self, want: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            want,
            "unexpected status; body: {}",
            self.body
        );
        &self.body
    }

    /// Panics unless this is an error answer with `status`, naming `field` and `rule`, as JSON
    /// with the fields `error`, `field`, `rule` and `message`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, field: &str, rule: &str) {
        if let Some(why) = self.error_mismatch(status, field, rule) {
            panic!("{why}");
        }
    }

    /// Why this is not an error answer with `status` naming `field` and `rule` (as JSON with
    /// non-empty `error`, `field`, `rule` and `message`), or `None` when it is one.
    pub fn error_mismatch(&self, status: u16, field: &str, rule: &str) -> Option<String> {
        if self.status.as_u16() != status {
            return Some(format!(
                "status {} instead of {status}; body: {}",
                self.status, self.body
            ));
        }
        if let Some(why) = self.json_error_mismatch() {
            return Some(why);
        }
        if self.body["field"] != field || self.body["rule"] != rule {
            return Some(format!(
                "want field {field:?} rule {rule:?}; body: {}",
                self.body
            ));
        }
        None
    }

    /// Why the body is not a JSON error with non-empty `error`, `field`, `rule`, `message`.
    pub fn json_error_mismatch(&self) -> Option<String> {
        let ct = self.content_type.as_deref().unwrap_or_default();
        if !self.is_json || !ct.starts_with("application/json") {
            return Some(format!("error body is not JSON ({ct:?}): {}", self.body));
        }
        for key in ["error", "field", "rule", "message"] {
            if self.body[key].as_str().is_none_or(str::is_empty) {
                return Some(format!(
                    "error body lacks a non-empty {key:?}: {}",
                    self.body
                ));
            }
        }
        None
    }
}

/// A JSON client of one node's local API.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    /// The `Authorization` header sent with every request, if any.
    pub authorization: Option<String>,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        assert!(
            addr.ip().is_loopback(),
            "tests talk to loopback only, not {addr}"
        );
        Api {
            client: http_client(),
            base: format!("http://{addr}"),
            authorization: None,
        }
    }

    /// This client, sending `Authorization: Bearer <token>`.
    pub fn with_token(&self, token: &str) -> Api {
        self.with_authorization(&format!("Bearer {token}"))
    }

    /// This client, sending `Authorization: <value>`.
    pub fn with_authorization(&self, value: &str) -> Api {
        Api {
            authorization: Some(value.to_string()),
            ..self.clone()
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `method path` with an optional raw body (as `application/json`).
    pub async fn raw(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Resp {
        let mut req = self.client.request(method, self.url(path));
        if let Some(auth) = &self.authorization {
            req = req.header("authorization", auth);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        read(resp).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.raw(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.raw(Method::POST, path, Some(body.to_string().into_bytes()))
            .await
    }

    pub async fn post_empty(&self, path: &str) -> Resp {
        self.raw(Method::POST, path, None).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.raw(Method::PATCH, path, Some(body.to_string().into_bytes()))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.raw(Method::PUT, path, Some(body.to_string().into_bytes()))
            .await
    }

    /// Creates a customer; panics unless 202. Returns the acceptance body.
    pub async fn create_customer(&self, fields: &Value) -> Value {
        self.post("/v1/customers", fields).await.expect(202).clone()
    }

    /// Reads a customer; panics unless 200.
    pub async fn customer(&self, customer_ref: &str) -> Value {
        self.get(&format!("/v1/customers/{customer_ref}"))
            .await
            .expect(200)
            .clone()
    }

    /// Searches; panics unless 200. Returns the customer refs found, in answer order.
    pub async fn search_refs(&self, q: &str) -> Vec<String> {
        let url = reqwest::Url::parse_with_params(&self.url("/v1/customers"), &[("q", q)])
            .expect("search url");
        let mut req = self.client.get(url);
        if let Some(auth) = &self.authorization {
            req = req.header("authorization", auth);
        }
        let resp = req.send().await.expect("search");
        let resp = read(resp).await;
        resp.expect(200)["customers"]
            .as_array()
            .expect("customers array")
            .iter()
            .map(|c| {
                c["customer_ref"]
                    .as_str()
                    .expect("customer_ref")
                    .to_string()
            })
            .collect()
    }

    /// Every operation, paging through `GET /v1/sync/operations` with `limit` per page.
    pub async fn all_operations(&self, query: &str, limit: usize) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut after: Option<u64> = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "paging did not end");
            let mut path = format!("/v1/sync/operations?limit={limit}");
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(a) = after {
                path.push_str(&format!("&after={a}"));
            }
            let page = self.get(&path).await.expect(200).clone();
            let ops = page["operations"]
                .as_array()
                .expect("operations array")
                .clone();
            assert!(ops.len() <= limit, "page longer than limit {limit}");
            let last_seq = ops.last().map(|o| o["seq"].as_u64().expect("seq"));
            out.extend(ops);
            match page["next_after"].as_u64() {
                Some(next) => {
                    assert_eq!(
                        Some(next),
                        last_seq,
                        "next_after must be the last seq of the page"
                    );
                    assert!(after.is_none_or(|a| next > a), "cursor did not advance");
                    after = Some(next);
                }
                None => break,
            }
        }
        out
    }

    /// Number of operations the API lists (all states).
    pub async fn op_count(&self) -> usize {
        self.all_operations("", 500).await.len()
    }
}

async fn read(resp: reqwest::Response) -> Resp {
    let status = resp.status();
    let headers = resp.headers().clone();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.bytes().await.expect("response body");
    let (body, is_json) = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => (v, true),
        Err(_) => (
            Value::String(String::from_utf8_lossy(&bytes).into_owned()),
            false,
        ),
    };
    Resp {
        status,
        content_type,
        body,
        is_json,
        headers,
    }
}

/// A valid new customer.
pub fn customer(first: &str, last: &str) -> Value {
    json!({ "first_name": first, "last_name": last })
}

/// A valid address.
pub fn address() -> Value {
    json!({
        "street": "Narva mnt 5",
        "city": "Tallinn",
        "postal_code": "10117",
        "country": "EST",
        "purpose": "home",
        "is_primary": true
    })
}

/// Polls `check` until it returns `Some`, every 20 ms, for at most `within`.
pub async fn poll<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a [`Binary`]'s configuration file says beyond the fixed parts.
#[derive(Debug, Clone)]
pub struct BinaryConfig {
    /// `node.listen`.
    pub listen: String,
    /// `hq.url` (default: [`dead_hq_url`]).
    pub hq_url: Option<String>,
    /// `log.filter`.
    pub log_filter: String,
    /// `log.format`.
    pub log_format: String,
    /// TOML appended after the `[log]` section (e.g. `[[auth.tokens]]` entries).
    pub extra: String,
}

impl Default for BinaryConfig {
    fn default() -> Self {
        BinaryConfig {
            listen: "127.0.0.1:0".into(),
            hq_url: None,
            log_filter: "warn".into(),
            log_format: "text".into(),
            extra: String::new(),
        }
    }
}

/// The real `outpost` binary running as a child process. Killed (SIGKILL) on drop.
pub struct Binary {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    stderr_log: PathBuf,
}

impl Binary {
    /// Writes a config file into `dir` (listen 127.0.0.1:0, data in `dir/data`) and starts
    /// `outpost serve --config` on it; returns once the node printed its address.
    pub fn spawn(dir: &Path) -> Binary {
        match Binary::try_spawn(dir) {
            Ok(binary) => binary,
            Err(e) => panic!("{e}"),
        }
    }

    /// As [`Binary::spawn`], but a node that exits before printing its address is an `Err`
    /// describing its exit status and stderr.
    pub fn try_spawn(dir: &Path) -> Result<Binary, String> {
        Binary::try_spawn_with(dir, &BinaryConfig::default())
    }

    /// As [`Binary::try_spawn`], with the listen address, logging and extra sections of
    /// `options`.
    pub fn try_spawn_with(dir: &Path, options: &BinaryConfig) -> Result<Binary, String> {
        let data_dir = dir.join("data");
        let config_path = dir.join("outpost.toml");
        let config = format!(
            "[node]\nstore_id = \"S0001\"\nchannel_id = \"CH0001\"\nlisten = {listen}\n\
             data_dir = {data}\n\n[hq]\nurl = {hq}\n\n[cdx]\ninterval_secs = 0\n\n\
             [log]\nfilter = {filter}\nformat = {format}\n\n{extra}",
            listen = toml_string(&options.listen),
            data = toml_string(&data_dir.display().to_string()),
            hq = toml_string(options.hq_url.as_deref().unwrap_or(&dead_hq_url())),
            filter = toml_string(&options.log_filter),
            format = toml_string(&options.log_format),
            extra = options.extra,
        );
        std::fs::write(&config_path, config).expect("write config");
        let stderr_log = dir.join(format!("stderr-{}.log", unique()));
        let stderr = std::fs::File::create(&stderr_log).expect("stderr log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_outpost"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .env_remove("RUST_LOG");
        for (var, _) in outpost::config::ENV_OVERRIDES {
            cmd.env_remove(var);
        }
        let mut child = cmd.spawn().expect("spawn outpost");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        // Reads stdout to its end (so the child never blocks on a full pipe), passing lines on.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut binary = Binary {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            stderr_log,
        };
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("outpost listening on http://") {
                        break rest.parse::<SocketAddr>().expect("listen address");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Stdout closed: the process is ending. Wait for it, bounded.
                    let status = binary.wait_exit(WAIT);
                    return Err(format!(
                        "outpost exited before printing its address: {status:?}; stderr:\n{}",
                        binary.stderr()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let status = binary.child.try_wait().ok().flatten();
                    return Err(format!(
                        "outpost did not print its address in {WAIT:?}; exit: {status:?}; \
                         stderr:\n{}",
                        binary.stderr()
                    ));
                }
            }
        };
        assert!(
            addr.ip().is_loopback(),
            "binary listens on {addr}, not loopback"
        );
        binary.addr = addr;
        Ok(binary)
    }

    /// Waits up to `within` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM (a clean shutdown request) and waits, bounded, for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed");
        self.wait_exit(WAIT).unwrap_or_else(|| {
            panic!(
                "outpost did not stop on SIGTERM; stderr:\n{}",
                self.stderr()
            )
        })
    }

    pub fn api(&self) -> Api {
        Api::new(self.addr)
    }

    /// What the child wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        // std's Child::kill sends SIGKILL on Unix.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn toml_string(s: &str) -> String {
    // A TOML basic string: escape backslashes and quotes.
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// A customer as HQ's job 1010 brings it down (origin: this store's `S0001`, when `origin_ref`
/// is given), turned into a copy the way the downloader turns it (`sync::cdx::copy_from_wire`).
pub fn hq_copy(
    account: &str,
    origin_ref: Option<&str>,
    fields: outpost::domain::NewCustomer,
    now_ms: i64,
) -> outpost::store::cdx::HqCopy {
    outpost::sync::cdx::copy_from_wire(
        outpost::hq::wire::HqCustomerRecord {
            account_number: account.into(),
            origin_store_id: origin_ref.map(|_| "S0001".to_string()),
            origin_customer_ref: origin_ref.map(str::to_string),
            fields,
            addresses: Vec::new(),
            contacts: Vec::new(),
            affiliations: Vec::new(),
            attributes: Vec::new(),
            version: 1,
        },
        "S0001",
        now_ms,
    )
}

/// A customer's own fields: a first and last name and an e-mail, nothing else.
pub fn fields(first: &str, last: &str, email: &str) -> outpost::domain::NewCustomer {
    outpost::domain::NewCustomer {
        first_name: first.into(),
        last_name: last.into(),
        email: Some(email.into()),
        phone: None,
        customer_group: None,
        language: None,
    }
}

/// A store's writer as the node starts it (store `S0001`, the node's group wait), with the
/// small bounds of a test and the given merge settings.
pub fn start_writer(
    store: &outpost::store::Store,
    merge: outpost::store::writer::MergeOptions,
) -> (
    outpost::store::writer::WriterHandle,
    std::thread::JoinHandle<()>,
) {
    outpost::store::writer::spawn(
        store.clone(),
        outpost::store::writer::WriterOptions {
            store_id: "S0001".into(),
            queue: 64,
            group_commit_max: 16,
            merge,
            group_wait: Duration::from_micros(
                outpost::config::Limits::default().group_commit_wait_us,
            ),
            replies_on: Some(tokio::runtime::Handle::current()),
        },
    )
    .expect("spawn writer")
}

/// Applies a 1010 download of `copies` (package `version`, made at `now_ms`) through the writer.
pub async fn download(
    writer: &outpost::store::writer::WriterHandle,
    version: u64,
    copies: Vec<outpost::store::cdx::HqCopy>,
    now_ms: i64,
) {
    writer
        .execute(outpost::store::Command::ApplyCustomers {
            package: outpost::store::cdx::HeldPackage {
                version,
                received_at_ms: now_ms,
                generated_at_ms: now_ms,
                body: serde_json::json!({ "customers": copies.len() }),
            },
            copies,
        })
        .await
        .expect("download applied");
}

/// Creates a customer through the writer: its temporary reference and the create's id.
pub async fn submit_create(
    writer: &outpost::store::writer::WriterHandle,
    fields: outpost::domain::NewCustomer,
) -> (String, outpost::domain::OperationId) {
    use outpost::store::{Command, Outcome, Submission};
    let out = writer
        .execute(Command::Submit(Submission::NewCustomer(fields)))
        .await
        .expect("create acknowledged");
    match out {
        Outcome::Accepted {
            customer_ref,
            operation_id,
            ..
        } => (customer_ref, operation_id),
        other => panic!("unexpected outcome {other:?}"),
    }
}

/// The references of the customers a store's search finds, in its order.
pub fn search_refs(store: &outpost::store::Store, q: &str, limit: usize) -> Vec<String> {
    store
        .search(q, limit)
        .expect("search")
        .into_iter()
        .map(|c| c.view.customer_ref)
        .collect()
}

/// Every (term, customer) entry of a store's main search index, with the time of change it
/// holds, read from an open table.
pub fn index_entries(
    index: &impl redb::ReadableTable<(&'static str, &'static str), i64>,
) -> std::collections::BTreeMap<(String, String), i64> {
    let mut have = std::collections::BTreeMap::new();
    for row in index.iter().expect("iter") {
        let (k, time) = row.expect("row");
        let (term, customer) = k.value();
        have.insert((term.to_string(), customer.to_string()), time.value());
    }
    have
}
