//! P5, P7 and P8 over one data set: 1,000,000 customers cached (a 1010 full download, applied
//! through the writer) and 100,000 customer creates queued at the node.
//!
//! - P5: the search mix (account number, temporary reference, phone, e-mail, name prefix) in
//!   process, single-threaded, beside the same data and the same queries over SQLite (a term
//!   table with (term, ref) primary key); and over HTTP with 64 keep-alive clients.
//! - P7: peak RSS (VmHWM) of a child process that opens the store and serves the P5 mix in
//!   process and over HTTP (the bench re-executes itself, so neither the parent's data set
//!   build nor its HTTP load generator counts).
//! - P8: time to ready (store open, writer, server, first search answered over HTTP) in a child
//!   process after a clean stop, and after `kill -9` of a child that was writing, with redb's
//!   default (full repair walks the file) and with quick repair.
//!
//! Run: `cargo bench --bench scale` (`OUTPOST_BENCH_SCALE=0.02` for a quick pass).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Figure;
use common::http::{Request, Server, encode_query, load};
use outpost::store::Store;

const LIMIT: usize = 20;

fn open(path: &Path, quick_repair: bool) -> Store {
    common::open_store_with(path, quick_repair)
}

/// Sizes of the data set at this scale.
fn sizes() -> (usize, usize) {
    (
        common::scaled(1_000_000, 20_000),
        common::scaled(100_000, 2_000) / 64 * 64,
    )
}

/// The `k`-th query of the mix.
fn query(k: usize, cached: usize, local: usize) -> String {
    let i = common::pick(k / 5, cached);
    let j = common::pick(k / 5 + 7, local);
    common::queries(i, j)[k % 5].clone()
}

/// Runs `n` queries of the mix on one thread; per-kind latencies.
fn mix(
    n: usize,
    cached: usize,
    local: usize,
    mut search: impl FnMut(&str) -> usize,
) -> (f64, Vec<Vec<Duration>>) {
    let mut lat: Vec<Vec<Duration>> = (0..5).map(|_| Vec::with_capacity(n / 5 + 1)).collect();
    let mut found = 0usize;
    let start = Instant::now();
    for k in 0..n {
        let q = query(k, cached, local);
        let t = Instant::now();
        found += search(&q);
        lat[k % 5].push(t.elapsed());
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    assert!(
        found >= n * 9 / 10,
        "most queries find their customer ({found} of {n})"
    );
    (rate, lat)
}

fn summary(lat: &mut [Vec<Duration>]) -> (f64, f64, String) {
    let mut all: Vec<Duration> = lat.iter().flatten().copied().collect();
    let p50 = common::percentile_ms(&mut all, 50.0);
    let p99 = common::percentile_ms(&mut all, 99.0);
    let kinds = lat
        .iter_mut()
        .zip(common::QUERY_KINDS)
        .map(|(l, name)| format!("{name} {:.3}", common::percentile_ms(l, 99.0)))
        .collect::<Vec<_>>()
        .join(", ");
    (p50, p99, kinds)
}

fn build(path: &Path, lite_path: &Path, cached: usize, local: usize) {
    let store = open(path, false);
    let rt = common::runtime();
    let (writer, thread) = common::start_writer(&store, 512, &rt);
    let start = Instant::now();
    rt.block_on(async {
        common::hold_async_config(&writer).await;
        common::load_customers(&writer, cached, 50_000).await;
        eprintln!(
            "{cached} customers cached in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        common::enqueue(&writer, cached, local, 64).await;
        eprintln!(
            "{local} creates queued in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        // A node a moment after its busy spell has merged its search terms log: P5 measures
        // searches, not the merge (which would otherwise run beside them after the restart).
        let t = Instant::now();
        while store.search_log_entries() > 0 && t.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "search terms log merged in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    });
    drop(writer);
    thread.join().expect("writer");
    let start = Instant::now();
    let mut conn = common::sqlite::open(lite_path);
    let now = outpost::store::now_ms();
    common::sqlite::load_customers(
        &mut conn,
        (0..cached).map(|i| common::hq_copy(i, now)),
        50_000,
    );
    common::sqlite::load_creates(
        &mut conn,
        (cached..cached + local).map(common::customer),
        512,
    );
    eprintln!("SQLite data set in {:.1} s", start.elapsed().as_secs_f64());
}

fn search_path(k: usize, cached: usize, local: usize) -> String {
    format!(
        "/v1/customers?q={}&limit={LIMIT}",
        encode_query(&query(k, cached, local))
    )
}

/// Child: serve the P5 mix in process and over HTTP for a while, then print peak RSS.
fn child_serve(path: &Path) {
    let (cached, local) = sizes();
    let store = open(path, false);
    let rt = common::runtime();
    let (writer, thread) = common::start_writer(&store, 512, &rt);
    let server = rt.block_on(Server::start(store.clone(), writer.clone()));
    eprintln!("P7 child, serving: {}", common::rss_line());
    let n = common::scaled(30_000, 5_000);
    mix(n, cached, local, |q| {
        store.search(q, LIMIT).expect("search").len()
    });
    eprintln!(
        "P7 child, after {n} searches in process: {}",
        common::rss_line()
    );
    // The HTTP load comes from the parent, so that its memory does not count here.
    println!("ADDR {}", server.addr);
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .expect("parent's go-ahead");
    eprintln!("P7 child, after the HTTP load: {}", common::rss_line());
    rt.block_on(server.stop());
    drop(writer);
    thread.join().expect("writer");
    // As the node stops: the file is closed and sealed.
    store.close().expect("store closed");
    println!("RSS {:.1}", common::peak_rss_mib());
}

/// Runs the P7 child: it serves the mix in process, then the parent loads it over HTTP.
/// Returns (peak RSS MiB, HTTP searches/s).
fn serve_and_load(path: &Path, cached: usize, local: usize) -> (f64, f64) {
    use std::io::Write;
    let exe = std::env::current_exe().expect("exe");
    let mut c = Process::new(exe)
        .arg("--child-serve")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("serve child");
    let mut lines = BufReader::new(c.stdout.take().expect("stdout")).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines.next().expect("child answers").expect("line");
        if let Some(a) = line.strip_prefix("ADDR ") {
            break a.parse().expect("address");
        }
    };
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-load")
        .enable_all()
        .build()
        .expect("client runtime");
    let path_of: Arc<dyn Fn(usize) -> String + Send + Sync> =
        Arc::new(move |k| search_path(k, cached, local));
    let secs = (5.0 * common::scale()).clamp(2.0, 5.0);
    let l = client_rt.block_on(load(
        addr,
        64,
        Duration::from_millis(500),
        Duration::from_secs_f64(secs),
        Request::Get(path_of),
        0,
    ));
    let mut stdin = c.stdin.take().expect("stdin");
    writeln!(stdin, "done").expect("go-ahead");
    let rss = loop {
        let line = lines.next().expect("child reports").expect("line");
        if let Some(r) = line.strip_prefix("RSS ") {
            break r.trim().parse::<f64>().expect("rss");
        }
    };
    assert!(c.wait().expect("child").success(), "serve child failed");
    (rss, l.rps)
}

/// Child: time from start to the first search answered over HTTP.
fn child_open(path: &Path, quick_repair: bool) {
    let started = Instant::now();
    let store = open(path, quick_repair);
    let opened = started.elapsed();
    let rt = common::runtime();
    let (writer, thread) = common::start_writer(&store, 512, &rt);
    let server = rt.block_on(Server::start(store.clone(), writer.clone()));
    let addr = server.addr;
    rt.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!("GET /v1/customers?q=C000001&limit=1 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.expect("send");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("answer");
        assert!(answer.starts_with(b"HTTP/1.1 200"), "search answered");
    });
    let ready = started.elapsed();
    rt.block_on(server.stop());
    drop(writer);
    thread.join().expect("writer");
    store.close().expect("store closed");
    println!(
        "READY {:.1} {:.1}",
        ready.as_secs_f64() * 1000.0,
        opened.as_secs_f64() * 1000.0
    );
}

/// Child: write creates until killed.
fn child_write(path: &Path, quick_repair: bool) {
    let store = open(path, quick_repair);
    let rt = common::runtime();
    let (writer, _thread) = common::start_writer(&store, 512, &rt);
    rt.block_on(async {
        let mut offset = 50_000_000;
        loop {
            common::enqueue(&writer, offset, 640, 64).await;
            offset += 640;
            println!("WRITING");
        }
    });
}

fn child(args: &[&str], path: &Path) -> Vec<String> {
    let exe = std::env::current_exe().expect("exe");
    let out = Process::new(exe)
        .args(args)
        .arg(path)
        .stderr(Stdio::inherit())
        .output()
        .expect("child");
    assert!(out.status.success(), "child {args:?} failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Kills a writing child with SIGKILL once it has committed for a while.
fn kill_while_writing(path: &Path, quick_repair: bool) {
    let exe = std::env::current_exe().expect("exe");
    let mut c = Process::new(exe)
        .arg("--child-write")
        .arg(if quick_repair { "quick" } else { "full" })
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("writer child");
    let mut lines = BufReader::new(c.stdout.take().expect("stdout")).lines();
    for _ in 0..3 {
        lines.next().expect("child writes").expect("line");
    }
    std::thread::sleep(Duration::from_millis(300));
    c.kill().expect("kill -9");
    c.wait().expect("reaped");
}

fn ready_ms(path: &Path, quick_repair: bool) -> (f64, f64) {
    let out = child(
        &["--child-open", if quick_repair { "quick" } else { "full" }],
        path,
    );
    assert_eq!(out[0], "READY");
    (out[1].parse().expect("ms"), out[2].parse().expect("ms"))
}

fn main() {
    outpost::process::configure_allocator();
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: usize| args.get(k).map(String::as_str);
    match arg(1) {
        Some("--child-serve") => return child_serve(Path::new(arg(2).expect("path"))),
        Some("--child-open") => {
            return child_open(Path::new(arg(3).expect("path")), arg(2) == Some("quick"));
        }
        Some("--child-write") => {
            return child_write(Path::new(arg(3).expect("path")), arg(2) == Some("quick"));
        }
        _ => {}
    }
    let (cached, local) = sizes();
    let dir = common::scratch_dir();
    let path: PathBuf = dir.path().join("outpost.redb");
    let lite_path = dir.path().join("baseline.db");
    build(&path, &lite_path, cached, local);
    let size_mib = std::fs::metadata(&path).map_or(0, |m| m.len()) as f64 / (1 << 20) as f64;

    // P5 in process, redb and SQLite alternating, on one thread.
    let n = common::scaled(30_000, 5_000);
    let store = open(&path, false);
    let conn = common::sqlite::open(&lite_path);
    // Warm both caches with one pass each.
    mix(n / 5, cached, local, |q| {
        store.search(q, LIMIT).expect("search").len()
    });
    mix(n / 5, cached, local, |q| {
        common::sqlite::search(&conn, q, LIMIT).len()
    });
    let (node_rate, mut node_lat) = mix(n, cached, local, |q| {
        store.search(q, LIMIT).expect("search").len()
    });
    let (lite_rate, mut lite_lat) = mix(n, cached, local, |q| {
        common::sqlite::search(&conn, q, LIMIT).len()
    });
    let (n50, n99, node_kinds) = summary(&mut node_lat);
    let (l50, l99, lite_kinds) = summary(&mut lite_lat);
    // Broad name queries, apart: each may examine up to the candidate cap.
    let broad_n = common::scaled(500, 100);
    let broad = |search: &mut dyn FnMut(&str) -> usize| {
        let mut lat = Vec::with_capacity(broad_n);
        let start = Instant::now();
        for k in 0..broad_n {
            let q = common::broad_query(common::pick(k + 11, cached));
            let t = Instant::now();
            search(&q);
            lat.push(t.elapsed());
        }
        let rate = broad_n as f64 / start.elapsed().as_secs_f64();
        (
            rate,
            common::percentile_ms(&mut lat, 50.0),
            common::percentile_ms(&mut lat, 99.0),
        )
    };
    let (bn_rate, bn50, bn99) = broad(&mut |q| store.search(q, LIMIT).expect("search").len());
    let (bl_rate, bl50, bl99) = broad(&mut |q| common::sqlite::search(&conn, q, LIMIT).len());
    drop(conn);
    drop(store);

    // P5 over HTTP and P7, in a child.
    let (rss, http_rate) = serve_and_load(&path, cached, local);

    // P8: clean stop (the serve child stopped cleanly), then kill -9, full repair and quick.
    let (clean, clean_open) = ready_ms(&path, false);
    kill_while_writing(&path, false);
    let (killed, killed_open) = ready_ms(&path, false);
    // The writer commits with quick repair on: its last commit saved the allocator state.
    kill_while_writing(&path, true);
    let (quick, quick_open) = ready_ms(&path, true);
    let size_after = std::fs::metadata(&path).map_or(0, |m| m.len()) as f64 / (1 << 20) as f64;

    let data = format!("{cached} customers cached, {local} creates queued");
    common::report(
        "P5 customer search at scale",
        &[
            Figure::higher(
                "p5-search-vs-sqlite",
                format!(
                    "{data}; {n} queries of the mix, limit {LIMIT}, one thread; p50 {n50:.3} ms; p99 by kind (ms): {node_kinds}"
                ),
                node_rate,
                "searches/s",
                lite_rate,
                "searches/s",
                format!(
                    "SQLite term index (term, ref) PK, same data and queries; p50 {l50:.3} ms, p99 {l99:.3} ms; by kind: {lite_kinds}"
                ),
            ),
            Figure::higher(
                "p5-search-broad-name-vs-sqlite",
                format!(
                    "{data}; {broad_n} broad name queries (first name + 4 letters of the last name), limit {LIMIT}; p50 {bn50:.2} ms, p99 {bn99:.2} ms"
                ),
                bn_rate,
                "searches/s",
                bl_rate,
                "searches/s",
                format!("SQLite, same queries; p50 {bl50:.2} ms, p99 {bl99:.2} ms"),
            ),
            Figure::lower(
                "p5-search-p99",
                format!("{data}; in-process p99 over the mix"),
                n99,
                "ms",
                0.2,
                "ms",
                "target p99",
            ),
            Figure::higher(
                "p5-search-http",
                format!("{data}; GET /v1/customers?q=…, 64 keep-alive clients"),
                http_rate,
                "searches/s",
                20_000.0,
                "searches/s",
                "target",
            ),
        ],
    );
    common::report(
        "P7 memory",
        &[Figure::lower(
            "p7-peak-rss",
            format!(
                "{data}; peak RSS (VmHWM) of a process serving the P5 mix in process and over HTTP, the load generator in another process (store file {size_mib:.0} MiB, page cache {} MiB)",
                outpost::store::DEFAULT_CACHE_BYTES >> 20
            ),
            rss,
            "MiB",
            200.0,
            "MiB",
            "target",
        )],
    );
    common::report(
        "P8 restart: time to the first search answered over HTTP",
        &[
            Figure::lower(
                "p8-ready-after-clean-stop",
                format!("{data}; clean stop; store open {clean_open:.1} ms"),
                clean,
                "ms",
                1000.0,
                "ms",
                "target",
            ),
            Figure::lower(
                "p8-ready-after-kill9",
                format!(
                    "{data}; kill -9 while writing, quick repair off (redb's default, the node's choice: the repair walks the file); store open {killed_open:.1} ms; file {size_after:.0} MiB"
                ),
                killed,
                "ms",
                5000.0,
                "ms",
                "target",
            ),
            Figure::lower(
                "p8-ready-after-kill9-quick-repair",
                format!(
                    "{data}; kill -9 while writing, quick repair on; store open {quick_open:.1} ms"
                ),
                quick,
                "ms",
                5000.0,
                "ms",
                "target",
            ),
        ],
    );
}
