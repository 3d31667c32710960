//! `outpost status`: the node's diagnostics report (`GET /diag`), readable in a terminal.
//!
//! The renderer reads the report loosely: a section the node does not send is left out, and a
//! section this build does not know is still shown, so a newer or older node reads fine.

use std::fmt::Write as _;
use std::path::Path;

use clap::Args;
use serde_json::Value;

use super::fmt::{ago_ms, cut, parse_rfc3339_ms, plain, span, table, when};
use super::node_client::{NodeArgs, NodeClient};

/// Options of `outpost status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Where the node is.
    #[command(flatten)]
    pub node: NodeArgs,
    /// Print the raw JSON report instead.
    #[arg(long)]
    pub json: bool,
}

/// Sections of the report this renderer knows; others are shown under "Other".
const KNOWN: [&str; 9] = [
    "findings",
    "node",
    "queue",
    "sync",
    "cdx",
    "features",
    "mode",
    "realtime",
    "oldest_pending",
];

/// Queue states in the order a technician reads them.
const STATES: [&str; 5] = ["pending", "uploaded", "held", "failed", "completed"];

/// Runs `outpost status`.
pub async fn run(config: &Path, args: StatusArgs) -> anyhow::Result<()> {
    let client = NodeClient::new(config, &args.node)?;
    let report = client.get("/diag").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    // The oldest pending operation, from the listing (the report may not carry it). A failure
    // here only leaves the line out.
    let oldest = client
        .get("/v1/sync/operations?state=pending&limit=1")
        .await
        .ok()
        .and_then(|page| page["operations"].get(0).cloned());
    print!(
        "{}",
        render(
            &report,
            oldest.as_ref(),
            client.base().as_str(),
            super::fmt::now_ms()
        )
    );
    Ok(())
}

/// The report as terminal text. `oldest` is the oldest pending operation, if any.
pub fn render(report: &Value, oldest: Option<&Value>, node_url: &str, now: i64) -> String {
    let mut out = String::new();
    let node = &report["node"];
    let _ = writeln!(
        out,
        "Outpost node {} · channel {} · version {} · {}",
        plain(&node["store_id"]),
        plain(&node["channel_id"]),
        plain(&node["version"]),
        node_url.trim_end_matches('/'),
    );
    findings(&mut out, report.get("findings"));
    queue(&mut out, report, oldest, now);
    sync(&mut out, &report["sync"], now);
    cdx(&mut out, &report["cdx"], now);
    features(&mut out, &report["features"]);
    mode(&mut out, &report["mode"]);
    realtime(&mut out, &report["realtime"], now);
    if let Some(obj) = report.as_object() {
        let other: Vec<(&String, &Value)> = obj
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .collect();
        if !other.is_empty() {
            section(&mut out, "Other");
            for (k, v) in other {
                flatten(&mut out, k, v, 1);
            }
        }
    }
    out
}

fn section(out: &mut String, title: &str) {
    let _ = writeln!(out, "\n{title}");
}

/// Findings come first: they are what the node thinks the technician should look at.
fn findings(out: &mut String, findings: Option<&Value>) {
    let Some(findings) = findings else { return };
    let items: Vec<&Value> = match findings {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    };
    section(out, "Findings");
    if items.is_empty() {
        let _ = writeln!(out, "  none: nothing needs attention");
        return;
    }
    for item in items {
        match item {
            Value::Object(obj) => {
                let first =
                    |keys: &[&'static str]| keys.iter().copied().find(|k| obj.contains_key(*k));
                let severity_key = first(&["severity", "level", "kind"]);
                let headline_key = first(&["title", "summary", "message", "text", "code", "id"]);
                let severity = severity_key.and_then(|k| obj.get(k)).map(plain);
                let headline = headline_key
                    .and_then(|k| obj.get(k))
                    .map(plain)
                    .unwrap_or_else(|| item.to_string());
                let marker = match severity.as_deref() {
                    Some("critical" | "error" | "bad" | "fail" | "failed") => "!!",
                    Some("warning" | "warn") => "! ",
                    _ => "- ",
                };
                let sev = severity.map(|s| format!("[{s}] ")).unwrap_or_default();
                let _ = writeln!(out, "  {marker}{sev}{headline}");
                for (k, v) in obj {
                    if Some(k.as_str()) == severity_key
                        || Some(k.as_str()) == headline_key
                        || v.is_null()
                    {
                        continue;
                    }
                    let _ = writeln!(out, "       {k}: {}", flat_value(v));
                }
            }
            other => {
                let _ = writeln!(out, "  - {}", plain(other));
            }
        }
    }
}

fn flat_value(v: &Value) -> String {
    match v {
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        other => plain(other),
    }
}

fn queue(out: &mut String, report: &Value, oldest: Option<&Value>, now: i64) {
    let queue = &report["queue"];
    section(out, "Queue");
    let Some(obj) = queue.as_object() else {
        let _ = writeln!(out, "  (not reported)");
        return;
    };
    let mut rows = Vec::new();
    for state in STATES {
        if let Some(n) = obj.get(state) {
            rows.push((state.to_string(), plain(n)));
        }
    }
    for (k, v) in obj {
        if !STATES.contains(&k.as_str()) {
            rows.push((k.clone(), flat_value(v)));
        }
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        let _ = writeln!(out, "  {k:<width$}  {v:>8}");
    }
    let oldest_line = match oldest {
        Some(op) => {
            let accepted = op["accepted_at"].as_str().unwrap_or_default();
            match parse_rfc3339_ms(accepted) {
                Some(ms) => format!(
                    "{} (operation {}, customer {}, accepted {accepted})",
                    span((now - ms) / 1000),
                    plain(&op["operation_id"]),
                    plain(&op["customer_ref"]),
                ),
                None => format!("operation {}", plain(&op["operation_id"])),
            }
        }
        None => match report.get("oldest_pending") {
            Some(v) if !v.is_null() => flat_value(v),
            _ => "none waiting".into(),
        },
    };
    let _ = writeln!(out, "  oldest pending: {oldest_line}");
}

fn sync(out: &mut String, sync: &Value, now: i64) {
    section(out, "Uploads to HQ");
    if !sync.is_object() {
        let _ = writeln!(out, "  (not reported)");
        return;
    }
    let _ = writeln!(
        out,
        "  last attempt    {}",
        when(sync.get("last_upload_attempt_ms"), now)
    );
    let _ = writeln!(
        out,
        "  last success    {}",
        when(sync.get("last_upload_success_ms"), now)
    );
    // The node keeps the last error after a success; say so, or it reads as a live fault.
    let recovered =
        sync["consecutive_failures"].as_u64() == Some(0) && sync["last_upload_success_ms"].is_i64();
    let last_error = match sync.get("last_upload_error").map(plain) {
        Some(e) if e != "-" && recovered => format!("{e} (uploads succeeded since)"),
        Some(e) => e,
        None => "-".into(),
    };
    let _ = writeln!(out, "  last error      {last_error}");
    let _ = writeln!(
        out,
        "  outcomes read   {}{}",
        when(sync.get("last_outcome_pull_ms"), now),
        match sync.get("last_outcome_error").map(plain) {
            Some(e) if e != "-" => format!("; last error: {e}"),
            _ => String::new(),
        }
    );
    let _ = writeln!(
        out,
        "  counters        batches ok {} · operations uploaded {} · refused {} · retries {} · \
         failures in a row {}",
        plain(&sync["upload_batches_ok"]),
        plain(&sync["operations_uploaded"]),
        plain(&sync["operations_refused"]),
        plain(&sync["retries"]),
        plain(&sync["consecutive_failures"]),
    );
    section(out, "HQ");
    let reachable = match sync["hq_reachable"].as_bool() {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "not tried yet",
    };
    let latency = sync["hq_latency_ms"]
        .as_u64()
        .map(|ms| format!(" · latency {ms} ms"))
        .unwrap_or_default();
    let _ = writeln!(out, "  reachable       {reachable}{latency}");
}

fn cdx(out: &mut String, cdx: &Value, now: i64) {
    section(out, "Configuration held (CDX)");
    let mut rows = Vec::new();
    for job in cdx["jobs"].as_array().into_iter().flatten() {
        let held = !job["version"].is_null();
        rows.push(vec![
            plain(&job["job"]),
            if held {
                plain(&job["version"])
            } else {
                "none held".into()
            },
            job["age_secs"].as_i64().map(span).unwrap_or("-".into()),
            plain(&job["received_at"]),
        ]);
    }
    if rows.is_empty() {
        let _ = writeln!(out, "  (no jobs reported)");
    } else {
        for line in table(&["job", "version", "age", "received"], &rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    let d = &cdx["downloader"];
    if d.is_object() {
        let _ = writeln!(
            out,
            "  downloads: last success {}; last failure {}{}",
            when(d.get("last_success_ms"), now),
            when(d.get("last_failure_ms"), now),
            match d.get("last_error").map(plain) {
                Some(e) if e != "-" => format!("; error: {e}"),
                _ => String::new(),
            }
        );
    }
}

fn features(out: &mut String, features: &Value) {
    let Some(items) = features.as_array() else {
        return;
    };
    section(out, "Features");
    let yes = |v: &Value| {
        if v.as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
        .to_string()
    };
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|f| {
            vec![
                plain(&f["name"]),
                yes(&f["enabled"]),
                yes(&f["in_force"]),
                flat_value(&f["missing"]),
            ]
        })
        .collect();
    for line in table(
        &["feature", "enabled", "in force", "missing prerequisites"],
        &rows,
    )
    .lines()
    {
        let _ = writeln!(out, "  {line}");
    }
}

fn mode(out: &mut String, mode: &Value) {
    let Some(obj) = mode.as_object() else { return };
    section(out, "Mode");
    for (intent, d) in obj {
        let _ = writeln!(
            out,
            "  {intent:<7} {:<10} {}",
            plain(&d["mode"]),
            plain(&d["reason"])
        );
    }
}

fn realtime(out: &mut String, rt: &Value, now: i64) {
    if !rt.is_object() {
        return;
    }
    section(out, "Real-time calls");
    let _ = writeln!(
        out,
        "  calls {} · applied {} · refused {} · fell back to the queue {}",
        plain(&rt["calls"]),
        plain(&rt["applied"]),
        plain(&rt["refused"]),
        plain(&rt["fallbacks"]),
    );
    let recent = rt["recent"].as_array().cloned().unwrap_or_default();
    for call in recent.iter().rev().take(5) {
        let at = call["at_ms"]
            .as_i64()
            .map(|ms| ago_ms(ms, now))
            .unwrap_or_default();
        let fallback = call
            .get("fallback_reason")
            .map(|r| format!(" ({})", cut(&plain(r), 80)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {at:>10}  {} {}{fallback}: {}",
            plain(&call["intent"]),
            plain(&call["result"]),
            cut(&plain(&call["reason"]), 100),
        );
    }
}

/// Any JSON as indented `key: value` lines.
fn flatten(out: &mut String, key: &str, v: &Value, depth: usize) {
    let pad = "  ".repeat(depth);
    match v {
        Value::Object(obj) => {
            let _ = writeln!(out, "{pad}{key}:");
            for (k, v) in obj {
                flatten(out, k, v, depth + 1);
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{key}: {}", flat_value(other));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report() -> Value {
        json!({
            "node": {"store_id": "S0001", "channel_id": "CH0001", "version": "0.1.0"},
            "queue": {"pending": 3, "uploaded": 0, "completed": 9, "failed": 1, "held": 2},
            "sync": {"last_upload_attempt_ms": 1_000, "last_upload_success_ms": null,
                     "last_upload_error": "HQ unreachable", "hq_reachable": false,
                     "upload_batches_ok": 0, "operations_uploaded": 0, "operations_refused": 0,
                     "retries": 4, "consecutive_failures": 4},
            "cdx": {"jobs": [{"job": 1110, "version": 3, "received_at": "1970-01-01T00:00:01Z",
                              "age_secs": 65},
                             {"job": 1070, "version": null, "received_at": null, "age_secs": null}],
                    "downloader": {"last_success_ms": null}},
            "features": [{"name": "Async customer editing", "enabled": true, "in_force": false,
                          "missing": ["async_customer_creation"]}],
            "mode": {"create": {"mode": "async", "reason": "create customer in async mode is on"},
                     "edit": {"mode": "real_time", "reason": "async editing is off"}},
            "realtime": {"calls": 1, "applied": 1, "refused": 0, "fallbacks": 0,
                         "recent": [{"at_ms": 2_000, "intent": "edit", "result": "applied",
                                     "reason": "async editing is off", "operation_id": "x"}]},
            "store": {"bytes": 4096}
        })
    }

    #[test]
    fn renders_every_section_and_unknown_ones() {
        let text = render(&report(), None, "http://127.0.0.1:8080/", 66_000);
        for want in [
            "S0001",
            "pending",
            "oldest pending: none waiting",
            "HQ unreachable",
            "reachable       NO",
            "1110  3          1m 5s",
            "none held",
            "Async customer editing",
            "async_customer_creation",
            "edit    real_time  async editing is off",
            "calls 1",
            "Other",
            "bytes: 4096",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(
            !text.contains("Findings"),
            "no findings key, no section:\n{text}"
        );
    }

    #[test]
    fn findings_come_first_when_present() {
        let mut r = report();
        r["findings"] = json!([
            {"severity": "warning", "title": "HQ unreachable for 5 minutes",
             "action": "check the WAN link"}
        ]);
        let text = render(&r, None, "http://x", 66_000);
        let f = text.find("Findings").expect("findings section");
        assert!(f < text.find("Queue").unwrap(), "{text}");
        assert!(
            text.contains("! [warning] HQ unreachable for 5 minutes"),
            "{text}"
        );
        assert!(text.contains("action: check the WAN link"), "{text}");
    }
}
