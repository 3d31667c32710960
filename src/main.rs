//! The `outpost` binary: a thin command line over the library.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use outpost::config::{Config, LogConfig};
use outpost::hq::emulator::{HqEmulator, HqEmulatorConfig};
use outpost::node::Node;

/// Outpost: offline-first store edge node for retail point of sale.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "config/outpost.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node (the default).
    Serve,
    /// Run the HQ emulator (state in memory; needs no configuration file).
    HqSim(HqSimArgs),
    /// Read a token on stdin; print its SHA-256 and an `[[auth.tokens]]` entry for it.
    HashToken {
        /// Who will hold the token, e.g. `till-1` (shown in logs instead of the token).
        #[arg(long, default_value = "till-1")]
        name: String,
        /// What the token may do.
        #[arg(long, default_value = "pos", value_parser = ["pos", "technician"])]
        role: String,
    },
    /// Show a running node's diagnostics report.
    Status(cli::status::StatusArgs),
    /// List, show and retry the node's operations.
    Ops(cli::ops::OpsArgs),
    /// CDX downloads: `outpost cdx refresh`.
    Cdx(cli::ops::CdxArgs),
    /// Ask the node to upload pending operations now.
    Upload(cli::ops::UploadArgs),
    /// Check the configuration and the store file of a stopped node (offline).
    Doctor(cli::doctor::DoctorArgs),
    /// Write a consistent copy of the store (from the running node, or --offline).
    Backup(cli::backup::BackupArgs),
    /// Run an HQ emulator and a node, and drive simulated tills through an outage and a
    /// poison record.
    Demo(cli::demo::DemoArgs),
}

/// Options of `outpost hq-sim`.
#[derive(Args)]
struct HqSimArgs {
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// How often the sync job runs by itself, milliseconds; 0 = only on demand.
    #[arg(long, default_value_t = 1000)]
    sync_interval_ms: u64,
    /// Seed of the fault-injection draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Start configured for asynchronous mode: all four customer features on and "create
    /// customer in async mode" on for every channel (default: all off, as a fresh HQ).
    #[arg(long)]
    enable_async: bool,
}

#[global_allocator]
static ALLOCATOR: outpost::process::Allocator = outpost::process::Allocator;

fn main() -> std::process::ExitCode {
    outpost::process::configure_allocator();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain, in plain words: the operator reads this, not a developer's
            // backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            // Only the node reads the configuration file; hq-sim runs without one.
            let config = Config::load(&cli.config)
                .with_context(|| format!("invalid configuration ({})", cli.config.display()))?;
            outpost::telemetry::init_logging(&config.log);
            runtime()?.block_on(serve(config))
        }
        Command::HqSim(args) => {
            outpost::telemetry::init_logging(&LogConfig::default());
            runtime()?.block_on(hq_sim(args))
        }
        Command::HashToken { name, role } => hash_token(&name, &role),
        Command::Status(args) => runtime()?.block_on(cli::status::run(&cli.config, args)),
        Command::Ops(args) => runtime()?.block_on(cli::ops::run(&cli.config, args)),
        Command::Cdx(args) => runtime()?.block_on(cli::ops::cdx(&cli.config, args)),
        Command::Upload(args) => runtime()?.block_on(cli::ops::upload(&cli.config, args)),
        Command::Doctor(args) => cli::doctor::run(&cli.config, args),
        Command::Backup(args) => runtime()?.block_on(cli::backup::run(&cli.config, args)),
        Command::Demo(args) => runtime()?.block_on(cli::demo::run(args)),
    }
}

/// `outpost hash-token`: the node stores only a token's hash, so the raw token is read from
/// stdin (not the command line, where `ps` and shell history would keep it).
fn hash_token(name: &str, role: &str) -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the token from stdin")?;
    let token = line.trim();
    anyhow::ensure!(
        token.len() >= 16,
        "give a random token of at least 16 characters on stdin, e.g. \
         `openssl rand -hex 32 | tee till-1.token | outpost hash-token --name till-1`"
    );
    let hash = outpost::api::auth::hash_token(token);
    println!("{hash}\n\n[[auth.tokens]]\nname = {name:?}\nrole = {role:?}\nsha256 = {hash:?}");
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    outpost::process::runtime_builder()
        .build()
        .context("cannot start the async runtime")
}

async fn hq_sim(args: HqSimArgs) -> anyhow::Result<()> {
    let emulator = HqEmulator::start(HqEmulatorConfig {
        listen: args.listen,
        sync_interval: (args.sync_interval_ms > 0)
            .then(|| Duration::from_millis(args.sync_interval_ms)),
        seed: args.seed,
    })
    .await?;
    if args.enable_async {
        // Before the address is printed, so no client sees the emulator unconfigured.
        emulator.enable_async();
        tracing::info!("hq emulator configured for asynchronous mode");
    }
    // Printed on stdout so scripts and tests can find the port when it was 0.
    println!("hq-sim listening on {}", emulator.url());
    shutdown_signal().await;
    emulator.shutdown().await;
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let node = Node::start(&config).await?;
    // Printed on stdout so scripts and tests can find the port when it was 0.
    println!("outpost listening on http://{}", node.local_addr());
    shutdown_signal().await;
    node.shutdown().await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}
