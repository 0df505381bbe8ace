//! What one run measured, and the tables printed from it.

use std::fmt::Write as _;

/// p50, p99 and max of a set of samples, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dist {
    /// How many samples.
    pub n: usize,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Dist {
    /// The distribution of `ms`.
    pub fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let at = |p: f64| {
            if ms.is_empty() {
                f64::NAN
            } else {
                ms[((ms.len() - 1) as f64 * p).round() as usize]
            }
        };
        Self {
            n: ms.len(),
            min: ms.first().copied().unwrap_or(f64::NAN),
            p50: at(0.5),
            p99: at(0.99),
            max: ms.last().copied().unwrap_or(f64::NAN),
        }
    }

    fn cells(&self) -> String {
        format!("{:>7.1} {:>7.1} {:>7.1}", self.p50, self.p99, self.max)
    }
}

/// Everything measured for one fleet size.
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// Simulated nodes.
    pub nodes: usize,
    /// Gateways they are spread over.
    pub gateways: usize,
    /// Creating the gateways, their tokens and the first deploy, seconds.
    pub setup_s: f64,
    /// From the first node started to every node holding the current version, seconds.
    pub first_sync_s: f64,
    /// From the change's admin request to each node's apply.
    pub propagation: Dist,
    /// How many nodes applied the change.
    pub got: usize,
    /// From the change's admin request to each node's report of it being accepted.
    pub reported: Dist,
    /// From the change's admin request to the last node's report of it accepted, seconds.
    pub all_reported_s: f64,
    /// The change's admin request itself (a deploy to every gateway), ms.
    pub change_call_ms: f64,
    /// Admin requests while the fleet is parked.
    pub admin_idle: Dist,
    /// Admin requests over the change's window (until every node reported it, plus 2 s,
    /// 10 s at least).
    pub admin_change: Dist,
    /// The slowest admin request of the change's window: which, and when it was sent.
    pub admin_slowest: Option<String>,
    /// The control plane's CPU while parked, share of one core.
    pub idle_cpu: f64,
    /// The control plane's CPU over the change's window, ms.
    pub change_cpu_ms: f64,
    /// That window, seconds.
    pub change_window_s: f64,
    /// The control plane's resident memory after setup, before any node: bytes.
    pub rss_setup: u64,
    /// ... with every node parked on its long-poll.
    pub rss_parked: u64,
    /// Its peak resident memory over the run.
    pub hwm: u64,
    /// Its open sockets while parked.
    pub sockets: usize,
    /// The simulator's CPU while parked (share of one core) and over the change (ms).
    pub sim_idle_cpu: f64,
    /// See `sim_idle_cpu`.
    pub sim_change_cpu_ms: f64,
    /// Other processes of the machine while parked and over the change, share of one core
    /// (a build running beside the benchmark shows here).
    pub others_idle_cpu: f64,
    /// See `others_idle_cpu`.
    pub others_change_cpu: f64,
    /// `GET /api/v1/status` at the end, ms.
    pub status_ms: f64,
    /// Nodes `GET /api/v1/status` lists in sync with the gateway's hash.
    pub in_sync: usize,
    /// Counters: snapshots, 304s, poll errors, reports, report errors, connects.
    pub counters: [u64; 6],
    /// The latest non-fatal error, if any.
    pub last_error: Option<String>,
}

impl Row {
    /// The control plane's CPU over the change's window less the idle rate over it, ms
    /// (negative: within the machine's noise).
    pub fn change_net_cpu_ms(&self) -> f64 {
        self.change_cpu_ms - self.idle_cpu * self.change_window_s * 1000.0
    }

    /// [`Row::change_net_cpu_ms`] per node, ms.
    pub fn cpu_per_node_change_ms(&self) -> f64 {
        self.change_net_cpu_ms() / self.nodes as f64
    }

    /// Resident memory per parked node, bytes.
    pub fn rss_per_node(&self) -> f64 {
        self.rss_parked.saturating_sub(self.rss_setup) as f64 / self.nodes as f64
    }

    /// Idle CPU per parked node (heartbeats and renewed long-polls), µs per second.
    pub fn idle_cpu_per_node_us(&self) -> f64 {
        self.idle_cpu * 1e6 / self.nodes as f64
    }

    /// The lines printed as soon as a run ends.
    pub fn detail(&self) -> String {
        let mut s = String::new();
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let c = &self.counters;
        let _ = writeln!(
            s,
            "N={} on {} gateways: setup {:.1} s, first sync of all {:.1} s; change: deploy call {:.1} ms, \
             applied by {}/{}, first {:.1} p50 {:.1} p99 {:.1} max {:.1} ms; reported p99 {:.1} ms, all {:.1} s",
            self.nodes,
            self.gateways,
            self.setup_s,
            self.first_sync_s,
            self.change_call_ms,
            self.got,
            self.nodes,
            self.propagation.min,
            self.propagation.p50,
            self.propagation.p99,
            self.propagation.max,
            self.reported.p99,
            self.all_reported_s
        );
        let _ = writeln!(
            s,
            "  control plane: idle {:.1}% of a core, change {:.0} ms CPU over {:.2} s ({:.0} ms net of idle); RSS {:.1} MiB before nodes, \
             {:.1} MiB parked, peak {:.1} MiB; {} sockets; status of all {:.1} ms ({} nodes in sync)",
            self.idle_cpu * 100.0,
            self.change_cpu_ms,
            self.change_window_s,
            self.change_net_cpu_ms(),
            mib(self.rss_setup),
            mib(self.rss_parked),
            mib(self.hwm),
            self.sockets,
            self.status_ms,
            self.in_sync
        );
        let _ = writeln!(
            s,
            "  admin p50/p99/max ms: parked {:.1}/{:.1}/{:.1} (n={}), during the change {:.1}/{:.1}/{:.1} (n={}, the slowest {}); \
             simulator idle {:.1}% of a core, change {:.0} ms CPU; other processes {:.0}% of a core parked, {:.0}% over the change",
            self.admin_idle.p50,
            self.admin_idle.p99,
            self.admin_idle.max,
            self.admin_idle.n,
            self.admin_change.p50,
            self.admin_change.p99,
            self.admin_change.max,
            self.admin_change.n,
            self.admin_slowest.as_deref().unwrap_or("none"),
            self.sim_idle_cpu * 100.0,
            self.sim_change_cpu_ms,
            self.others_idle_cpu * 100.0,
            self.others_change_cpu * 100.0
        );
        let _ = writeln!(
            s,
            "  nodes: {} snapshots, {} not modified, {} poll errors, {} reports, {} report errors, {} connections opened{}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            self.last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        );
        s
    }
}

/// The summary tables of every run.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| nodes | gateways | change → applied p50 / p99 / max (ms) | applied by | → reported p99 (ms) | admin p50 / p99 / max during change (ms) | admin p99 parked (ms) |"
    );
    let _ = writeln!(s, "|---:|---:|---|---:|---:|---|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {}/{} | {:.1} | {} | {:.1} |",
            r.nodes,
            r.gateways,
            r.propagation.cells(),
            r.got,
            r.nodes,
            r.reported.p99,
            r.admin_change.cells(),
            r.admin_idle.p99
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| nodes | CP CPU parked (% core) | CP CPU per change, net of idle (ms) | per node per change (ms) | per parked node (µs CPU/s) | RSS parked (MiB) | peak (MiB) | per parked node (KiB) | sockets |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.0} | {:.3} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.nodes,
            r.idle_cpu * 100.0,
            r.change_net_cpu_ms(),
            r.cpu_per_node_change_ms(),
            r.idle_cpu_per_node_us(),
            r.rss_parked as f64 / (1 << 20) as f64,
            r.hwm as f64 / (1 << 20) as f64,
            r.rss_per_node() / 1024.0,
            r.sockets
        );
    }
    s
}
