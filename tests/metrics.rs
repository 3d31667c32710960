//! `GET /metrics`: valid Prometheus text exposition format (checked line by line against the
//! format's rules), the families the operator needs, bounded labels, and one registry per node.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use common::*;
use outpost::hq::emulator::{Faults, HqEmulator, HqEmulatorConfig, RejectRule};

/// One sample line.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: the declared type of each family and every sample.
#[derive(Debug, Default)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Samples named `name` whose labels include every pair of `labels`.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the single sample `name{labels}`; panics if absent.
    #[track_caller]
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.find(name, labels);
        assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
        found[0].value
    }
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

/// A sample value as Prometheus reads it (Go's ParseFloat, plus the spellings of infinity).
fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|e| format!("value {s:?}: {e}")),
    }
}

/// `{a="x",b="y\"z"}` at the start of `rest`; returns the labels and what follows.
fn parse_labels(rest: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut s = rest.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        s = s.trim_start_matches(' ');
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("label without =")?;
        let name = s[..eq].trim();
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        s = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("newline in label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        s = &s[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

/// The family a sample belongs to: a histogram's `_bucket`, `_sum` and `_count` belong to it.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            )
        {
            return base;
        }
    }
    name
}

/// Checks `text` against the Prometheus text exposition format 0.0.4 and returns what it holds.
fn parse_exposition(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the last line must end with a newline".into());
    }
    let mut out = Exposition::default();
    let mut helped: BTreeSet<String> = BTreeSet::new();
    let mut seen_families: Vec<String> = Vec::new();
    let mut seen_series: BTreeSet<String> = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("HELP") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| at("HELP without a name".into()))?;
                    if !valid_metric_name(name) {
                        return Err(at("bad metric name in HELP".into()));
                    }
                    let doc = parts.next().unwrap_or_default();
                    let mut chars = doc.chars();
                    while let Some(c) = chars.next() {
                        if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
                            return Err(at("bad escape in HELP".into()));
                        }
                    }
                    if !helped.insert(name.to_string()) {
                        return Err(at("second HELP for a family".into()));
                    }
                }
                Some("TYPE") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| at("TYPE without a name".into()))?;
                    let kind = parts
                        .next()
                        .ok_or_else(|| at("TYPE without a type".into()))?;
                    if !valid_metric_name(name) {
                        return Err(at("bad metric name in TYPE".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if seen_families.iter().any(|f| f == name) {
                        return Err(at("TYPE after the family's samples".into()));
                    }
                    if out.types.insert(name.into(), kind.into()).is_some() {
                        return Err(at("second TYPE for a family".into()));
                    }
                }
                _ => {} // any other comment is allowed
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("sample without a value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| at(format!("bad timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(at("text after the timestamp".into()));
        }
        // Samples of one family are contiguous.
        let family = family_of(name, &out.types).to_string();
        if seen_families.last() != Some(&family) {
            if seen_families.contains(&family) {
                return Err(at(format!("family {family} is split")));
            }
            seen_families.push(family.clone());
        }
        if !seen_series.insert(format!("{name}{labels:?}")) {
            return Err(at("the same series twice".into()));
        }
        out.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    check_histograms(&out)?;
    Ok(out)
}

/// Buckets ascend in `le`, counts never decrease, `+Inf` is there and equals `_count`.
fn check_histograms(e: &Exposition) -> Result<(), String> {
    for (family, kind) in &e.types {
        if kind != "histogram" {
            continue;
        }
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in e.find(&format!("{family}_bucket"), &[]) {
            let le = s
                .labels
                .get("le")
                .ok_or_else(|| format!("{family}_bucket without le"))?;
            let mut rest = s.labels.clone();
            rest.remove("le");
            series
                .entry(format!("{rest:?}"))
                .or_default()
                .push((parse_value(le)?, s.value));
        }
        for (labels, buckets) in series {
            if !buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
            {
                return Err(format!(
                    "{family}{labels}: buckets not ascending: {buckets:?}"
                ));
            }
            let (last_le, last_count) = *buckets.last().ok_or("no buckets")?;
            if last_le != f64::INFINITY {
                return Err(format!("{family}{labels}: no +Inf bucket"));
            }
            let count = e
                .samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count") && format!("{:?}", s.labels) == labels
                })
                .ok_or_else(|| format!("{family}{labels}: no _count"))?;
            if count.value != last_count {
                return Err(format!(
                    "{family}{labels}: +Inf {last_count} != count {}",
                    count.value
                ));
            }
            if !e
                .samples
                .iter()
                .any(|s| s.name == format!("{family}_sum") && format!("{:?}", s.labels) == labels)
            {
                return Err(format!("{family}{labels}: no _sum"));
            }
        }
    }
    Ok(())
}

#[test]
fn the_format_checker_refuses_what_prometheus_refuses() {
    let good = "# HELP a_total A counter.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";
    parse_exposition(good).unwrap();
    for bad in [
        "a 1",                     // no final newline
        "1a 1\n",                  // bad name
        "a{x=1} 1\n",              // unquoted value
        "a{x=\"1\",x=\"2\"} 1\n",  // label twice
        "a{__x=\"1\"} 1\n",        // reserved label name
        "a one\n",                 // bad value
        "a 1\nb 1\na 2\n",         // family split
        "a 1\n# TYPE a counter\n", // TYPE after samples
        "# TYPE a flux\na 1\n",    // unknown type
        "a{x=\"\\q\"} 1\n",        // bad escape
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
        "a 1\na 1\n", // same series twice
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

async fn scrape(api: &Api) -> Exposition {
    let resp = api.get("/metrics").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(
        resp.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = resp.body.as_str().expect("text body");
    parse_exposition(text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_queue_uploads_hq_cdx_real_time_and_http_by_route() {
    let hq = HqEmulator::start(HqEmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sync_interval: Some(Duration::from_millis(30)),
        seed: 11,
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = auth_config(dir.path());
    config.hq.url = hq.url();
    config.hq.request_timeout_ms = 2_000;
    config.upload.interval_ms = 30;
    config.upload.retry_initial_ms = 20;
    config.upload.retry_max_ms = 100;
    let node = start_node_with(config).await;
    let anon = Api::new(node.local_addr());
    let till = anon.with_token(POS_TOKEN);
    let tech = anon.with_token(TECH_TOKEN);

    // Before anything happened, the families are there and the format holds.
    let m = scrape(&tech).await;
    for state in ["pending", "uploaded", "completed", "failed", "held"] {
        assert_eq!(
            m.value("outpost_queue_operations", &[("state", state)]),
            0.0
        );
    }
    assert_eq!(
        m.value("outpost_queue_oldest_pending_age_seconds", &[]),
        0.0
    );
    // Requests are timed once answered: the first scrape is in the second.
    let m = scrape(&tech).await;
    assert_eq!(
        m.types["outpost_http_request_duration_seconds"],
        "histogram"
    );
    assert_eq!(m.types["outpost_http_requests_total"], "counter");

    // Real time (HQ holds no configuration): applied, then a fallback while HQ is down.
    till.post("/v1/customers", &customer("Metric", "Realtime"))
        .await
        .expect(201);
    hq.set_faults(Faults {
        offline: true,
        ..Faults::default()
    });
    let fallback = till
        .post("/v1/customers", &customer("Metric", "Fallback"))
        .await
        .expect(202)
        .clone();
    assert_eq!(fallback["mode"], "async_fallback");
    // While HQ is down the pending operation ages and uploads are retried.
    let m = poll(WAIT, "a failed upload", || async {
        let m = scrape(&tech).await;
        (m.value("outpost_upload_batches_total", &[("result", "retried")]) >= 1.0).then_some(m)
    })
    .await;
    assert!(m.value("outpost_upload_operations_total", &[("result", "retried")]) >= 1.0);
    assert_eq!(
        m.value("outpost_queue_operations", &[("state", "pending")]),
        1.0
    );
    assert!(m.value("outpost_queue_oldest_pending_age_seconds", &[]) >= 0.0);
    assert!(m.value("outpost_upload_consecutive_failures", &[]) >= 1.0);
    // HQ "down" answers 503: timed as an error answer.
    assert!(
        m.value(
            "outpost_hq_request_duration_seconds_count",
            &[("request", "upload"), ("outcome", "error")]
        ) >= 1.0
    );

    // HQ back, asynchronous mode on, and a poison record.
    hq.set_faults(Faults {
        reject: Some(RejectRule {
            field: "last_name".into(),
            equals: "Poison".into(),
        }),
        ..Faults::default()
    });
    hq.enable_async();
    tech.post_empty("/v1/cdx/refresh").await.expect(200);
    for i in 0..5 {
        till.post(
            "/v1/customers",
            &customer("Metric", &format!("Async{}", "x".repeat(i + 1))),
        )
        .await
        .expect(202);
    }
    till.post("/v1/customers", &customer("Metric", "Poison"))
        .await
        .expect(202);
    let m = poll(WAIT, "everything confirmed or failed", || async {
        let m = scrape(&tech).await;
        let done = m.value("outpost_queue_operations", &[("state", "completed")]) >= 7.0
            && m.value("outpost_queue_operations", &[("state", "failed")]) == 1.0;
        done.then_some(m)
    })
    .await;
    assert_eq!(
        m.value("outpost_queue_operations", &[("state", "pending")]),
        0.0
    );
    assert_eq!(
        m.value("outpost_queue_oldest_pending_age_seconds", &[]),
        0.0
    );
    assert!(m.value("outpost_upload_batches_total", &[("result", "ok")]) >= 1.0);
    assert!(m.value("outpost_upload_operations_total", &[("result", "ok")]) >= 7.0);
    assert_eq!(
        m.value("outpost_upload_operations_total", &[("result", "failed")]),
        0.0
    );
    assert_eq!(
        m.value("outpost_hq_outcomes_total", &[("result", "failed")]),
        1.0
    );
    assert!(m.value("outpost_hq_outcomes_total", &[("result", "completed")]) >= 6.0);
    assert_eq!(m.value("outpost_hq_reachable", &[]), 1.0);
    assert!(m.value("outpost_upload_last_success_timestamp_seconds", &[]) > 1.6e9);
    assert_eq!(
        m.value("outpost_realtime_calls_total", &[("result", "applied")]),
        1.0
    );
    assert_eq!(
        m.value("outpost_realtime_calls_total", &[("result", "fallback")]),
        1.0
    );
    assert_eq!(
        m.value("outpost_realtime_calls_total", &[("result", "refused")]),
        0.0
    );
    for job in ["1010", "1070", "1110"] {
        assert!(m.value("outpost_cdx_job_age_seconds", &[("job", job)]) >= 0.0);
        assert!(m.value("outpost_cdx_job_version", &[("job", job)]) >= 0.0);
    }
    for request in [
        "upload", "outcomes", "rts", "cdx_1110", "cdx_1070", "cdx_1010",
    ] {
        let count = m.find(
            "outpost_hq_request_duration_seconds_count",
            &[("request", request), ("outcome", "ok")],
        );
        assert!(
            count.iter().any(|s| s.value >= 1.0),
            "no answered HQ {request} request timed: {count:?}"
        );
    }

    // HTTP requests, by route template: a customer read, a 404, a 401.
    let cref = fallback["customer_ref"].as_str().unwrap();
    till.get(&format!("/v1/customers/{cref}")).await.expect(200);
    till.get("/v1/customers/S0001-T424242").await.expect(404);
    anon.get("/diag").await.expect(401);
    tech.get("/no/such/path").await.expect(404);
    let m = scrape(&tech).await;
    let reads = |status: &str| {
        m.find(
            "outpost_http_requests_total",
            &[
                ("route", "/v1/customers/{customer_ref}"),
                ("method", "GET"),
                ("status", status),
            ],
        )
        .first()
        .map_or(0.0, |s| s.value)
    };
    assert_eq!(reads("200"), 1.0);
    assert_eq!(reads("404"), 1.0);
    assert_eq!(
        m.value(
            "outpost_http_requests_total",
            &[("route", "/diag"), ("method", "GET"), ("status", "401")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "outpost_http_requests_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    assert!(
        m.value(
            "outpost_http_request_duration_seconds_count",
            &[("route", "/v1/customers"), ("method", "POST")]
        ) >= 8.0
    );
    assert_eq!(
        m.value("outpost_http_requests_in_flight", &[]),
        1.0,
        "the scrape itself"
    );
    assert!(m.value("outpost_http_connections_open", &[]) >= 1.0);
    assert_eq!(
        m.value(
            "outpost_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    // Labels are bounded: no customer reference or raw path ever becomes one.
    for s in &m.samples {
        for (k, v) in &s.labels {
            assert!(!v.contains("S0001-T"), "{}: label {k}={v}", s.name);
        }
    }
    stop_node(node).await;
    hq.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_in_one_process_keep_their_own_metrics() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a = start_node(dir_a.path()).await;
    let b = start_node(dir_b.path()).await;
    let api_a = Api::new(a.local_addr());
    let api_b = Api::new(b.local_addr());
    for i in 0..3 {
        api_a
            .create_customer(&customer("Node", &format!("A{}", "a".repeat(i + 1))))
            .await;
    }
    let ma = scrape(&api_a).await;
    let mb = scrape(&api_b).await;
    let labels = [
        ("route", "/v1/customers"),
        ("method", "POST"),
        ("status", "202"),
    ];
    assert_eq!(ma.value("outpost_http_requests_total", &labels), 3.0);
    assert!(mb.find("outpost_http_requests_total", &labels).is_empty());
    assert_eq!(
        ma.value("outpost_queue_operations", &[("state", "pending")]),
        3.0
    );
    assert_eq!(
        mb.value("outpost_queue_operations", &[("state", "pending")]),
        0.0
    );
    // The in-process registry is the one served.
    assert!(a.metrics().render().contains("outpost_http_requests_total"));
    stop_node(a).await;
    stop_node(b).await;
}
