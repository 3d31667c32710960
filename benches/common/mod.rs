//! Shared bench plumbing: scale, result tables, JSON results, the data sets (customers as the
//! till creates them and as HQ sends them down), the fsync probe, latency percentiles, peak RSS,
//! and the SQLite baselines.

#![allow(dead_code)]

pub mod http;
pub mod sqlite;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use outpost::domain::NewCustomer;
use outpost::domain::view::CustomerView;
use outpost::hq::emulator::HqConfig;
use outpost::store::cdx::{HeldPackage, HqCopy, JOB_CHANNEL, JOB_CUSTOMERS, JOB_GLOBAL};
use outpost::store::writer::{self, Command, Submission, WriterHandle, WriterOptions};
use outpost::store::{Store, StoreOptions};

/// The node's allocator (`outpost::process`): each bench's `main` calls
/// `outpost::process::configure_allocator()` first, as the node's does.
#[global_allocator]
static ALLOCATOR: outpost::process::Allocator = outpost::process::Allocator;

/// Workload scale from `OUTPOST_BENCH_SCALE` (1.0 = full size).
pub fn scale() -> f64 {
    std::env::var("OUTPOST_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0)
}

/// `full` scaled down, at least `min`.
pub fn scaled(full: usize, min: usize) -> usize {
    ((full as f64 * scale()) as usize).max(min)
}

/// One measured figure beside its baseline.
pub struct Figure {
    pub id: &'static str,
    pub workload: String,
    pub value: f64,
    pub unit: &'static str,
    pub baseline: f64,
    pub baseline_unit: &'static str,
    pub baseline_name: String,
    /// Whether a larger value is better (throughput) or a smaller one (latency, memory, time):
    /// the ratio is always "how many times better than the baseline".
    pub higher_is_better: bool,
}

impl Figure {
    /// A throughput-like figure (higher is better).
    pub fn higher(
        id: &'static str,
        workload: String,
        value: f64,
        unit: &'static str,
        baseline: f64,
        baseline_unit: &'static str,
        baseline_name: impl Into<String>,
    ) -> Self {
        Figure {
            id,
            workload,
            value,
            unit,
            baseline,
            baseline_unit,
            baseline_name: baseline_name.into(),
            higher_is_better: true,
        }
    }

    /// A latency-, memory- or time-like figure (lower is better).
    pub fn lower(
        id: &'static str,
        workload: String,
        value: f64,
        unit: &'static str,
        baseline: f64,
        baseline_unit: &'static str,
        baseline_name: impl Into<String>,
    ) -> Self {
        Figure {
            higher_is_better: false,
            ..Figure::higher(
                id,
                workload,
                value,
                unit,
                baseline,
                baseline_unit,
                baseline_name,
            )
        }
    }

    /// Value over baseline (higher is better), or baseline over value (lower is better).
    pub fn ratio(&self) -> f64 {
        let (num, den) = if self.higher_is_better {
            (self.value, self.baseline)
        } else {
            (self.baseline, self.value)
        };
        if den == 0.0 { 0.0 } else { num / den }
    }
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Prints a markdown table of `figures` and writes each to `target/bench-results/<id>.json`.
pub fn report(title: &str, figures: &[Figure]) {
    let mut out = String::new();
    out.push_str(&format!("\n### {title} (scale {})\n\n", scale()));
    out.push_str("| id | workload | figure | baseline | ratio |\n|---|---|---|---|---|\n");
    for f in figures {
        out.push_str(&format!(
            "| {} | {} | {} {} | {} {} ({}) | {:.2}× |\n",
            f.id,
            f.workload,
            fmt_num(f.value),
            f.unit,
            fmt_num(f.baseline),
            f.baseline_unit,
            f.baseline_name,
            f.ratio()
        ));
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
    let dir = results_dir();
    if std::fs::create_dir_all(&dir).is_ok() {
        for f in figures {
            let json = serde_json::json!({
                "id": f.id,
                "workload": f.workload,
                "value": f.value,
                "unit": f.unit,
                "baseline": f.baseline,
                "baseline_unit": f.baseline_unit,
                "baseline_name": f.baseline_name,
                "ratio": f.ratio(),
                "higher_is_better": f.higher_is_better,
                "scale": scale(),
            });
            let _ = std::fs::write(dir.join(format!("{}.json", f.id)), json.to_string());
        }
    }
}

/// `target/bench-results`.
pub fn results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-results")
}

/// A scratch directory for bench data on the same disk as the build (not a tmpfs).
pub fn scratch_dir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-scratch");
    std::fs::create_dir_all(&base).expect("scratch base");
    tempfile::tempdir_in(base).expect("scratch dir")
}

/// This disk's durable 4 KiB write rate: fsyncs per second over about `duration`, in `dir`.
pub fn fsync_rate(dir: &Path, duration: Duration) -> f64 {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .expect("probe file");
    let block = vec![7u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration || n < 20 {
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(0)).expect("seek");
        file.write_all(&block).expect("write");
        file.sync_data().expect("fsync");
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    rate
}

/// The `p`-th percentile (0..=100) of `samples`, in milliseconds. Sorts `samples`.
pub fn percentile_ms(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)].as_secs_f64() * 1000.0
}

/// This process's current and peak resident set size and its thread count, as
/// `/proc/self/status` shows them.
pub fn rss_line() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .filter(|l| {
            l.starts_with("VmRSS:")
                || l.starts_with("VmHWM:")
                || l.starts_with("RssAnon:")
                || l.starts_with("RssFile:")
                || l.starts_with("Threads:")
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// This process's peak resident set size (VmHWM), MiB.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

// ---------------------------------------------------------------------------------------------
// Data sets

const FIRST: [&str; 40] = [
    "Õie", "Mari", "Jaan", "Kalle", "Tiina", "Peeter", "Anu", "Mart", "Liis", "Toomas", "Kadri",
    "Andres", "Triin", "Marko", "Kristi", "Urmas", "Ülle", "Siim", "Kätlin", "Rein", "Merike",
    "Tõnu", "Helen", "Priit", "Eve", "Jüri", "Maarja", "Ants", "Piret", "Indrek", "Sirje", "Aivar",
    "Külli", "Margus", "Reet", "Tarmo", "Ene", "Raivo", "Malle", "Sten",
];
const SYL: [&str; 20] = [
    "tamm", "kask", "mets", "saar", "pärn", "kuusk", "lepp", "vaher", "rebane", "ilves", "karu",
    "hunt", "lõhmus", "sepp", "kivi", "järv", "mägi", "org", "rand", "oja",
];
const MID: [&str; 20] = [
    "", "a", "i", "la", "ma", "ve", "ri", "no", "ka", "ta", "su", "pe", "lo", "mi", "ra", "ne",
    "du", "ko", "vi", "se",
];
const SUFFIX: [&str; 8] = ["", "e", "son", "ik", "mäe", "berg", "salu", "ste"];

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The first name of customer `i` (40 names).
pub fn first_name(i: usize) -> &'static str {
    FIRST[(i / 7) % FIRST.len()]
}

/// The last name of customer `i`: 64,000 distinct names (about 16 customers each in a
/// million), built from Estonian name syllables.
pub fn last_name(i: usize) -> String {
    format!(
        "{}{}{}{}",
        capitalise(SYL[i % 20]),
        SYL[(i / 20) % 20],
        MID[(i / 400) % 20],
        SUFFIX[(i / 8000) % 8]
    )
}

/// The phone number of customer `i` (unique).
pub fn phone(i: usize) -> String {
    format!("+372 5{:07}", i % 10_000_000)
}

/// The e-mail of customer `i` (unique).
pub fn email(i: usize) -> String {
    format!("c{i}@example.ee")
}

/// HQ's account number of customer `i`, as the emulator numbers them.
pub fn account(i: usize) -> String {
    format!("C{:06}", i + 1)
}

/// Customer `i` as the till creates it.
pub fn customer(i: usize) -> NewCustomer {
    NewCustomer {
        first_name: first_name(i).into(),
        last_name: last_name(i),
        email: Some(email(i)),
        phone: Some(phone(i)),
        customer_group: Some("RETAIL".into()),
        language: Some("et-EE".into()),
    }
}

/// The JSON body of customer `i`, as a till posts it.
pub fn customer_body(i: usize) -> String {
    serde_json::to_string(&customer(i)).expect("customer json")
}

/// Customer `i` as job 1010 brings it down, built the way `sync::cdx` builds it.
pub fn hq_copy(i: usize, now: i64) -> HqCopy {
    outpost::sync::cdx::copy_from_wire(
        outpost::hq::wire::HqCustomerRecord {
            account_number: account(i),
            origin_store_id: None,
            origin_customer_ref: None,
            fields: customer(i),
            addresses: Vec::new(),
            contacts: Vec::new(),
            affiliations: Vec::new(),
            attributes: Vec::new(),
            version: i as u64 + 1,
        },
        "S0001",
        now,
    )
}

/// An empty view (for code that needs one to fill).
pub fn empty_view() -> CustomerView {
    CustomerView {
        customer_ref: String::new(),
        account_number: None,
        fields: customer(0),
        addresses: Vec::new(),
        contacts: Vec::new(),
        affiliations: Vec::new(),
        attributes: Vec::new(),
        last_seq: 0,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// The node's store

/// Opens a store as the node does (its default page cache, quick repair off), or with quick
/// repair on when `OUTPOST_BENCH_QUICK_REPAIR=1` (to compare).
pub fn open_store(path: &Path) -> Store {
    open_store_with(
        path,
        std::env::var("OUTPOST_BENCH_QUICK_REPAIR").as_deref() == Ok("1"),
    )
}

/// Opens a store as the node does (its default page cache), with redb's quick repair on or off.
pub fn open_store_with(path: &Path, quick_repair: bool) -> Store {
    let options = StoreOptions {
        quick_repair,
        ..StoreOptions::new(outpost::store::DEFAULT_CACHE_BYTES)
    };
    Store::open(path, &options).expect("open store")
}

/// The node's default `limits.group_commit_wait_us`: the benches' writers, and the SQLite
/// baseline's, wait as the node does.
pub fn group_wait() -> Duration {
    Duration::from_micros(outpost::config::Limits::default().group_commit_wait_us)
}

/// Starts a writer on `store`.
pub fn start_writer(
    store: &Store,
    group_commit_max: usize,
    rt: &tokio::runtime::Runtime,
) -> (WriterHandle, std::thread::JoinHandle<()>) {
    start_writer_merging(store, group_commit_max, rt, writer::MergeOptions::default())
}

/// As [`start_writer`], merging the search terms log as `merge` says.
pub fn start_writer_merging(
    store: &Store,
    group_commit_max: usize,
    rt: &tokio::runtime::Runtime,
    merge: writer::MergeOptions,
) -> (WriterHandle, std::thread::JoinHandle<()>) {
    writer::spawn(
        store.clone(),
        WriterOptions {
            store_id: "S0001".into(),
            queue: 4096,
            group_commit_max,
            merge,
            group_wait: group_wait(),
            replies_on: Some(rt.handle().clone()),
        },
    )
    .expect("writer")
}

/// A multi-threaded runtime for a bench.
pub fn runtime() -> tokio::runtime::Runtime {
    outpost::process::runtime_builder()
        .build()
        .expect("runtime")
}

/// Makes the node hold HQ's configuration for asynchronous mode (every feature on, async
/// customer creation on), as a CDX download of 1110 and 1070 would.
pub async fn hold_async_config(writer: &WriterHandle) {
    let mut hq = HqConfig::new();
    hq.enable_all_features();
    hq.set_channel(None, true).expect("channel");
    let now = outpost::store::now_ms();
    let global = hq.global_package(now);
    let channel = hq.channel_package("CH0001", now);
    for (job, package) in [
        (
            JOB_GLOBAL,
            HeldPackage {
                version: global.version,
                received_at_ms: now,
                generated_at_ms: now,
                body: serde_json::to_value(&global.features).expect("features"),
            },
        ),
        (
            JOB_CHANNEL,
            HeldPackage {
                version: channel.version,
                received_at_ms: now,
                generated_at_ms: now,
                body: serde_json::json!({ "create_customer_async": channel.create_customer_async }),
            },
        ),
    ] {
        writer
            .execute(Command::ApplyConfig { job, package })
            .await
            .expect("config held");
    }
}

/// Loads customers `0..n` as a 1010 full download, `chunk` customers per transaction.
pub async fn load_customers(writer: &WriterHandle, n: usize, chunk: usize) {
    let now = outpost::store::now_ms();
    let mut i = 0;
    while i < n {
        let end = (i + chunk).min(n);
        let copies: Vec<HqCopy> = (i..end).map(|k| hq_copy(k, now)).collect();
        writer
            .execute(Command::ApplyCustomers {
                package: HeldPackage {
                    version: end as u64,
                    received_at_ms: now,
                    generated_at_ms: now,
                    body: serde_json::json!({ "customers": end }),
                },
                copies,
            })
            .await
            .expect("customers applied");
        i = end;
    }
    let _ = JOB_CUSTOMERS;
}

/// Queues `n` customer creates (customers `offset..offset + n`) from `submitters` concurrent
/// submitters; returns the elapsed time.
pub async fn enqueue(
    writer: &WriterHandle,
    offset: usize,
    n: usize,
    submitters: usize,
) -> Duration {
    let per = n / submitters;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..submitters {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                writer
                    .execute(Command::Submit(Submission::NewCustomer(customer(
                        offset + s * per + i,
                    ))))
                    .await
                    .expect("create acknowledged");
            }
        }));
    }
    for t in tasks {
        t.await.expect("submitter");
    }
    start.elapsed()
}

/// Names of the five kinds of query in the P5 mix.
pub const QUERY_KINDS: [&str; 5] = ["account", "temp_ref", "phone", "email", "name_prefix"];

/// The queries of the P5 mix about customer `i` (of `0..cached`, as job 1010 brought them) and
/// local create `j` (of `0..local`, created at this node as `S0001-T<j+1>`): account number,
/// temporary reference, phone, e-mail, and a name prefix (the first name and the last name
/// less its last two letters, as a till types them before the list narrows).
pub fn queries(i: usize, j: usize) -> [String; 5] {
    let last: Vec<char> = last_name(i).chars().collect();
    let prefix: String = last[..last.len().saturating_sub(2).max(4).min(last.len())]
        .iter()
        .collect();
    [
        account(i),
        format!("S0001-T{}", j + 1),
        phone(i),
        email(i),
        format!("{} {}", first_name(i), prefix),
    ]
}

/// A broad name query about customer `i`: the first name and the first four letters of the
/// last name (matching about 1 in 800 customers: tens of thousands of candidates in a million).
pub fn broad_query(i: usize) -> String {
    let prefix: String = last_name(i).chars().take(4).collect();
    format!("{} {}", first_name(i), prefix)
}

/// A deterministic spread of customer indexes in `0..n`.
pub fn pick(k: usize, n: usize) -> usize {
    (k.wrapping_mul(2_654_435_761) ^ (k >> 3)) % n.max(1)
}
