//! `outpost doctor`: checks a stopped node's configuration and store file, offline (no HTTP).
//!
//! Each check prints one line: `ok`, `warn` (worth knowing, not a fault) or `FAIL`. The exit
//! status is zero only when nothing failed. A store file held by a running node is not
//! checked: redb allows one process at a time, and the running node's own report
//! (`outpost status`) is the way to look at it then.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use outpost::config::Config;
use outpost::store::StoreError;
use outpost::store::backup::{inspect, recovered_copy, verify_integrity};

use super::fmt::bytes;

/// Free space below which the node is close to refusing writes (it answers 507 when full).
const LOW_DISK_BYTES: u64 = 256 * 1024 * 1024;

/// Options of `outpost doctor`.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Skip the page-by-page integrity check (it copies the store file, so it needs as much
    /// free space as the file takes).
    #[arg(long)]
    pub quick: bool,
}

#[derive(Default)]
struct Findings {
    failed: usize,
    warned: usize,
}

impl Findings {
    fn ok(&mut self, what: impl AsRef<str>) {
        println!("  ok    {}", what.as_ref());
    }
    fn warn(&mut self, what: impl AsRef<str>) {
        self.warned += 1;
        println!("  warn  {}", what.as_ref());
    }
    fn fail(&mut self, what: impl AsRef<str>) {
        self.failed += 1;
        println!("  FAIL  {}", what.as_ref());
    }
    fn detail(&self, what: impl AsRef<str>) {
        println!("          {}", what.as_ref());
    }
}

/// Runs `outpost doctor` on the configuration file at `config_path`.
pub fn run(config_path: &Path, args: DoctorArgs) -> anyhow::Result<()> {
    println!("outpost doctor: {}", config_path.display());
    let mut f = Findings::default();
    let (data_dir, listen) = check_config(config_path, &mut f);
    if let Some(dir) = data_dir {
        check_data_dir(&dir, &mut f);
        let store_path = dir.join("outpost.redb");
        let in_use = check_store(&store_path, &dir, args.quick, &mut f);
        let _ = std::io::stdout().flush();
        if in_use {
            anyhow::bail!(
                "the store file is in use by a running node, so it was not checked; use \
                 `outpost status` to look at a running node, or stop it and run doctor again"
            );
        }
    }
    if let Some(listen) = listen {
        check_listen(listen, &mut f);
    }
    if f.failed > 0 {
        anyhow::bail!("{} problem(s) found", f.failed);
    }
    if f.warned > 0 {
        println!("healthy, with {} warning(s)", f.warned);
    } else {
        println!("healthy");
    }
    Ok(())
}

/// Loads and checks the configuration; returns the data directory to check, if one is known,
/// and the listen address of a valid configuration.
fn check_config(path: &Path, f: &mut Findings) -> (Option<PathBuf>, Option<SocketAddr>) {
    match Config::load(path) {
        Ok(config) => {
            f.ok(format!(
                "config: valid (store {}, channel {}, listen {}, HQ {})",
                config.node.store_id, config.node.channel_id, config.node.listen, config.hq.url
            ));
            if !config.node.listen.ip().is_loopback() {
                f.warn(format!(
                    "config key `node.listen`: {} is reachable from the store LAN; the node \
                     must run with authentication there",
                    config.node.listen
                ));
            }
            (Some(config.node.data_dir), Some(config.node.listen))
        }
        Err(e) => {
            f.fail(e.to_string());
            // The store can still be checked if the data directory can be read from the file.
            let dir = std::env::var_os("OUTPOST_DATA_DIR")
                .map(PathBuf::from)
                .or_else(|| raw_data_dir(path));
            if dir.is_none() {
                f.detail("node.data_dir unknown: the store file is not checked");
            }
            (dir, None)
        }
    }
}

/// `node.data_dir` read from the file as plain TOML, for a file the loader refused.
fn raw_data_dir(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: toml::Table = toml::from_str(&text).ok()?;
    value
        .get("node")?
        .get("data_dir")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

/// With no node running on this store, the listen address must be free for it.
fn check_listen(listen: SocketAddr, f: &mut Findings) {
    match std::net::TcpListener::bind(listen) {
        Ok(_) => f.ok(format!("node.listen {listen}: free for the node")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => f.fail(format!(
            "config key `node.listen`: {listen} is taken by another program; the node could \
             not start"
        )),
        Err(e) => f.fail(format!(
            "config key `node.listen`: cannot listen on {listen}: {e}"
        )),
    }
}

fn check_data_dir(dir: &Path, f: &mut Findings) {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            // A real write, not the permission bits: a read-only mount or a full disk shows
            // up only when writing.
            match tempfile::Builder::new()
                .prefix(".outpost-doctor-")
                .tempfile_in(dir)
                .and_then(|mut t| t.write_all(b"ok").and_then(|()| t.as_file().sync_all()))
            {
                Ok(()) => f.ok(format!("node.data_dir {shown}: exists and is writable")),
                Err(e) => f.fail(format!(
                    "config key `node.data_dir`: {shown} is not writable: {e}"
                )),
            }
        }
        Ok(_) => f.fail(format!(
            "config key `node.data_dir`: {shown} exists but is not a directory"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => f.warn(format!(
            "node.data_dir {shown} does not exist yet: the node creates it (and an empty \
             store) at first start"
        )),
        Err(e) => f.fail(format!("config key `node.data_dir`: {shown}: {e}")),
    }
    // Free space where the store lives (or would live).
    let probe = dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("."));
    match fs4::available_space(probe) {
        Ok(free) if free < LOW_DISK_BYTES => f.fail(format!(
            "disk: only {} free on {}; the node refuses writes (507) when the disk is full",
            bytes(free),
            probe.display()
        )),
        Ok(free) => f.ok(format!("disk: {} free on {}", bytes(free), probe.display())),
        Err(e) => f.warn(format!(
            "disk: free space on {} unknown: {e}",
            probe.display()
        )),
    }
}

/// Checks the store file; returns true when a running node holds it.
fn check_store(path: &Path, dir: &Path, quick: bool, f: &mut Findings) -> bool {
    let shown = path.display();
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.exists() {
                f.warn(format!(
                    "store {shown}: no store file yet (the node creates it at first start)"
                ));
            }
            return false;
        }
        Err(e) => {
            f.fail(format!("store {shown}: {e}"));
            return false;
        }
    };
    // A file its node did not close is checked on a recovered copy: the node recovers the
    // file itself at its next start, and doctor changes nothing.
    let mut recovered = None;
    let first = match inspect(path) {
        Err(e) if e.needs_recovery() => {
            f.warn(format!(
                "store {shown}: not closed cleanly (power cut or killed node); the node \
                 recovers it at its next start. Checking a recovered scratch copy"
            ));
            match recovered_copy(path, dir) {
                Ok(copy) => {
                    let summary = inspect(copy.path());
                    recovered = Some(copy);
                    summary
                }
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    let summary = match first {
        Ok(s) => s,
        Err(e) if e.is_in_use() => {
            f.warn(format!(
                "store {shown}: in use by a running node; not checked (use `outpost status`)"
            ));
            return true;
        }
        Err(e) => {
            damaged(f, path, &e);
            return false;
        }
    };
    let schema = summary
        .schema_version
        .map_or("none".to_string(), |v| v.to_string());
    if summary.problems.is_empty() {
        f.ok(format!(
            "store {shown}: {}, schema version {schema}, {} rows, every record readable",
            bytes(size),
            summary.total_rows
        ));
    } else {
        f.fail(format!(
            "store {shown}: {} problem(s) in its content",
            summary.problems.len()
        ));
        for p in &summary.problems {
            f.detail(p);
        }
        f.detail("restore it from a backup made with `outpost backup` (see README)");
    }
    // In the order a technician reads a queue, not alphabetically.
    let states: Vec<String> = ["pending", "uploaded", "held", "failed", "completed"]
        .iter()
        .map(|s| {
            let n = summary.operations_by_state.get(*s).copied().unwrap_or(0);
            format!("{s} {n}")
        })
        .collect();
    f.detail(format!("operations: {}", states.join(", ")));
    f.detail(format!("customers: {}", summary.customers));
    let tables: Vec<String> = summary
        .tables
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    f.detail(format!("tables: {}", tables.join(", ")));
    if summary
        .operations_by_state
        .get("failed")
        .copied()
        .unwrap_or(0)
        > 0
    {
        f.warn(
            "failed operations wait for an operator: start the node and use `outpost ops list \
             --state failed`",
        );
    }
    if recovered.is_some() {
        f.ok("integrity: every page checksum verified (while recovering the scratch copy)");
        return false;
    }
    if quick {
        f.detail("integrity check skipped (--quick)");
        return false;
    }
    let free = fs4::available_space(dir).unwrap_or(0);
    if free < size.saturating_add(LOW_DISK_BYTES) {
        f.warn(format!(
            "integrity: not checked: it copies the store file and {} free is too little",
            bytes(free)
        ));
        return false;
    }
    match verify_integrity(path, dir) {
        Ok(()) => f.ok("integrity: every page checksum verified (on a scratch copy)"),
        Err(e) if e.is_in_use() => {
            f.warn("integrity: not checked: a node started meanwhile");
            return true;
        }
        Err(e) => damaged(f, path, &e),
    }
    false
}

fn damaged(f: &mut Findings, path: &Path, e: &StoreError) {
    f.fail(format!("store {}: {e}", path.display()));
    if !matches!(e, StoreError::Damaged { .. }) {
        return;
    }
    f.detail(format!(
        "the way out: move it aside (mv {0} {0}.damaged), then either restore the latest \
         backup (cp BACKUP.redb {0}) or start the node empty (it downloads customers again; \
         operations not yet at HQ are lost)",
        path.display()
    ));
}
