//! P1: durable customer creates through the local HTTP API (`POST /v1/customers`), 64
//! concurrent keep-alive clients over loopback, each answer only after commit, beside the same
//! server's no-op JSON endpoint (same body parsing and the same layers as every route of the
//! node, nothing stored: the HTTP ceiling), measured in the same run, alternating so that all
//! see the same machine. The same no-op served bare, outside the node's layers, is measured
//! too, as information: what the layers cost, and the ceiling as measured before.
//!
//! Run: `cargo bench --bench http` (`OUTPOST_BENCH_SCALE=0.02` for a quick pass).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Figure;
use common::http::{BARE_NOOP_PATH, Load, NOOP_PATH, Request, Server, load};

const CLIENTS: usize = 64;

fn merge(a: &Load, b: &Load) -> (f64, f64, f64, f64) {
    // Two rounds of each: mean throughput, worse latency.
    (
        (a.rps + b.rps) / 2.0,
        a.p50.max(b.p50),
        a.p99.max(b.p99),
        a.p999.max(b.p999),
    )
}

fn main() {
    outpost::process::configure_allocator();
    let secs = (10.0 * common::scale()).clamp(2.0, 10.0);
    let duration = Duration::from_secs_f64(secs);
    let warmup = Duration::from_secs(1);
    let dir = common::scratch_dir();
    let store = common::open_store(&dir.path().join("bench.redb"));
    // The server has the node's runtime; the load generator its own single thread, like wrk
    // in its own process.
    let server_rt = common::runtime();
    let (writer, thread) = common::start_writer(&store, 512, &server_rt);
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-load")
        .enable_all()
        .build()
        .expect("client runtime");
    let server = server_rt.block_on(async {
        common::hold_async_config(&writer).await;
        Server::start(store.clone(), writer.clone()).await
    });
    let addr = server.addr;
    let body: Arc<dyn Fn(usize) -> String + Send + Sync> = Arc::new(common::customer_body);
    let noop = Request::Post(NOOP_PATH, body.clone());
    let bare = Request::Post(BARE_NOOP_PATH, body.clone());
    let create = Request::Post("/v1/customers", body);
    let mut rounds = Vec::new();
    let mut bare_rounds = Vec::new();
    for round in 0..2 {
        let n = client_rt.block_on(load(addr, CLIENTS, warmup, duration, noop.clone(), 0));
        let b = client_rt.block_on(load(addr, CLIENTS, warmup, duration, bare.clone(), 0));
        let c = client_rt.block_on(load(
            addr,
            CLIENTS,
            warmup,
            duration,
            create.clone(),
            round * 1_000_000_000,
        ));
        eprintln!(
            "round {round}: noop {:.0}/s p99 {:.2} ms ({} errors); bare noop {:.0}/s p99 {:.2} ms ({} errors); create {:.0}/s p99 {:.2} ms ({} errors)",
            n.rps, n.p99, n.errors, b.rps, b.p99, b.errors, c.rps, c.p99, c.errors
        );
        assert_eq!(c.errors, 0, "every create answered 2xx");
        assert_eq!(n.errors + b.errors, 0, "every no-op answered 2xx");
        rounds.push((n, c));
        bare_rounds.push(b);
    }
    let (noop_rps, n50, n99, n999) = merge(&rounds[0].0, &rounds[1].0);
    let (create_rps, c50, c99, c999) = merge(&rounds[0].1, &rounds[1].1);
    let (bare_rps, b50, b99, b999) = merge(&bare_rounds[0], &bare_rounds[1]);
    server_rt.block_on(server.stop());
    drop(writer);
    thread.join().expect("writer");
    let work = format!("{CLIENTS} keep-alive clients, 2×{secs:.0} s each");
    common::report(
        "P1 durable creates over HTTP vs the same server's no-op JSON endpoint",
        &[
            Figure::higher(
                "p1-http-creates",
                format!("POST /v1/customers, {work}; p50 {c50:.2} ms, p999 {c999:.2} ms"),
                create_rps,
                "creates/s",
                noop_rps,
                "req/s",
                format!(
                    "no-op JSON endpoint, same parsing, same layers; p50 {n50:.2} ms, p99 {n99:.2} ms, p999 {n999:.2} ms"
                ),
            ),
            Figure::higher(
                "p1-http-creates-vs-bare-noop",
                format!("POST /v1/customers, {work} (information: the ceiling as measured before)"),
                create_rps,
                "creates/s",
                bare_rps,
                "req/s",
                format!(
                    "the same no-op served bare, outside the node's layers; p50 {b50:.2} ms, p99 {b99:.2} ms, p999 {b999:.2} ms"
                ),
            ),
            Figure::lower(
                "p1-http-creates-p99",
                format!("POST /v1/customers p99, {work}"),
                c99,
                "ms",
                10.0,
                "ms",
                "target p99",
            ),
        ],
    );
}
