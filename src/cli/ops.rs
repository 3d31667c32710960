//! `outpost ops list|show|retry`, `outpost cdx refresh` and `outpost upload`: the sync-status
//! actions of the node's local API, from a terminal.

use std::fmt::Write as _;
use std::path::Path;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use serde_json::Value;

use super::fmt::{cut, parse_rfc3339_ms, plain, span, table};
use super::node_client::{ClientError, NodeArgs, NodeClient};

/// Operations asked for per page: within any sensible `limits.max_page` of the node (its
/// default is 500), so paging never trips the node's own bound.
const PAGE: usize = 100;

/// Most operations `ops retry --all-failed` re-syncs one by one when the node lacks the
/// bulk endpoint (an operator with more runs it again).
const MAX_FALLBACK: usize = 10_000;

/// Options of `outpost ops`.
#[derive(Args, Debug)]
pub struct OpsArgs {
    /// Where the node is.
    #[command(flatten)]
    pub node: NodeArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: OpsAction,
}

/// `outpost ops` actions.
#[derive(Subcommand, Debug)]
pub enum OpsAction {
    /// List operations, oldest first.
    List {
        /// Only this state: pending, uploaded, completed, failed or held.
        #[arg(long)]
        state: Option<String>,
        /// Most operations listed.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one operation in full: payload, HQ's error, conflicts.
    Show {
        /// The operation id.
        id: String,
    },
    /// Queue a failed operation again (after fixing it), or every failed one.
    Retry {
        /// The operation id.
        #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
        id: Option<String>,
        /// Re-sync every failed operation.
        #[arg(long)]
        all_failed: bool,
    },
}

/// Options of `outpost cdx`.
#[derive(Args, Debug)]
pub struct CdxArgs {
    /// Where the node is.
    #[command(flatten)]
    pub node: NodeArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: CdxAction,
}

/// `outpost cdx` actions.
#[derive(Subcommand, Debug)]
pub enum CdxAction {
    /// Download CDX jobs 1110, 1070 and 1010 now and apply them.
    Refresh,
}

/// Options of `outpost upload`.
#[derive(Args, Debug)]
pub struct UploadArgs {
    /// Where the node is.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Runs `outpost ops …`.
pub async fn run(config: &Path, args: OpsArgs) -> anyhow::Result<()> {
    let client = NodeClient::new(config, &args.node)?;
    match args.action {
        OpsAction::List { state, limit } => list(&client, state.as_deref(), limit).await,
        OpsAction::Show { id } => {
            let op = client
                .get(&format!("/v1/sync/operations/{}", enc(&id)))
                .await?;
            print!("{}", render_op(&op, super::fmt::now_ms()));
            Ok(())
        }
        OpsAction::Retry { id: Some(id), .. } => {
            let op = client
                .post(&format!("/v1/sync/operations/{}/sync", enc(&id)))
                .await?;
            println!(
                "operation {} queued again: now {} (revision {})",
                plain(&op["operation_id"]),
                plain(&op["state"]),
                plain(&op["revision"])
            );
            Ok(())
        }
        OpsAction::Retry { id: None, .. } => retry_all_failed(&client).await,
    }
}

/// A path segment, percent-encoded so an odd id reaches the node as typed.
fn enc(segment: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").unwrap_or_else(|_| unreachable!());
    url.path_segments_mut()
        .map(|mut s| {
            s.push(segment);
        })
        .ok();
    url.path().trim_start_matches('/').to_string()
}

/// Pages through the listing until `limit` operations are read.
async fn fetch(
    client: &NodeClient,
    state: Option<&str>,
    limit: usize,
) -> Result<Vec<Value>, ClientError> {
    let mut out = Vec::new();
    let mut after: Option<u64> = None;
    // A bar only when paging is long enough to notice; hidden when stderr is not a terminal.
    let bar = (limit > PAGE).then(|| {
        let bar = ProgressBar::new(limit as u64);
        bar.set_style(
            ProgressStyle::with_template("reading operations {bar:30} {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    while out.len() < limit {
        let page_size = (limit - out.len()).min(PAGE);
        let mut path = format!("/v1/sync/operations?limit={page_size}");
        if let Some(s) = state {
            let _ = write!(path, "&state={}", enc(s));
        }
        if let Some(a) = after {
            let _ = write!(path, "&after={a}");
        }
        let page = client.get(&path).await?;
        let ops = page["operations"].as_array().cloned().unwrap_or_default();
        out.extend(ops);
        if let Some(bar) = &bar {
            bar.set_position(out.len() as u64);
        }
        match page["next_after"].as_u64() {
            // The cursor must move on, or a misbehaving node would keep us here.
            Some(next) if after.is_none_or(|a| next > a) => after = Some(next),
            _ => break,
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    out.truncate(limit);
    Ok(out)
}

async fn list(client: &NodeClient, state: Option<&str>, limit: usize) -> anyhow::Result<()> {
    if limit == 0 {
        anyhow::bail!("--limit must be at least 1");
    }
    let ops = fetch(client, state, limit).await?;
    let now = super::fmt::now_ms();
    if ops.is_empty() {
        println!(
            "no operations{}",
            state.map(|s| format!(" in state {s}")).unwrap_or_default()
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = ops.iter().map(|op| list_row(op, now)).collect();
    print!(
        "{}",
        table(
            &[
                "operation_id",
                "state",
                "kind",
                "action",
                "customer_ref",
                "age",
                "error"
            ],
            &rows
        )
    );
    let more = if ops.len() == limit {
        format!(" (the first {limit}; --limit N for more)")
    } else {
        String::new()
    };
    println!("{} operation(s){more}", ops.len());
    Ok(())
}

fn age(op: &Value, now: i64) -> String {
    op["accepted_at"]
        .as_str()
        .and_then(parse_rfc3339_ms)
        .map(|ms| span((now - ms) / 1000))
        .unwrap_or("-".into())
}

fn error_text(e: &Value) -> String {
    if e.is_null() {
        return String::new();
    }
    let field = e["field"]
        .as_str()
        .map(|f| format!(" [{f}]"))
        .unwrap_or_default();
    format!("{}{field}: {}", plain(&e["code"]), plain(&e["message"]))
}

fn list_row(op: &Value, now: i64) -> Vec<String> {
    vec![
        plain(&op["operation_id"]),
        plain(&op["state"]),
        plain(&op["kind"]),
        plain(&op["action"]),
        plain(&op["customer_ref"]),
        age(op, now),
        cut(&error_text(&op["error"]), 70),
    ]
}

/// One operation in full.
pub fn render_op(op: &Value, now: i64) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<12}{v}");
    };
    line("operation", plain(&op["operation_id"]));
    line(
        "state",
        format!(
            "{} (revision {}, seq {})",
            plain(&op["state"]),
            plain(&op["revision"]),
            plain(&op["seq"])
        ),
    );
    line(
        "record",
        format!(
            "{} {} (HQ table {})",
            plain(&op["kind"]),
            plain(&op["action"]),
            plain(&op["hq_table"])
        ),
    );
    let record_id = op
        .get("record_id")
        .map(|r| format!(", record {}", plain(r)))
        .unwrap_or_default();
    line(
        "customer",
        format!("{}{record_id}", plain(&op["customer_ref"])),
    );
    line(
        "accepted",
        format!("{} ({} ago)", plain(&op["accepted_at"]), age(op, now)),
    );
    line("updated", plain(&op["updated_at"]));
    if !op["error"].is_null() {
        line("error", error_text(&op["error"]));
    }
    if let Some(conflicts) = op.get("conflicts").and_then(Value::as_array) {
        for c in conflicts {
            line("conflict", c.to_string());
        }
    }
    if let Some(payload) = op.get("payload") {
        let _ = writeln!(out, "payload");
        let pretty = serde_json::to_string_pretty(payload).unwrap_or_else(|_| payload.to_string());
        for l in pretty.lines() {
            let _ = writeln!(out, "  {l}");
        }
    }
    out
}

async fn retry_all_failed(client: &NodeClient) -> anyhow::Result<()> {
    match client.post("/v1/sync/operations/resync-failed").await {
        Ok(answer) => {
            let count = ["resynced", "count", "queued", "operations"]
                .iter()
                .find_map(|k| answer.get(*k))
                .map(|v| match v {
                    Value::Array(a) => a.len().to_string(),
                    other => plain(other),
                });
            match count {
                Some(n) => println!("{n} failed operation(s) queued again"),
                None => println!("failed operations queued again: {answer}"),
            }
            Ok(())
        }
        // A node without the bulk endpoint: 404, or 405 where the path reads as an id.
        Err(e)
            if matches!(
                e.status(),
                Some(StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED)
            ) =>
        {
            let failed = fetch(client, Some("failed"), MAX_FALLBACK).await?;
            let mut queued = 0;
            let mut refused = Vec::new();
            for op in &failed {
                let id = plain(&op["operation_id"]);
                match client
                    .post(&format!("/v1/sync/operations/{}/sync", enc(&id)))
                    .await
                {
                    Ok(_) => queued += 1,
                    // One refusal (e.g. it changed state meanwhile) does not stop the rest.
                    Err(ClientError::Api(f)) => refused.push(format!("{id}: {f}")),
                    Err(other) => return Err(other.into()),
                }
            }
            println!("{queued} failed operation(s) queued again");
            for r in &refused {
                eprintln!("not queued: {r}");
            }
            if refused.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("{} operation(s) could not be queued again", refused.len())
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs `outpost cdx refresh`.
pub async fn cdx(config: &Path, args: CdxArgs) -> anyhow::Result<()> {
    let client = NodeClient::new(config, &args.node)?;
    match args.action {
        CdxAction::Refresh => {
            let answer = client.post("/v1/cdx/refresh").await?;
            let a = &answer["applied"];
            println!("CDX refresh applied:");
            println!(
                "  1110 feature management   version {}",
                plain(&a["global_version"])
            );
            println!(
                "  1070 channel settings     version {}",
                plain(&a["channel_version"])
            );
            println!(
                "  1010 customers            version {} ({} customer(s) applied)",
                plain(&a["customers_version"]),
                plain(&a["customers_applied"])
            );
            Ok(())
        }
    }
}

/// Runs `outpost upload`.
pub async fn upload(config: &Path, args: UploadArgs) -> anyhow::Result<()> {
    let client = NodeClient::new(config, &args.node)?;
    let answer = client.post("/v1/sync/upload").await?;
    println!(
        "{}; follow it with `outpost status`",
        answer["status"].as_str().unwrap_or("upload requested")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_encoded_as_one_segment() {
        assert_eq!(enc("abc"), "abc");
        assert_eq!(enc("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn an_operation_renders_with_error_and_payload() {
        let op = json!({
            "operation_id": "0190-x", "seq": 7, "customer_ref": "S0001-T3", "kind": "customer",
            "hq_table": "RetailAsyncCustomerV2", "action": "create", "state": "failed",
            "error": {"code": "validation", "message": "rejected", "field": "last_name"},
            "revision": 1, "accepted_at": "1970-01-01T00:00:01Z",
            "updated_at": "1970-01-01T00:00:02Z", "payload": {"last_name": "Poison"}
        });
        let text = render_op(&op, 61_000);
        assert!(text.contains("validation [last_name]: rejected"), "{text}");
        assert!(text.contains("\"last_name\": \"Poison\""), "{text}");
        assert!(text.contains("1m 0s ago"), "{text}");
        let row = list_row(&op, 61_000);
        assert_eq!(row[1], "failed");
        assert_eq!(row[5], "1m 0s");
    }
}
