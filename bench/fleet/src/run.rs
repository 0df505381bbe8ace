//! One fleet size, start to end: a fresh control plane, its gateways and API, N simulated
//! nodes brought in sync, an idle window, then one change measured until every node
//! applied and reported it.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::Error;
use crate::admin::{Admin, Timing};
use crate::client::{self, Fleet, Node, Track};
use crate::report::{Dist, Row};
use crate::server::{self, Server};

/// How runs are made.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `portico` binary.
    pub portico: PathBuf,
    /// Nodes per gateway.
    pub per_gateway: usize,
    /// Report connections per gateway.
    pub report_connections: usize,
    /// Node heartbeat.
    pub heartbeat: Duration,
    /// Long-poll `wait`.
    pub wait: Duration,
    /// The idle window measured with every node parked.
    pub idle: Duration,
    /// Nodes started per second.
    pub ramp: usize,
    /// Longest wait for every node to get a version.
    pub deadline: Duration,
    /// Record the control plane with `perf` into this directory (idle and change windows).
    pub perf: Option<PathBuf>,
}

/// The shortest window after the change's start over which its CPU is measured and admin
/// requests are timed.
const CHANGE_WINDOW: Duration = Duration::from_secs(10);

/// How long the change's window runs on after every node reported it.
const SETTLE: Duration = Duration::from_secs(2);

/// Removes the run's directory when the run ends, however it ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn say(text: &str) {
    eprintln!("[fleet] {text}");
}

/// Runs the fleet of `nodes` nodes and answers what it measured.
pub async fn fleet(nodes: usize, o: &Options) -> Result<Row, Error> {
    let per = o.per_gateway.max(1);
    let count = nodes.div_ceil(per);
    let reporters = o.report_connections.clamp(1, per);
    let need = (nodes + count * reporters + 200) as u64;
    let limit = server::open_files_limit();
    if need > limit {
        return Err(Error::Run(format!(
            "{nodes} nodes with {reporters} report connection(s) per gateway need about {need} open files in \
             this process and in the control plane; the limit is {limit}: raise it (ulimit -n) or lower \
             --report-connections"
        )));
    }
    let dir =
        TempDir(std::env::temp_dir().join(format!("portico-fleet-{}-{nodes}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0)?;
    let server = Server::start(&o.portico, &dir.0, per.max(100)).await?;
    let result = measure(&server, nodes, count, reporters, o).await;
    if result.is_err() {
        say(&format!(
            "the control plane's log ends:\n{}",
            server.log_tail()
        ));
    }
    server.stop().await;
    result
}

async fn measure(
    server: &Server,
    nodes: usize,
    count: usize,
    reporters: usize,
    o: &Options,
) -> Result<Row, Error> {
    let per = o.per_gateway.max(1);
    let mut row = Row {
        nodes,
        gateways: count,
        ..Row::default()
    };
    let admin = Admin::new(server.addr, &server.token);
    let t = Instant::now();
    say(&format!(
        "{nodes} nodes: creating {count} gateways and deploying revision 1 to all"
    ));
    let gateways = admin.gateways(count).await?;
    admin.prepare(&gateways).await?;
    row.setup_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    row.rss_setup = server.sample()?.rss;

    // The fleet, started at `ramp` nodes a second.
    let fleet = Arc::new(Fleet::new());
    let settings = Arc::new(client::Settings {
        addr: server.addr,
        wait: o.wait,
        heartbeat: o.heartbeat,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tracks: Vec<(usize, Arc<Track>)> = Vec::with_capacity(nodes);
    let mut fleet_nodes = Vec::with_capacity(nodes);
    for (g, gw) in gateways.iter().enumerate() {
        let link = client::reporters(&settings, &gw.name, &gw.token, reporters, &fleet);
        for _ in 0..per.min(nodes - g * per) {
            let node = Node::new(link.clone(), tracks.len());
            tracks.push((g, node.track.clone()));
            fleet_nodes.push(node);
        }
    }
    say(&format!("starting {nodes} nodes, {} a second", o.ramp));
    let t = Instant::now();
    let batch = (o.ramp / 100).max(1);
    let mut pending = fleet_nodes.into_iter();
    loop {
        let mut started = 0;
        for node in pending.by_ref().take(batch) {
            tokio::spawn(node.run(settings.clone(), fleet.clone(), stop_rx.clone()));
            started += 1;
        }
        if started < batch {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ramp_time = Duration::from_secs_f64(nodes as f64 / o.ramp.max(1) as f64);
    wait_all(
        &fleet,
        &tracks,
        o.deadline + ramp_time,
        "its first snapshot",
        |_, t| t.version.load(Relaxed) > 0,
    )
    .await?;
    row.first_sync_s = t.elapsed().as_secs_f64();
    wait_all(
        &fleet,
        &tracks,
        o.deadline,
        "its first report accepted",
        |_, t| t.reported.load(Relaxed) >= t.version.load(Relaxed),
    )
    .await?;
    say(&format!(
        "all {nodes} in sync after {:.1} s; parked for {:?}",
        row.first_sync_s, o.idle
    ));

    // Parked: idle CPU, memory and sockets, with the admin probe running.
    let probe_samples = Arc::new(Mutex::new(Vec::<Timing>::new()));
    let (probe_stop, probe_rx) = watch::channel(false);
    let probe = tokio::spawn(admin.clone().probe(
        gateways[count / 2].name.clone(),
        fleet.epoch,
        probe_samples.clone(),
        probe_rx,
    ));
    let idle_from = fleet.now_us();
    let (s0, m0, b0) = (
        server.sample()?,
        server::sample("self")?,
        server::machine_busy(),
    );
    let perf = profile(o, server.pid, &format!("{nodes}-idle"), o.idle)?;
    tokio::time::sleep(o.idle).await;
    finish(perf).await;
    let (s1, m1, b1) = (
        server.sample()?,
        server::sample("self")?,
        server::machine_busy(),
    );
    let idle_s = s1.at.duration_since(s0.at).as_secs_f64();
    row.idle_cpu = (s1.cpu - s0.cpu).as_secs_f64() / idle_s;
    row.sim_idle_cpu = (m1.cpu - m0.cpu).as_secs_f64() / idle_s;
    row.others_idle_cpu = others(b1 - b0, s1.cpu - s0.cpu, m1.cpu - m0.cpu) / idle_s;
    row.rss_parked = s1.rss;
    row.sockets = s1.sockets;

    // The change: revision 2 deployed to every gateway in one request.
    say("the change: revision 2 to every gateway");
    let (s2, m2, b2) = (
        server.sample()?,
        server::sample("self")?,
        server::machine_busy(),
    );
    let t0 = fleet.now_us();
    let mut conn = admin.conn();
    let perf = profile(o, server.pid, &format!("{nodes}-change"), CHANGE_WINDOW)?;
    let targets = admin.deploy(&mut conn, 2, &gateways).await?;
    row.change_call_ms = (fleet.now_us() - t0) as f64 / 1000.0;
    let want: Vec<u64> = gateways
        .iter()
        .map(|g| targets.get(&g.name).copied().unwrap_or(u64::MAX))
        .collect();
    let applied = wait_all(&fleet, &tracks, o.deadline, "the change", |g, t| {
        t.version.load(Relaxed) >= want[g]
    })
    .await;
    let since = |us: u64| us.saturating_sub(t0) as f64 / 1000.0;
    let got: Vec<f64> = tracks
        .iter()
        .filter(|(g, t)| t.version.load(Relaxed) >= want[*g])
        .map(|(_, t)| since(t.applied_us.load(Relaxed)))
        .collect();
    row.got = got.len();
    row.propagation = Dist::of(got);
    if let Err(e) = applied {
        return Err(Error::Run(format!(
            "{e}; those that did: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            row.propagation.p50, row.propagation.p99, row.propagation.max
        )));
    }
    wait_all(
        &fleet,
        &tracks,
        o.deadline,
        "its report of the change accepted",
        |g, t| t.reported.load(Relaxed) >= want[g],
    )
    .await?;
    row.all_reported_s = (fleet.now_us() - t0) as f64 / 1e6;
    // The change's window: until every node reported it, plus `SETTLE` for the heartbeats
    // it delayed, and `CHANGE_WINDOW` at least (a small fleet is done before the admin
    // probe's next tick). Its CPU, less the idle rate over it, is what the change cost.
    let t_end =
        (fleet.now_us() + SETTLE.as_micros() as u64).max(t0 + CHANGE_WINDOW.as_micros() as u64);
    tokio::time::sleep(Duration::from_micros(t_end.saturating_sub(fleet.now_us()))).await;
    let (s3, m3, b3) = (
        server.sample()?,
        server::sample("self")?,
        server::machine_busy(),
    );
    finish(perf).await;
    let _ = probe_stop.send(true);
    probe.await.map_err(|e| Error::Run(e.to_string()))??;
    row.reported = Dist::of(
        tracks
            .iter()
            .map(|(_, t)| since(t.reported_us.load(Relaxed)))
            .collect(),
    );
    row.change_cpu_ms = (s3.cpu - s2.cpu).as_secs_f64() * 1000.0;
    row.change_window_s = s3.at.duration_since(s2.at).as_secs_f64();
    row.sim_change_cpu_ms = (m3.cpu - m2.cpu).as_secs_f64() * 1000.0;
    row.others_change_cpu = others(b3 - b2, s3.cpu - s2.cpu, m3.cpu - m2.cpu) / row.change_window_s;
    let probes = probe_samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let window = |from: u64, to: u64| -> Vec<f64> {
        probes
            .iter()
            .filter(|t| t.at_us >= from && t.at_us < to)
            .map(|t| t.ms)
            .collect()
    };
    row.admin_idle = Dist::of(window(idle_from, t0));
    row.admin_change = Dist::of(window(t0, t_end));
    row.admin_slowest = probes
        .iter()
        .filter(|t| t.at_us >= t0 && t.at_us < t_end)
        .max_by(|a, b| a.ms.total_cmp(&b.ms))
        .map(|t| {
            let what = ["GET /api/v1/gateways", "GET /api/v1/gateways/NAME"][t.which.min(1)];
            format!(
                "{what} sent {:.0} ms after the change's start",
                since(t.at_us)
            )
        });

    // What the control plane saw: every node in sync, with the hash it computed.
    let t = Instant::now();
    let status = admin.status().await?;
    row.status_ms = t.elapsed().as_secs_f64() * 1000.0;
    let (good, first_bad) = in_sync(&status);
    row.in_sync = good;
    row.hwm = server.sample()?.hwm;
    let _ = stop_tx.send(true);
    let c = &fleet.counters;
    row.counters = [
        c.snapshots.load(Relaxed),
        c.not_modified.load(Relaxed),
        c.poll_errors.load(Relaxed),
        c.reports.load(Relaxed),
        c.report_errors.load(Relaxed),
        c.connects.load(Relaxed),
    ];
    row.last_error = fleet.last_error();
    if row.in_sync != nodes {
        return Err(Error::Run(format!(
            "the control plane lists {} of {nodes} simulated nodes in sync with their gateway's hash after the change; {}",
            row.in_sync,
            first_bad.unwrap_or_else(|| "the others are not listed".into())
        )));
    }
    Ok(row)
}

/// CPU seconds of other processes: the machine's busy time less the control plane's and
/// the simulator's.
fn others(machine: Duration, server: Duration, sim: Duration) -> f64 {
    (machine.as_secs_f64() - server.as_secs_f64() - sim.as_secs_f64()).max(0.0)
}

/// With `--perf`, starts `perf record` (call graphs, 999 Hz) on process `pid` for `secs`
/// into `<dir>/perf-<name>.data`. Its overhead is in that run's figures: profile in a run of
/// its own.
fn profile(
    o: &Options,
    pid: u32,
    name: &str,
    secs: Duration,
) -> Result<Option<tokio::process::Child>, Error> {
    let Some(dir) = &o.perf else {
        return Ok(None);
    };
    std::fs::create_dir_all(dir)?;
    let child = tokio::process::Command::new("perf")
        .args([
            "record",
            "-e",
            "cpu-clock",
            "-F",
            "999",
            "-g",
            "-p",
            &pid.to_string(),
            "-o",
        ])
        .arg(dir.join(format!("perf-{name}.data")))
        .args(["--", "sleep", &secs.as_secs().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| Error::Run(format!("cannot start perf: {e}")))?;
    Ok(Some(child))
}

/// Waits for a `perf record` to end.
async fn finish(perf: Option<tokio::process::Child>) {
    if let Some(mut p) = perf {
        let _ = p.wait().await;
    }
}

/// Waits until `done(gateway index, track)` holds for every node, failing at `deadline` or
/// at the first fatal error of a node.
async fn wait_all(
    fleet: &Fleet,
    tracks: &[(usize, Arc<Track>)],
    deadline: Duration,
    what: &str,
    done: impl Fn(usize, &Track) -> bool,
) -> Result<(), Error> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(f) = fleet.fatal() {
            return Err(Error::Run(f));
        }
        let missing = tracks.iter().filter(|(g, t)| !done(*g, t)).count();
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(Error::Run(format!(
                "{missing} of {} nodes did not get {what} within {deadline:?}{}",
                tracks.len(),
                fleet
                    .last_error()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Simulated nodes `GET /api/v1/status` shows in sync and reporting the gateway's hash,
/// and the first that is not.
fn in_sync(status: &serde_json::Value) -> (usize, Option<String>) {
    let empty = Vec::new();
    let (mut good, mut first_bad) = (0, None);
    for g in status["gateways"].as_array().unwrap_or(&empty) {
        let hash = g["snapshot_hash"].as_str();
        for n in g["nodes"].as_array().unwrap_or(&empty) {
            if !n["node_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("sim-"))
            {
                continue;
            }
            if n["state"] == "in_sync" && n["applied_hash"].as_str() == hash {
                good += 1;
            } else if first_bad.is_none() {
                first_bad = Some(format!(
                    "e.g. node {} of gateway {} at snapshot version {}: {}",
                    n["node_id"], g["gateway"], g["snapshot_version"], n
                ));
            }
        }
    }
    (good, first_bad)
}
