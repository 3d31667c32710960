//! A small HTTP client for the node's local API, for the operator's commands.
//!
//! The node's address comes from `--node URL`, else from the configuration file's
//! `node.listen`. A token from `--token` or `OUTPOST_TOKEN` is sent as a bearer token; with
//! none, no `Authorization` header is sent. A refusal is a [`ClientError::Api`] carrying the
//! node's JSON error (error code, field, rule, message).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use clap::Args;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use outpost::config::Config;

/// How long a command waits for the node to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one ordinary request may take (a CDX refresh talks to HQ, so this is generous).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest silence while a large answer (a backup) streams in.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the node is and how to authenticate to it.
#[derive(Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// Base URL of the node's local API [default: http:// + node.listen of the config file].
    #[arg(long, global = true, value_name = "URL")]
    pub node: Option<String>,
    /// Bearer token for the node's API; none is sent when absent.
    #[arg(
        long,
        global = true,
        env = "OUTPOST_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

/// The node's JSON error answer.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// The error code, e.g. `not_found`.
    pub error: String,
    /// The field at fault, when named.
    pub field: Option<String>,
    /// The rule broken, when named.
    pub rule: Option<String>,
    /// Plain-words explanation.
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the node answered {}: {}", self.status, self.message)?;
        write!(f, " (error: {}", self.error)?;
        if let Some(field) = &self.field {
            write!(f, ", field: {field}")?;
        }
        if let Some(rule) = &self.rule {
            write!(f, ", rule: {rule}")?;
        }
        write!(f, ")")
    }
}

/// Why a call to the node did not give an answer to use.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection, or it broke.
    #[error("cannot reach the node at {url} (is it running? `outpost serve`)")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why (shown after this error in the chain).
        #[source]
        source: reqwest::Error,
    },
    /// The node refused the request.
    #[error("{0}")]
    Api(ApiFailure),
    /// The answer could not be read.
    #[error("the node's answer to {path} could not be read: {message}")]
    BadAnswer {
        /// The path called.
        path: String,
        /// Why.
        message: String,
    },
}

impl ClientError {
    /// The HTTP status of a refusal, if the node refused.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api(f) => Some(f.status),
            _ => None,
        }
    }
}

/// A client of one node's local API.
#[derive(Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

/// The URL a node listening on `listen` is reached at from this machine: an unspecified
/// address (0.0.0.0, ::) is reached over loopback.
pub fn url_for_listen(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

impl NodeClient {
    /// A client for the node named by `args`, or by the configuration file at `config`.
    pub fn new(config: &Path, args: &NodeArgs) -> anyhow::Result<NodeClient> {
        let base = match &args.node {
            Some(url) => url.clone(),
            None => {
                let loaded = Config::load(config).map_err(|e| {
                    anyhow::anyhow!(
                        "give the node's URL with --node, or a readable configuration with \
                         --config: {e}"
                    )
                })?;
                url_for_listen(loaded.node.listen)
            }
        };
        Self::for_url(&base, args.token.as_deref())
    }

    /// A client for the node at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn for_url(base: &str, token: Option<&str>) -> anyhow::Result<NodeClient> {
        let mut base =
            Url::parse(base).map_err(|e| anyhow::anyhow!("--node {base:?} is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            anyhow::bail!("--node must be an http or https URL, not {base}");
        }
        // Joining relative paths keeps any path prefix only when the base ends with '/'.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            // The node is on this machine or the store LAN: a proxy would only get in the way.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build an HTTP client: {e}"))?;
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        Ok(NodeClient {
            http,
            base,
            token: token.map(str::to_string),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        match self.base.join(path.trim_start_matches('/')) {
            Ok(url) => url.to_string(),
            Err(_) => format!("{}{}", self.base.as_str().trim_end_matches('/'), path),
        }
    }

    /// Sends a request and returns the response if it is a success; a refusal becomes
    /// [`ClientError::Api`]. `timeout: None` is for streams of unknown length.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = self.url(path);
        let mut req = self.http.request(method, &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        if let Some(timeout) = timeout {
            req = req.timeout(timeout);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable { url, source })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(ClientError::Api(failure(path, resp).await))
    }

    /// Sends a request and reads the JSON answer.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let resp = self.send(method, path, body, Some(REQUEST_TIMEOUT)).await?;
        let bytes = resp.bytes().await.map_err(|e| ClientError::BadAnswer {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
            path: path.to_string(),
            message: format!("not JSON: {e}"),
        })
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, path, None).await
    }

    /// `POST path` (no body) as JSON.
    pub async fn post(&self, path: &str) -> Result<Value, ClientError> {
        self.json(Method::POST, path, None).await
    }
}

/// The node's error answer, read as JSON when it is JSON.
async fn failure(path: &str, resp: reqwest::Response) -> ApiFailure {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let body: Option<Value> = serde_json::from_str(&text).ok();
    let field = |k: &str| {
        body.as_ref()
            .and_then(|b| b.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    ApiFailure {
        status,
        error: field("error").unwrap_or_else(|| "http_error".into()),
        field: field("field"),
        rule: field("rule"),
        message: field("message").unwrap_or_else(|| {
            let text = text.trim();
            if text.is_empty() {
                format!("{path}: no explanation given")
            } else {
                format!("{path}: {}", text.chars().take(300).collect::<String>())
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_are_reached_over_loopback() {
        assert_eq!(
            url_for_listen("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            url_for_listen("[::]:81".parse().unwrap()),
            "http://[::1]:81"
        );
        assert_eq!(
            url_for_listen("10.1.2.3:8080".parse().unwrap()),
            "http://10.1.2.3:8080"
        );
    }

    #[test]
    fn paths_join_under_the_base() {
        let c = NodeClient::for_url("http://127.0.0.1:1/prefix", None).unwrap();
        assert_eq!(c.url("/diag"), "http://127.0.0.1:1/prefix/diag");
        let c = NodeClient::for_url("http://127.0.0.1:1", Some("  ")).unwrap();
        assert_eq!(c.url("/diag"), "http://127.0.0.1:1/diag");
        assert!(c.token.is_none());
        assert!(NodeClient::for_url("ftp://x", None).is_err());
    }
}
