//! `portico-fleet`: the fleet simulation benchmark (issue 18). It starts a real control plane
//! (`portico server`, SQLite, a fresh data directory), spreads N simulated nodes over N/10
//! gateways, each node speaking the real sync protocol on a connection of its own
//! (long-poll, reports, heartbeats) and decoding and verifying what it receives as a node
//! does, then makes one change that reaches every gateway and measures how long it takes to
//! reach each node, what the control plane spends on it (CPU, memory, sockets) and how
//! quickly it keeps answering admin requests meanwhile. One process, nodes as tasks.
//!
//! - [`receive`]: decoding and verification, the one place that reads a sync answer
//! - [`client`]: a simulated node (long-poll, reports, heartbeats, back-off)
//! - [`http`]: one kept-alive HTTP/1.1 connection
//! - [`server`]: the control plane process and `/proc`
//! - [`admin`]: setup and the change through the admin API, the admin latency probe
//! - [`run`]: one fleet size, start to end
//! - [`report`]: distributions and tables
//!
//! Run it with `bench/fleet.sh` (release build, 100, 1,000 and 10,000 nodes).

mod admin;
mod client;
mod error;
mod http;
mod receive;
mod report;
mod run;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

pub use error::Error;

/// Simulates a fleet of gateway nodes against one real control plane and measures one
/// change reaching all of them.
#[derive(Debug, Parser)]
#[command(name = "portico-fleet", version)]
struct Args {
    /// The `portico` binary run as the control plane.
    #[arg(long, default_value = "target/release/portico")]
    portico: PathBuf,
    /// Fleet sizes, run one after the other, each on a fresh control plane.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    nodes: Vec<usize>,
    /// Nodes per gateway (N / this many gateways).
    #[arg(long, default_value_t = 10)]
    per_gateway: usize,
    /// Connections per gateway its nodes' reports and heartbeats go through (a real node
    /// has one of its own: --report-connections 10 with 10 nodes per gateway; this
    /// machine's 20,000 open files per process do not allow that at 10,000 nodes).
    #[arg(long, default_value_t = 1)]
    report_connections: usize,
    /// Seconds between a node's heartbeat reports (a node's default `heartbeat`: 10 s).
    #[arg(long, default_value_t = 10)]
    heartbeat: u64,
    /// Seconds a long-poll waits (a node's default: 30 s).
    #[arg(long, default_value_t = 30)]
    wait: u64,
    /// Seconds of the idle window, every node parked on its long-poll (30: each node
    /// renews its long-poll once and heartbeats three times in it).
    #[arg(long, default_value_t = 30)]
    idle: u64,
    /// Nodes started per second.
    #[arg(long, default_value_t = 1000)]
    ramp: usize,
    /// Seconds every node has to get the change (and, after the ramp, its first snapshot).
    #[arg(long, default_value_t = 60)]
    deadline: u64,
    /// Record the control plane with `perf record -g` over the idle and the change windows
    /// into this directory (perf-<N>-idle.data, perf-<N>-change.data); its overhead is in
    /// the figures of that run.
    #[arg(long)]
    perf: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portico-fleet: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = run::Options {
        portico: args.portico.clone(),
        per_gateway: args.per_gateway,
        report_connections: args.report_connections,
        heartbeat: Duration::from_secs(args.heartbeat),
        wait: Duration::from_secs(args.wait),
        idle: Duration::from_secs(args.idle),
        ramp: args.ramp,
        deadline: Duration::from_secs(args.deadline),
        perf: args.perf.clone(),
    };
    println!(
        "portico-fleet: {} nodes per gateway, {} report connection(s) per gateway, heartbeat {} s, \
         long-poll wait {} s, idle window {} s, control plane {}",
        args.per_gateway,
        args.report_connections,
        args.heartbeat,
        args.wait,
        args.idle,
        args.portico.display()
    );
    let mut rows = Vec::new();
    for &n in &args.nodes {
        match rt.block_on(run::fleet(n, &options)) {
            Ok(row) => {
                print!("{}", row.detail());
                rows.push(row);
            }
            Err(e) => {
                if !rows.is_empty() {
                    println!("\n{}", report::table(&rows));
                }
                eprintln!("portico-fleet: FAILED at {n} nodes: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("\n{}", report::table(&rows));
    ExitCode::SUCCESS
}
