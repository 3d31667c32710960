//! The node's HQ client: one request per call, every failure classified as transient (retry
//! later) or permanent (retrying the same request cannot help). No retry loop here: the retry
//! policy lives with the uploader. Logs carry ids, counts and statuses, never payloads.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;

use super::wire::{
    ChannelConfigPackage, CustomersCursor, CustomersPage, GlobalConfigPackage, HealthResponse,
    HqErrorBody, MAX_CUSTOMERS_LIMIT, OutcomePage, PREFIX, RefusalBody, RtsRequest, RtsResponse,
    STORE_HEADER, UploadRequest, UploadResponse, WireOperation, jobs,
};
use crate::config::Config;
use crate::domain::operation::OpError;

/// Largest response body the client reads, bytes (an outcome page of 10 000 entries fits).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Longest error message kept from an HQ error answer, characters.
const MAX_ERROR_MESSAGE_CHARS: usize = 500;

/// A failed HQ call, classified for the retry policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HqError {
    /// Worth retrying: HQ unreachable, timed out, overloaded, failing, or the response was
    /// lost after HQ may have done the work (so every HQ call must be idempotent).
    #[error("HQ unavailable: {reason}")]
    Transient {
        /// What happened, for logs and diagnostics.
        reason: String,
        /// How long HQ asked us to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
        /// HQ answered with an HTTP status (it is reachable, but busy or failing).
        answered: bool,
    },
    /// Retrying the same request cannot help: HQ refused it (4xx other than 408 and 429), or
    /// the request could not be built (`status` 0).
    #[error("HQ refused the request ({status}): {message}")]
    Permanent {
        /// HTTP status; 0 when no request was sent.
        status: u16,
        /// HQ's message.
        message: String,
    },
}

impl HqError {
    /// How long HQ asked us to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HqError::Transient { retry_after, .. } => *retry_after,
            HqError::Permanent { .. } => None,
        }
    }

    /// Whether HQ answered at all (as opposed to a network failure or timeout).
    pub fn hq_answered(&self) -> bool {
        match self {
            HqError::Transient { answered, .. } => *answered,
            HqError::Permanent { status, .. } => *status != 0,
        }
    }

    /// Whether a later retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, HqError::Transient { .. })
    }

    fn transient(reason: impl Into<String>) -> Self {
        HqError::Transient {
            reason: reason.into(),
            retry_after: None,
            answered: false,
        }
    }
}

/// What HQ made of a real-time call it answered.
#[derive(Debug, Clone, PartialEq)]
// The shape is part of the contract with the node side, and one value is returned per call,
// never kept in bulk, so boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum RtsOutcome {
    /// Applied (now, or before under the same operation id): HQ's result.
    Applied(RtsResponse),
    /// Refused by HQ (422): validation, conflict, held, or customer unknown. Nothing applied.
    Refused(OpError),
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HqClientError {
    /// The base URL is not an http(s) URL.
    #[error("invalid HQ url {url:?}: {message}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// A client of one HQ for one store.
#[derive(Debug, Clone)]
pub struct HqClient {
    http: reqwest::Client,
    base: Url,
    store_id: String,
    channel_id: String,
    /// Where request latencies go, when the client belongs to a node.
    metrics: Option<crate::telemetry::metrics::Metrics>,
}

impl HqClient {
    /// A client of HQ at `base_url` (e.g. `http://127.0.0.1:8090`) for this store; every
    /// request is bounded by `timeout`.
    pub fn new(
        base_url: &str,
        store_id: impl Into<String>,
        channel_id: impl Into<String>,
        timeout: Duration,
    ) -> Result<HqClient, HqClientError> {
        let invalid = |message: String| HqClientError::InvalidUrl {
            url: base_url.to_string(),
            message,
        };
        let base = Url::parse(base_url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("must be an http or https URL".into()));
        }
        if base.cannot_be_a_base() {
            return Err(invalid("cannot be a base URL".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect from HQ would be a misconfiguration; surface it, do not follow it.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| HqClientError::Build(e.to_string()))?;
        Ok(HqClient {
            http,
            base,
            store_id: store_id.into(),
            channel_id: channel_id.into(),
            metrics: None,
        })
    }

    /// This client, recording every request's latency in `metrics`.
    pub fn with_metrics(mut self, metrics: crate::telemetry::metrics::Metrics) -> HqClient {
        self.metrics = Some(metrics);
        self
    }

    /// A client built from the node configuration (`hq.url`, `hq.request_timeout_ms`, the
    /// node's store and channel).
    pub fn from_config(config: &Config) -> Result<HqClient, HqClientError> {
        Self::new(
            &config.hq.url,
            config.node.store_id.clone(),
            config.node.channel_id.clone(),
            Duration::from_millis(config.hq.request_timeout_ms),
        )
    }

    /// The store this client speaks for.
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// The channel this client speaks for.
    pub fn channel_id(&self) -> &str {
        &self.channel_id
    }

    /// `GET /hq/v1/health`: Ok when HQ answers and accepts work.
    pub async fn health(&self) -> Result<(), HqError> {
        let url = self.url("/health")?;
        let _: HealthResponse = self.send(self.http.get(url), "health").await?;
        Ok(())
    }

    /// `POST /hq/v1/uploads`: sends `ops` as one batch with a fresh batch id. Safe to repeat:
    /// HQ deduplicates by operation id.
    pub async fn upload(&self, ops: Vec<WireOperation>) -> Result<UploadResponse, HqError> {
        let request = UploadRequest {
            store_id: self.store_id.clone(),
            channel_id: self.channel_id.clone(),
            batch_id: uuid::Uuid::now_v7(),
            operations: ops,
        };
        let url = self.url("/uploads")?;
        let count = request.operations.len();
        let response: UploadResponse = self
            .send(self.http.post(url).json(&request), "upload")
            .await
            .inspect_err(|e| {
                tracing::debug!(batch_id = %request.batch_id, operations = count, error = %e, "hq upload failed");
            })?;
        if response.results.len() != count {
            // An answer that does not cover the batch cannot be matched to it; ask again.
            return Err(HqError::transient(format!(
                "upload answer has {} results for {count} operations",
                response.results.len()
            )));
        }
        tracing::debug!(batch_id = %request.batch_id, operations = count, "hq upload answered");
        Ok(response)
    }

    /// `GET /hq/v1/outcomes`: this store's outcomes after cursor `after`, at most `limit`.
    pub async fn outcomes(&self, after: u64, limit: usize) -> Result<OutcomePage, HqError> {
        let mut url = self.url("/outcomes")?;
        url.query_pairs_mut()
            .append_pair("store_id", &self.store_id)
            .append_pair("after", &after.to_string())
            .append_pair("limit", &limit.to_string());
        self.send(self.http.get(url), "outcomes").await
    }

    /// `GET /hq/v1/cdx/1110`: the global configuration package (feature management).
    pub async fn cdx_global(&self) -> Result<GlobalConfigPackage, HqError> {
        let url = self.url(&format!("/cdx/{}", jobs::GLOBAL))?;
        self.send(self.http.get(url), "cdx 1110").await
    }

    /// `GET /hq/v1/cdx/1070`: this client's channel's configuration package.
    pub async fn cdx_channel(&self) -> Result<ChannelConfigPackage, HqError> {
        let mut url = self.url(&format!("/cdx/{}", jobs::CHANNEL))?;
        url.query_pairs_mut()
            .append_pair("channel_id", &self.channel_id);
        self.send(self.http.get(url), "cdx 1070").await
    }

    /// `GET /hq/v1/cdx/1010`: one page of customers after `cursor` (`None` = from version 0,
    /// a full download), at most `limit` (brought into 1..=10 000). Follow `next` until it is
    /// `None`, then keep the page's `version` for the next incremental download.
    pub async fn cdx_customers(
        &self,
        cursor: Option<&CustomersCursor>,
        limit: usize,
    ) -> Result<CustomersPage, HqError> {
        let mut url = self.url(&format!("/cdx/{}", jobs::CUSTOMERS))?;
        {
            let mut q = url.query_pairs_mut();
            match cursor {
                Some(c) => {
                    q.append_pair("after_version", &c.after_version.to_string());
                    if !c.after_account.is_empty() {
                        q.append_pair("after_account", &c.after_account);
                    }
                }
                None => {
                    q.append_pair("after_version", "0");
                }
            }
            q.append_pair("limit", &limit.clamp(1, MAX_CUSTOMERS_LIMIT).to_string());
        }
        let page: CustomersPage = self.send(self.http.get(url), "cdx 1010").await?;
        tracing::debug!(
            customers = page.customers.len(),
            version = page.version,
            more = page.next.is_some(),
            "hq cdx 1010 page received"
        );
        Ok(page)
    }

    /// `POST /hq/v1/rts/operations`: asks HQ to apply `op` now. A 422 is HQ's refusal
    /// ([`RtsOutcome::Refused`]); every other failure is an [`HqError`] classified as usual.
    /// Safe to repeat, and safe to upload afterwards: HQ applies an operation id once.
    pub async fn rts(&self, op: WireOperation) -> Result<RtsOutcome, HqError> {
        let id = op.operation_id;
        let request = RtsRequest {
            store_id: self.store_id.clone(),
            channel_id: self.channel_id.clone(),
            operation: op,
        };
        let url = self.url("/rts/operations")?;
        let answer = self
            .execute(self.http.post(url).json(&request), "rts")
            .await
            .inspect_err(
                |e| tracing::debug!(operation_id = %id, error = %e, "hq rts call failed"),
            )?;
        if answer.status == StatusCode::UNPROCESSABLE_ENTITY {
            let refusal = match answer.body {
                Ok(body) => serde_json::from_slice::<RefusalBody>(&body)
                    .map(OpError::from)
                    .unwrap_or_else(|_| OpError {
                        code: "refused".into(),
                        message: error_message(&body),
                        field: None,
                    }),
                Err(reason) => OpError {
                    code: "refused".into(),
                    message: reason,
                    field: None,
                },
            };
            tracing::debug!(operation_id = %id, code = %refusal.code, "hq refused the rts call");
            return Ok(RtsOutcome::Refused(refusal));
        }
        let response: RtsResponse = decode(answer, "rts")?;
        if response.operation_id != id {
            // An answer about another operation cannot be matched to this one; ask again.
            return Err(HqError::transient(format!(
                "rts answer is for operation {}, not {id}",
                response.operation_id
            )));
        }
        tracing::debug!(operation_id = %id, conflicts = response.conflicts.len(), "hq rts call applied");
        Ok(RtsOutcome::Applied(response))
    }

    fn url(&self, path: &str) -> Result<Url, HqError> {
        let base = self.base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{PREFIX}{path}")).map_err(|e| HqError::Permanent {
            status: 0,
            message: format!("cannot build the HQ url: {e}"),
        })
    }

    /// Sends one request and decodes a 2xx answer; classifies every failure.
    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &'static str,
    ) -> Result<T, HqError> {
        let answer = self.execute(request, what).await?;
        decode(answer, what)
    }

    /// Sends one request and reads the answer, whatever its status; fails only when no answer
    /// arrived.
    async fn execute(
        &self,
        request: reqwest::RequestBuilder,
        what: &'static str,
    ) -> Result<Answer, HqError> {
        let started = std::time::Instant::now();
        let answer = self.execute_unmeasured(request, what).await;
        if let Some(metrics) = &self.metrics {
            // "cdx 1010" -> "cdx_1010": label values stay identifier-like.
            let kind = what.replace(' ', "_");
            let outcome = match &answer {
                Ok(a) if a.status.is_success() => "ok",
                Ok(_) => "error",
                Err(_) => "no_answer",
            };
            metrics.hq_request(&kind, outcome, started.elapsed());
        }
        answer
    }

    async fn execute_unmeasured(
        &self,
        request: reqwest::RequestBuilder,
        what: &'static str,
    ) -> Result<Answer, HqError> {
        let mut response = request
            .header(STORE_HEADER, &self.store_id)
            .send()
            .await
            .map_err(|e| {
                if e.is_builder() {
                    HqError::Permanent {
                        status: 0,
                        message: format!("cannot build the {what} request: {e}"),
                    }
                } else {
                    HqError::transient(format!("{what}: {}", describe(&e)))
                }
            })?;
        let status = response.status();
        let retry_after = parse_retry_after(response.headers());
        let body = read_body(&mut response).await;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// An HTTP answer from HQ: status, `Retry-After`, and the body (or why it was lost).
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Result<Vec<u8>, String>,
}

/// Decodes a 2xx answer; classifies every other one.
fn decode<T: DeserializeOwned>(answer: Answer, what: &'static str) -> Result<T, HqError> {
    let Answer {
        status,
        retry_after,
        body,
    } = answer;
    let body = body.map_err(|reason| HqError::Transient {
        reason: format!("{what}: {reason} (status {})", status.as_u16()),
        retry_after,
        answered: false,
    });
    if status.is_success() {
        // A 2xx whose body is lost or garbled: HQ may have done the work, so this is
        // transient and the caller repeats the (idempotent) request.
        let body = body?;
        return serde_json::from_slice(&body)
            .map_err(|e| HqError::transient(format!("{what}: undecodable answer from HQ: {e}")));
    }
    let message = body
        .ok()
        .map(|b| error_message(&b))
        .unwrap_or_else(|| status.to_string());
    tracing::debug!(
        request = what,
        status = status.as_u16(),
        "hq answered with an error"
    );
    if is_transient_status(status) {
        return Err(HqError::Transient {
            reason: format!("{what}: HQ answered {}: {message}", status.as_u16()),
            retry_after,
            answered: true,
        });
    }
    Err(HqError::Permanent {
        status: status.as_u16(),
        message,
    })
}

/// 5xx, 429 Too Many Requests and 408 Request Timeout are worth retrying.
fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// `Retry-After` in seconds (the HTTP-date form is not used by HQ and is ignored).
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Reads the body, refusing more than [`MAX_RESPONSE_BYTES`].
async fn read_body(response: &mut reqwest::Response) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(format!("answer larger than {MAX_RESPONSE_BYTES} bytes"));
    }
    let mut body = Vec::new();
    // Bounded: each chunk grows `body`, and the loop stops once it passes the limit.
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("answer lost: {}", describe(&e)))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!("answer larger than {MAX_RESPONSE_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// HQ's message from an error body, or the start of the body as text.
fn error_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<HqErrorBody>(body) {
        Ok(e) => format!("{}: {}", e.error, e.message),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    text.chars().take(MAX_ERROR_MESSAGE_CHARS).collect()
}

/// A short description of a transport error, with its kind.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "body failed"
    } else {
        "transport error"
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    // Bounded: error chains are short, and at most four links are shown.
    for _ in 0..4 {
        let Some(s) = source else { break };
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_are_parsed() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_retry_after(&h), None);
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn statuses_are_classified() {
        for s in [500, 502, 503, 504, 429, 408] {
            assert!(is_transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 413, 422] {
            assert!(
                !is_transient_status(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }

    #[test]
    fn bad_urls_are_refused() {
        let t = Duration::from_secs(1);
        assert!(HqClient::new("ftp://x", "S1", "C1", t).is_err());
        assert!(HqClient::new("not a url", "S1", "C1", t).is_err());
        let c = HqClient::new("http://127.0.0.1:8090/", "S1", "C1", t).unwrap();
        assert_eq!(
            c.url("/health").unwrap().as_str(),
            "http://127.0.0.1:8090/hq/v1/health"
        );
    }

    #[test]
    fn error_messages_come_from_the_json_body_and_are_bounded() {
        let body = serde_json::to_vec(&HqErrorBody {
            error: "malformed_body".into(),
            message: "x".repeat(2000),
        })
        .unwrap();
        let m = error_message(&body);
        assert!(m.starts_with("malformed_body: x"));
        assert_eq!(m.chars().count(), MAX_ERROR_MESSAGE_CHARS);
    }
}
