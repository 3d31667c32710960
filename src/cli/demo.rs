//! `outpost demo`: an HQ emulator and a node in this process, simulated tills trading through
//! an HQ outage and a poison record, and what happened, in plain words.
//!
//! Everything goes through the node's real HTTP API, as tills and a technician would use it;
//! HQ's faults are switched in-process. The node's diagnostics stay live while it runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use outpost::config::{Config, LogConfig};
use outpost::hq::emulator::{Faults, HqEmulator, HqEmulatorConfig, RejectRule};
use outpost::node::Node;

/// Longest wait for HQ to confirm what the tills wrote, per phase.
const PHASE_LIMIT: Duration = Duration::from_secs(90);
/// How often the demo looks at the node's state while it waits.
const POLL: Duration = Duration::from_millis(100);
/// The last name HQ's poison rule refuses.
const POISON: &str = "Poison";

const FIRST: [&str; 8] = [
    "Mari", "Jaan", "Liis", "Toomas", "Kati", "Andres", "Õie", "Mart",
];
const LAST: [&str; 8] = [
    "Tamm", "Saar", "Sepp", "Mägi", "Kask", "Kukk", "Rebane", "Ilves",
];

/// Options of `outpost demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Address of the node's local API and diagnostics page.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the HQ emulator (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub hq_listen: SocketAddr,
    /// Directory of the node's store [default: a temporary directory, removed at exit].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of simulated tills (1-16).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub tills: u16,
    /// Customers each till creates in the first phase (1-500).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub customers: u16,
    /// Seconds HQ stays offline (1-120).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub outage_secs: u64,
    /// Exit after the summary instead of running until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

/// The tills' view of the node: a JSON client over loopback.
#[derive(Clone)]
struct Till {
    http: reqwest::Client,
    base: String,
}

impl Till {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("calling {path}"))?;
        let status = resp.status();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// A call that must succeed with `want`.
    async fn must(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        want: StatusCode,
    ) -> anyhow::Result<Value> {
        let (status, answer) = self.call(method, path, body).await?;
        if status != want {
            anyhow::bail!("{path}: the node answered {status}: {answer}");
        }
        Ok(answer)
    }

    async fn queue(&self) -> anyhow::Result<Queue> {
        let diag = self
            .must(Method::GET, "/diag", None, StatusCode::OK)
            .await?;
        let n = |s: &str| diag["queue"][s].as_u64().unwrap_or(0);
        Ok(Queue {
            pending: n("pending"),
            uploaded: n("uploaded"),
            completed: n("completed"),
            failed: n("failed"),
            held: n("held"),
            diag,
        })
    }

    async fn op_state(&self, id: &str) -> anyhow::Result<Value> {
        self.must(
            Method::GET,
            &format!("/v1/sync/operations/{id}"),
            None,
            StatusCode::OK,
        )
        .await
    }
}

struct Queue {
    pending: u64,
    uploaded: u64,
    completed: u64,
    failed: u64,
    held: u64,
    diag: Value,
}

impl Queue {
    fn in_flight(&self) -> u64 {
        self.pending + self.uploaded
    }
}

/// What the tills did.
#[derive(Default)]
struct Tally {
    customers: u64,
    accepted: u64,
    refused: u64,
    slowest: Duration,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.customers += other.customers;
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.slowest = self.slowest.max(other.slowest);
    }
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Runs the demo; with `--exit`, returns after the summary, else waits for Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    // The node's own warnings (HQ unreachable during the outage) would drown the story.
    outpost::telemetry::init_logging(&LogConfig {
        filter: "error".into(),
        ..LogConfig::default()
    });
    let hq = HqEmulator::start(HqEmulatorConfig {
        listen: args.hq_listen,
        sync_interval: Some(Duration::from_millis(300)),
        seed: 0,
    })
    .await?;
    hq.enable_async();
    let scratch;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            scratch = tempfile::Builder::new()
                .prefix("outpost-demo-")
                .tempdir()
                .context("cannot make a temporary directory for the demo's store")?;
            scratch.path().to_path_buf()
        }
    };
    let mut config = Config::for_dir(&data_dir);
    config.node.listen = args.listen;
    config.hq.url = hq.url();
    config.hq.request_timeout_ms = 2_000;
    // Quick turns, so the story plays in seconds rather than minutes.
    config.upload.interval_ms = 250;
    config.upload.retry_initial_ms = 200;
    config.upload.retry_max_ms = 1_500;
    let node = match Node::start(&config).await {
        Ok(node) => node,
        Err(e) => {
            hq.shutdown().await;
            return Err(e).with_context(|| format!("cannot start the node on {}", args.listen));
        }
    };
    let base = super::node_client::url_for_listen(node.local_addr());
    println!("HQ emulator        {}", hq.url());
    println!(
        "outpost node       {base}  (store in {})",
        data_dir.display()
    );
    println!("diagnostics page   {base}/   (JSON report: {base}/diag)");
    let till = Till {
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()?,
        base: base.clone(),
    };
    let result = story(&args, &till, &hq).await;
    match &result {
        Ok(()) if !args.exit => {
            println!(
                "\nThe node and HQ keep running: the diagnostics page stays live at {base}/ \
                 (Ctrl-C to stop)."
            );
            crate::shutdown_signal().await;
        }
        _ => {}
    }
    node.shutdown().await?;
    hq.shutdown().await;
    result
}

async fn story(args: &DemoArgs, till: &Till, hq: &HqEmulator) -> anyhow::Result<()> {
    let start = Instant::now();
    // A --data-dir kept from an earlier run already holds confirmed operations.
    let confirmed_before = till.queue().await?.completed;
    // --- configuration
    println!("\n1. HQ is configured for asynchronous customer creation; the node downloads it");
    till.must(Method::POST, "/v1/cdx/refresh", None, StatusCode::OK)
        .await
        .context("CDX refresh")?;
    let q = till.queue().await?;
    for intent in ["create", "edit"] {
        println!(
            "   {intent}: {} ({})",
            q.diag["mode"][intent]["mode"].as_str().unwrap_or("?"),
            q.diag["mode"][intent]["reason"].as_str().unwrap_or("?")
        );
    }
    let mut total = Tally::default();

    // --- normal trading
    let per_till = u64::from(args.customers);
    let tills = u64::from(args.tills);
    println!(
        "\n2. {tills} tills each create {per_till} customers, edit each one and add an address"
    );
    let progress = bar(tills * per_till * 3, "   writes {bar:30} {pos}/{len}");
    let mut tasks = Vec::new();
    for t in 0..tills {
        let till = till.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            trade(&till, t, per_till, &progress).await
        }));
    }
    let mut phase = Tally::default();
    for task in tasks {
        phase.add(task.await.context("a till task failed")??);
    }
    progress.finish_and_clear();
    println!(
        "   {} customers, {} writes accepted (slowest answer {} ms)",
        phase.customers,
        phase.accepted,
        phase.slowest.as_millis()
    );
    total.add(phase);
    let t = Instant::now();
    drain(till, "confirmed by HQ").await?;
    println!(
        "   every write uploaded and confirmed by HQ in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // --- outage
    println!(
        "\n3. HQ goes offline for {} s (a WAN outage); the tills keep trading",
        args.outage_secs
    );
    hq.set_faults(Faults {
        offline: true,
        ..Faults::default()
    });
    let until = Instant::now() + Duration::from_secs(args.outage_secs);
    let mut tasks = Vec::new();
    for t in 0..tills {
        let till = till.clone();
        tasks.push(tokio::spawn(
            async move { trade_until(&till, t, until).await },
        ));
    }
    let mut phase = Tally::default();
    for task in tasks {
        phase.add(task.await.context("a till task failed")??);
    }
    let q = till.queue().await?;
    let last_error = q.diag["sync"]["last_upload_error"]
        .as_str()
        .unwrap_or("none yet")
        .to_string();
    println!(
        "   writes kept succeeding: {} of {} accepted, slowest answer {} ms",
        phase.accepted,
        phase.accepted + phase.refused,
        phase.slowest.as_millis()
    );
    println!(
        "   queue depth at the node: {} pending; the uploader's last error: {last_error}",
        q.pending
    );
    if phase.refused > 0 {
        anyhow::bail!("{} writes were refused while HQ was offline", phase.refused);
    }
    total.add(phase);
    println!("   HQ is back");
    hq.set_faults(Faults::default());
    let t = Instant::now();
    let drained = drain(till, "drained").await?;
    println!(
        "   the queue drained: {drained} operations confirmed by HQ in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // --- poison
    println!("\n4. HQ refuses a poison record (last name {POISON:?}); the record's edit waits");
    hq.set_faults(Faults {
        reject: Some(RejectRule {
            field: "last_name".into(),
            equals: POISON.into(),
        }),
        ..Faults::default()
    });
    let created = till
        .must(
            Method::POST,
            "/v1/customers",
            Some(&json!({"first_name": "Paula", "last_name": POISON,
                         "email": "paula.demo@example.com"})),
            StatusCode::ACCEPTED,
        )
        .await?;
    let customer_ref = created["customer_ref"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let create_id = created["operation_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let edited = till
        .must(
            Method::PATCH,
            &format!("/v1/customers/{customer_ref}"),
            Some(&json!({"phone": "+372 5555 0000"})),
            StatusCode::ACCEPTED,
        )
        .await?;
    let edit_id = edited["operation_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Another customer at the same time: a poisoned record holds up no one else.
    let other = till
        .must(
            Method::POST,
            "/v1/customers",
            Some(&json!({"first_name": "Karl", "last_name": "Kask"})),
            StatusCode::ACCEPTED,
        )
        .await?;
    let other_id = other["operation_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    total.add(Tally {
        customers: 2,
        accepted: 3,
        ..Tally::default()
    });
    let failed = wait_state(till, &create_id, "failed").await?;
    wait_state(till, &edit_id, "held").await?;
    wait_state(till, &other_id, "completed").await?;
    println!(
        "   {customer_ref}: the create failed at HQ ({}: {})",
        failed["error"]["code"].as_str().unwrap_or("?"),
        failed["error"]["message"].as_str().unwrap_or("?")
    );
    println!("   its edit is held behind it, in order; another customer went through meanwhile");
    println!("   the operator fixes the record: PUT the corrected payload, then re-sync");
    let mut payload = failed["payload"].clone();
    payload["last_name"] = json!("Poisson");
    till.must(
        Method::PUT,
        &format!("/v1/sync/operations/{create_id}"),
        Some(&json!({ "payload": payload })),
        StatusCode::OK,
    )
    .await?;
    till.must(
        Method::POST,
        &format!("/v1/sync/operations/{create_id}/sync"),
        None,
        StatusCode::OK,
    )
    .await?;
    wait_state(till, &create_id, "completed").await?;
    wait_state(till, &edit_id, "completed").await?;
    println!("   fixed: the create and the held edit both completed at HQ");
    hq.set_faults(Faults::default());

    // --- summary
    let q = till.queue().await?;
    let confirmed = q.completed.saturating_sub(confirmed_before);
    let at_hq = hq.customers().len() as u64;
    let uploaded = q.diag["sync"]["operations_uploaded"].as_u64().unwrap_or(0);
    println!("\nSummary ({:.1} s)", start.elapsed().as_secs_f64());
    println!("  customers created by tills   {}", total.customers);
    println!(
        "  writes accepted              {} (every one answered at once, HQ up or down)",
        total.accepted
    );
    println!("  operations uploaded to HQ    {uploaded} (a re-synced one counts again)");
    println!("  operations confirmed by HQ   {confirmed}");
    println!("  customers at HQ              {at_hq}");
    println!("  failed, then fixed           1, 1");
    println!(
        "  still failed or held         {}",
        q.failed + q.held + q.in_flight()
    );
    let ok = at_hq == total.customers
        && confirmed == total.accepted
        && q.failed + q.held + q.in_flight() == 0;
    if !ok {
        anyhow::bail!("the demo's numbers do not add up: see the summary above");
    }
    println!("demo result: ok (nothing lost, nothing created twice)");
    Ok(())
}

fn customer(till: u64, n: u64) -> Value {
    let i = (till * 7 + n) as usize;
    json!({
        "first_name": FIRST[i % FIRST.len()],
        "last_name": LAST[(i / FIRST.len() + till as usize) % LAST.len()],
        "email": format!("till{till}.customer{n}@example.com"),
        "language": "et-EE",
    })
}

/// One till's share of normal trading: create, edit and add an address, per customer.
async fn trade(
    till: &Till,
    t: u64,
    customers: u64,
    progress: &ProgressBar,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    for n in 0..customers {
        let mut timed = async |method: Method, path: String, body: Value| {
            let began = Instant::now();
            let answer = till
                .must(method, &path, Some(&body), StatusCode::ACCEPTED)
                .await?;
            tally.slowest = tally.slowest.max(began.elapsed());
            tally.accepted += 1;
            progress.inc(1);
            Ok::<Value, anyhow::Error>(answer)
        };
        let created = timed(Method::POST, "/v1/customers".into(), customer(t, n)).await?;
        let r = created["customer_ref"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        timed(
            Method::PATCH,
            format!("/v1/customers/{r}"),
            json!({"phone": format!("+372 5{t}{n:03} 1234")}),
        )
        .await?;
        timed(
            Method::POST,
            format!("/v1/customers/{r}/addresses"),
            json!({"street": format!("Narva mnt {}", n + 1), "city": "Tallinn",
                   "postal_code": "10117", "country": "EST", "is_primary": true}),
        )
        .await?;
        tally.customers += 1;
    }
    Ok(tally)
}

/// One till trading until `until`: a create every 100 ms, each answered or counted refused.
async fn trade_until(till: &Till, t: u64, until: Instant) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut n = 1000;
    // Bounded by time and count alike.
    while Instant::now() < until && n < 1000 + 600 {
        let began = Instant::now();
        let (status, _) = till
            .call(Method::POST, "/v1/customers", Some(&customer(t, n)))
            .await?;
        tally.slowest = tally.slowest.max(began.elapsed());
        if status == StatusCode::ACCEPTED {
            tally.accepted += 1;
            tally.customers += 1;
        } else {
            tally.refused += 1;
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(tally)
}

/// Waits until nothing is pending or uploaded; returns how many were in flight at the start.
async fn drain(till: &Till, what: &str) -> anyhow::Result<u64> {
    let first = till.queue().await?.in_flight();
    let progress = bar(first, &format!("   {what} {{bar:30}} {{pos}}/{{len}}"));
    let deadline = Instant::now() + PHASE_LIMIT;
    loop {
        let q = till.queue().await?;
        progress.set_position(first.saturating_sub(q.in_flight()));
        if q.in_flight() == 0 {
            break;
        }
        if Instant::now() > deadline {
            progress.finish_and_clear();
            anyhow::bail!(
                "HQ did not confirm everything within {PHASE_LIMIT:?}: {} pending, {} uploaded",
                q.pending,
                q.uploaded
            );
        }
        tokio::time::sleep(POLL).await;
    }
    progress.finish_and_clear();
    Ok(first)
}

/// Waits until the operation is in `state`; returns it.
async fn wait_state(till: &Till, id: &str, state: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + PHASE_LIMIT;
    loop {
        let op = till.op_state(id).await?;
        if op["state"] == state {
            return Ok(op);
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "operation {id} did not become {state} within {PHASE_LIMIT:?} (it is {})",
                op["state"]
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
