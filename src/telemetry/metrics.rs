//! Prometheus metrics of one node.
//!
//! Each node owns its own recorder and registry ([`Metrics`]), and records through it directly
//! instead of through the `metrics` crate's global recorder: a process can hold several nodes
//! (the integration tests start many in one process, and the HQ emulator runs beside them), and
//! one global registry would mix their counts. Counters and histograms are updated where things
//! happen (the HTTP middleware, the HQ client, the server's connections); the gauges and the
//! counters that other parts already keep (queue depth, CDX ages, upload and real-time tallies)
//! are read at scrape time, so they cannot drift from what `/diag` shows.
//!
//! Labels carry route templates, methods, states and job numbers only: bounded sets, and never
//! customer data.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Latency buckets, seconds: from a loopback answer (sub-millisecond) to an HQ timeout.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes (the
/// recorder keeps raw samples until then).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// Metric names, each with its help text. Every name the node exports is here.
pub mod names {
    /// HTTP requests answered, by route template, method and status.
    pub const HTTP_REQUESTS: &str = "outpost_http_requests_total";
    /// HTTP request latency, by route template and method.
    pub const HTTP_DURATION: &str = "outpost_http_request_duration_seconds";
    /// Requests being served.
    pub const HTTP_IN_FLIGHT: &str = "outpost_http_requests_in_flight";
    /// Open TCP connections of the local API.
    pub const HTTP_CONNECTIONS: &str = "outpost_http_connections_open";
    /// Connections closed because their headers did not arrive in time.
    pub const HTTP_HEADER_TIMEOUTS: &str = "outpost_http_header_timeouts_total";
    /// Operations in the queue, by state.
    pub const QUEUE_OPERATIONS: &str = "outpost_queue_operations";
    /// Age of the oldest pending operation.
    pub const QUEUE_OLDEST_PENDING: &str = "outpost_queue_oldest_pending_age_seconds";
    /// Upload batches, by result.
    pub const UPLOAD_BATCHES: &str = "outpost_upload_batches_total";
    /// Uploaded operations, by result.
    pub const UPLOAD_OPERATIONS: &str = "outpost_upload_operations_total";
    /// Outcomes read from HQ's feed, by result.
    pub const HQ_OUTCOMES: &str = "outpost_hq_outcomes_total";
    /// Upload failures since the last success.
    pub const UPLOAD_CONSECUTIVE_FAILURES: &str = "outpost_upload_consecutive_failures";
    /// When an upload last succeeded.
    pub const UPLOAD_LAST_SUCCESS: &str = "outpost_upload_last_success_timestamp_seconds";
    /// Whether HQ answered the last call.
    pub const HQ_REACHABLE: &str = "outpost_hq_reachable";
    /// HQ request latency, by request kind and outcome.
    pub const HQ_DURATION: &str = "outpost_hq_request_duration_seconds";
    /// Age of the package held per CDX job.
    pub const CDX_JOB_AGE: &str = "outpost_cdx_job_age_seconds";
    /// Version of the package held per CDX job.
    pub const CDX_JOB_VERSION: &str = "outpost_cdx_job_version";
    /// Real-time calls to HQ, by result.
    pub const REALTIME_CALLS: &str = "outpost_realtime_calls_total";
    /// The node's version, as a label.
    pub const BUILD_INFO: &str = "outpost_build_info";

    /// Every counter, with its help text.
    pub const COUNTERS: [(&str, &str); 6] = [
        (
            HTTP_REQUESTS,
            "HTTP requests answered, by route template, method and status.",
        ),
        (
            HTTP_HEADER_TIMEOUTS,
            "Connections closed because a request's headers did not arrive within limits.header_read_timeout_ms.",
        ),
        (
            UPLOAD_BATCHES,
            "Upload batches sent to HQ: ok = HQ answered, retried = failed and will be sent again.",
        ),
        (
            UPLOAD_OPERATIONS,
            "Operations sent to HQ: ok = staged, retried = in a batch that failed and will be sent again, failed = refused by HQ.",
        ),
        (
            HQ_OUTCOMES,
            "Outcomes read from HQ's feed: completed, failed (HQ's sync job refused the record), held (behind a failed one).",
        ),
        (
            REALTIME_CALLS,
            "Real-time calls to HQ: applied, refused by HQ, or fallback (HQ unreachable, queued instead).",
        ),
    ];

    /// Every gauge, with its help text.
    pub const GAUGES: [(&str, &str); 10] = [
        (HTTP_IN_FLIGHT, "HTTP requests being served."),
        (HTTP_CONNECTIONS, "Open TCP connections of the local API."),
        (
            QUEUE_OPERATIONS,
            "Operations held by the node, by state (pending, uploaded, completed, failed, held).",
        ),
        (
            QUEUE_OLDEST_PENDING,
            "Age of the oldest operation not yet uploaded to HQ; 0 when none is pending.",
        ),
        (
            UPLOAD_CONSECUTIVE_FAILURES,
            "Upload attempts that failed since the last success.",
        ),
        (
            UPLOAD_LAST_SUCCESS,
            "When an upload batch last succeeded (Unix time); absent until one has.",
        ),
        (
            HQ_REACHABLE,
            "1 when HQ answered the last call, 0 when it did not; absent before the first call.",
        ),
        (
            CDX_JOB_AGE,
            "Age of the configuration package held for a CDX job; absent until one is held.",
        ),
        (
            CDX_JOB_VERSION,
            "Version of the configuration package held for a CDX job.",
        ),
        (
            BUILD_INFO,
            "Always 1; the version label names the node's build.",
        ),
    ];

    /// Every histogram, with its help text.
    pub const HISTOGRAMS: [(&str, &str); 2] = [
        (
            HTTP_DURATION,
            "Time to answer a request of the local API, by route template and method.",
        ),
        (
            HQ_DURATION,
            "Time HQ took to answer a request, by request kind and outcome (ok = 2xx, error = another status, no_answer = unreachable or timed out).",
        ),
    ];
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    in_flight: Gauge,
    connections: Gauge,
    header_timeouts: Counter,
    /// The request metrics' handles by route template, registered once each: registering on
    /// every request built and hashed its labels (about a microsecond of every request).
    http: RwLock<HashMap<Box<str>, Vec<HttpSeries>>>,
}

/// The request metrics of one route template and method.
struct HttpSeries {
    method: &'static str,
    duration: Histogram,
    /// Requests answered, by status: the few statuses one route answers.
    answered: Vec<(u16, Counter)>,
}

impl HttpSeries {
    /// The counter of `status`, if registered.
    fn answered(&self, status: u16) -> Option<&Counter> {
        self.answered
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, c)| c)
    }
}

/// The metrics registry of one node; cheap to clone (all clones share it).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Decrements a gauge when dropped: a request or connection that ends, however it ends.
pub struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, (*v).to_owned()))
        .collect();
    Key::from_parts(name, labels)
}

impl Metrics {
    /// A fresh registry with every metric described.
    pub fn new() -> Metrics {
        let builder = PrometheusBuilder::new();
        // Both latency metrics end in `_seconds`: real histograms (bucketed), not summaries, so
        // that several nodes' figures can be aggregated.
        let builder = match builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        {
            Ok(b) => b,
            // Only an empty bucket list is refused, and this one is not empty.
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        for (name, help) in names::COUNTERS {
            recorder.describe_counter(KeyName::from_const_str(name), None, help.into());
        }
        for (name, help) in names::GAUGES {
            recorder.describe_gauge(KeyName::from_const_str(name), None, help.into());
        }
        for (name, help) in names::HISTOGRAMS {
            recorder.describe_histogram(KeyName::from_const_str(name), None, help.into());
        }
        let in_flight = recorder.register_gauge(&key(names::HTTP_IN_FLIGHT, &[]), &METADATA);
        let connections = recorder.register_gauge(&key(names::HTTP_CONNECTIONS, &[]), &METADATA);
        let header_timeouts =
            recorder.register_counter(&key(names::HTTP_HEADER_TIMEOUTS, &[]), &METADATA);
        // Present from the start, so a scrape shows zeros rather than nothing.
        in_flight.set(0.0);
        connections.set(0.0);
        header_timeouts.increment(0);
        recorder
            .register_gauge(
                &key(names::BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]),
                &METADATA,
            )
            .set(1.0);
        Metrics {
            inner: Arc::new(Inner {
                recorder,
                handle,
                in_flight,
                connections,
                header_timeouts,
                http: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The counter `name` with `labels`.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.inner
            .recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    /// The gauge `name` with `labels`.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.inner
            .recorder
            .register_gauge(&key(name, labels), &METADATA)
    }

    /// The histogram `name` with `labels`.
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        self.inner
            .recorder
            .register_histogram(&key(name, labels), &METADATA)
    }

    /// A request of the local API was answered. The labels are bounded sets (route templates,
    /// method labels, the statuses the node answers), so the handles kept are too.
    pub fn http_request(&self, route: &str, method: &'static str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        {
            let http = self
                .inner
                .http
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(series) = http
                .get(route)
                .and_then(|all| all.iter().find(|s| s.method == method))
                && let Some(answered) = series.answered(status)
            {
                answered.increment(1);
                series.duration.record(seconds);
                return;
            }
        }
        let mut http = self
            .inner
            .http
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let all = http.entry(route.into()).or_default();
        let at = match all.iter().position(|s| s.method == method) {
            Some(at) => at,
            None => {
                all.push(HttpSeries {
                    method,
                    duration: self.histogram(
                        names::HTTP_DURATION,
                        &[("route", route), ("method", method)],
                    ),
                    answered: Vec::new(),
                });
                all.len() - 1
            }
        };
        let series = &mut all[at];
        let answered = match series.answered(status) {
            // Another request registered it between the two locks.
            Some(counter) => counter.clone(),
            None => {
                let counter = self.counter(
                    names::HTTP_REQUESTS,
                    &[
                        ("route", route),
                        ("method", method),
                        ("status", &status.to_string()),
                    ],
                );
                series.answered.push((status, counter.clone()));
                counter
            }
        };
        answered.increment(1);
        series.duration.record(seconds);
    }

    /// A request started; it counts as in flight until the guard drops.
    pub fn request_started(&self) -> GaugeGuard {
        self.inner.in_flight.increment(1.0);
        GaugeGuard(self.inner.in_flight.clone())
    }

    /// A connection opened; it counts as open until the guard drops.
    pub fn connection_opened(&self) -> GaugeGuard {
        self.inner.connections.increment(1.0);
        GaugeGuard(self.inner.connections.clone())
    }

    /// A connection was closed for sending its headers too slowly.
    pub fn header_timeout(&self) {
        self.inner.header_timeouts.increment(1);
    }

    /// A request of kind `request` to HQ ended: `ok` (2xx), `error` (another status) or
    /// `no_answer` (unreachable, timed out, or the answer was lost).
    pub fn hq_request(&self, request: &str, outcome: &'static str, elapsed: Duration) {
        self.histogram(
            names::HQ_DURATION,
            &[("request", request), ("outcome", outcome)],
        )
        .record(elapsed.as_secs_f64());
    }

    /// Folds pending histogram samples into their buckets (run every [`UPKEEP_INTERVAL`]).
    pub fn upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    /// Everything, in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        self.inner.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_registries_do_not_mix() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.http_request("/healthz", "GET", 200, Duration::from_millis(2));
        let text_a = a.render();
        let text_b = b.render();
        assert!(
            text_a.contains(
                r#"outpost_http_requests_total{route="/healthz",method="GET",status="200"} 1"#
            ),
            "{text_a}"
        );
        assert!(!text_b.contains("outpost_http_requests_total{"), "{text_b}");
        assert!(text_a.contains("# TYPE outpost_http_request_duration_seconds histogram"));
        assert!(text_a.contains("# HELP outpost_http_requests_total "));
    }

    #[test]
    fn each_route_method_and_status_counted_apart_as_registered_once() {
        let m = Metrics::new();
        for status in [200, 202, 200, 404, 200] {
            m.http_request("/v1/customers", "POST", status, Duration::from_millis(1));
        }
        m.http_request("/v1/customers", "GET", 200, Duration::from_millis(1));
        m.http_request("/healthz", "GET", 200, Duration::from_millis(1));
        let text = m.render();
        for line in [
            r#"outpost_http_requests_total{route="/v1/customers",method="POST",status="200"} 3"#,
            r#"outpost_http_requests_total{route="/v1/customers",method="POST",status="202"} 1"#,
            r#"outpost_http_requests_total{route="/v1/customers",method="POST",status="404"} 1"#,
            r#"outpost_http_requests_total{route="/v1/customers",method="GET",status="200"} 1"#,
            r#"outpost_http_requests_total{route="/healthz",method="GET",status="200"} 1"#,
            r#"outpost_http_request_duration_seconds_count{route="/v1/customers",method="POST"} 5"#,
            r#"outpost_http_request_duration_seconds_count{route="/v1/customers",method="GET"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn guards_decrement() {
        let m = Metrics::new();
        let g1 = m.request_started();
        let g2 = m.request_started();
        assert!(m.render().contains("outpost_http_requests_in_flight 2"));
        drop(g1);
        drop(g2);
        assert!(m.render().contains("outpost_http_requests_in_flight 0"));
    }
}
