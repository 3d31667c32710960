//! `outpost backup --out PATH [--offline]`: a consistent copy of the store.
//!
//! With a node running, the node makes the copy (it holds the store file's lock) and streams
//! it; this command writes it under a temporary name, checks it, then gives it its name. With
//! `--offline` the copy is made straight from the file of a stopped node. Either way the copy
//! is opened and its rows counted against what the source said it copied.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;

use outpost::api::backup::{ROWS_HEADER, SCHEMA_HEADER, TABLES_HEADER};
use outpost::config::Config;
use outpost::store::backup::{backup_file, inspect};

use super::fmt::bytes;
use super::node_client::{ClientError, NodeArgs, NodeClient};

/// Options of `outpost backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Where to write the copy (must not exist).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Copy straight from the store file of a stopped node (no HTTP).
    #[arg(long)]
    pub offline: bool,
    /// Where the node is (online backups).
    #[command(flatten)]
    pub node: NodeArgs,
}

/// What the source says the copy holds.
struct Expected {
    total_rows: u64,
    tables: BTreeMap<String, u64>,
    schema_version: Option<u64>,
}

/// Runs `outpost backup`.
pub async fn run(config: &Path, args: BackupArgs) -> anyhow::Result<()> {
    if args.out.exists() {
        anyhow::bail!(
            "{} exists already; a backup never overwrites a file: choose another --out",
            args.out.display()
        );
    }
    let part = part_path(&args.out);
    // A leftover from an interrupted run is ours to replace.
    let _ = std::fs::remove_file(&part);
    let result = if args.offline {
        offline(config, &part).await
    } else {
        online(config, &args.node, &part).await
    };
    let expected = match result {
        Ok(e) => e,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    if let Err(e) = verify(&part, &expected) {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, &args.out)
        .with_context(|| format!("cannot name the backup {}", args.out.display()))?;
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup written to {}: {} rows, {}, schema version {}; verified (opened, every table's \
         rows counted)",
        args.out.display(),
        expected.total_rows,
        bytes(size),
        expected
            .schema_version
            .map_or("unknown".into(), |v| v.to_string()),
    );
    println!(
        "restore: stop the node, then copy it to <node.data_dir>/outpost.redb and start the node"
    );
    Ok(())
}

fn part_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".part");
    out.with_file_name(name)
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

async fn online(config: &Path, node: &NodeArgs, part: &Path) -> anyhow::Result<Expected> {
    let client = NodeClient::new(config, node)?;
    let spinner = ProgressBar::new_spinner();
    spinner.set_message("the node is making a consistent copy…");
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let resp = client
        .send(Method::GET, "/v1/admin/backup", None, None)
        .await
        .map_err(|e| match e {
            ClientError::Unreachable { .. } => anyhow::anyhow!(
                "{e}\nif no node is running, copy the file directly: outpost backup --out {} \
                 --offline",
                part.display().to_string().trim_end_matches(".part")
            ),
            other => other.into(),
        });
    spinner.finish_and_clear();
    let mut resp = resp?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let total_rows = header(ROWS_HEADER)
        .and_then(|v| v.parse::<u64>().ok())
        .context("the node's answer lacks a row count (X-Outpost-Rows)")?;
    let tables = header(TABLES_HEADER)
        .map(|v| parse_tables(&v))
        .unwrap_or_default();
    let schema_version = header(SCHEMA_HEADER).and_then(|v| v.parse().ok());
    let length = resp.content_length();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(part)
        .with_context(|| format!("cannot create {}", part.display()))?;
    let progress = match length {
        Some(n) => bar(
            n,
            "downloading {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
        ),
        None => bar(0, "downloading {bytes} {bytes_per_sec}"),
    };
    let mut received: u64 = 0;
    while let Some(chunk) = resp.chunk().await.context("the download broke off")? {
        file.write_all(&chunk)
            .with_context(|| format!("cannot write {}", part.display()))?;
        received += chunk.len() as u64;
        progress.set_position(received);
    }
    progress.finish_and_clear();
    if let Some(n) = length
        && n != received
    {
        anyhow::bail!("the download ended after {received} of {n} bytes");
    }
    file.sync_all()
        .with_context(|| format!("cannot flush {}", part.display()))?;
    Ok(Expected {
        total_rows,
        tables,
        schema_version,
    })
}

async fn offline(config: &Path, part: &Path) -> anyhow::Result<Expected> {
    let loaded = Config::load(config)
        .with_context(|| format!("invalid configuration ({})", config.display()))?;
    let src = loaded.store_path();
    if !src.exists() {
        anyhow::bail!("no store file at {}", src.display());
    }
    let dest = part.to_path_buf();
    let report = tokio::task::spawn_blocking(move || {
        let progress = bar(0, "copying {bar:30} {pos}/{len} rows");
        let report = backup_file(&src, &dest, |done, total| {
            progress.set_length(total);
            progress.set_position(done);
        });
        progress.finish_and_clear();
        report.map_err(|e| {
            if e.is_in_use() {
                anyhow::anyhow!(
                    "a running node holds {}: run `outpost backup` without --offline to have \
                     the node make the copy",
                    src.display()
                )
            } else {
                anyhow::Error::new(e)
            }
        })
    })
    .await
    .context("the copy task failed")??;
    Ok(Expected {
        total_rows: report.total_rows,
        tables: report.tables.into_iter().collect(),
        schema_version: report.schema_version,
    })
}

/// `name=count,name=count` as a map; malformed pairs are skipped.
fn parse_tables(v: &str) -> BTreeMap<String, u64> {
    v.split(',')
        .filter_map(|pair| {
            let (name, n) = pair.split_once('=')?;
            Some((name.trim().to_string(), n.trim().parse().ok()?))
        })
        .collect()
}

/// Opens the copy read-only and compares its rows with what the source said it copied.
fn verify(path: &Path, expected: &Expected) -> anyhow::Result<()> {
    let summary = inspect(path).context("the copy does not open as a store")?;
    if summary.total_rows != expected.total_rows {
        anyhow::bail!(
            "the copy holds {} rows, the source copied {}: not kept",
            summary.total_rows,
            expected.total_rows
        );
    }
    for (table, n) in &expected.tables {
        let got = summary.tables.get(table).copied().unwrap_or(0);
        if got != *n {
            anyhow::bail!("table {table}: the copy holds {got} rows, the source copied {n}");
        }
    }
    if !summary.problems.is_empty() {
        anyhow::bail!("the copy is not sound: {}", summary.problems.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_header_parses() {
        let t = parse_tables("meta=2,operations=10,bad,x=y");
        assert_eq!(t.len(), 2);
        assert_eq!(t["operations"], 10);
        assert_eq!(
            part_path(Path::new("/tmp/b.redb")),
            PathBuf::from("/tmp/b.redb.part")
        );
    }
}
