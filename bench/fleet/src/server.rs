//! The control plane under test: a real `portico server` on a fresh data directory
//! (SQLite), and what `/proc` says about it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use crate::Error;
use crate::http::Conn;

/// A running control plane, killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: tokio::process::Child,
    /// Its process id.
    pub pid: u32,
    /// Its admin and sync address.
    pub addr: SocketAddr,
    /// The admin token it printed at its first start.
    pub token: String,
    log: PathBuf,
}

/// One look at a process.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// When.
    pub at: Instant,
    /// User plus system CPU time so far.
    pub cpu: Duration,
    /// Resident set size, bytes.
    pub rss: u64,
    /// Peak resident set size, bytes.
    pub hwm: u64,
    /// Open sockets (listening ones included).
    pub sockets: usize,
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Server {
    /// Starts `bin server` in `dir` with at most `max_nodes` nodes per gateway, and waits
    /// until it answers.
    pub async fn start(bin: &Path, dir: &Path, max_nodes: usize) -> Result<Self, Error> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(bin)
            .arg("server")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", &addr.to_string()])
            .args(["--gateway-port", &free_port()?.to_string()])
            .args([
                "--internal",
                "127.0.0.1:0",
                "--access-log",
                "off",
                "--workers",
                "1",
            ])
            .args(["--max-nodes-per-gateway", &max_nodes.to_string()])
            .env("PORTICO_LOG", "warn")
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Server(format!("cannot start {}: {e}", bin.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::Server("it exited at once".into()))?;
        let mut server = Self {
            child,
            pid,
            addr,
            token: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut conn = Conn::new(addr);
        loop {
            if let Some(status) = server.child.try_wait()? {
                return Err(Error::Server(format!(
                    "it exited ({status}):\n{}",
                    server.log_tail()
                )));
            }
            if server.token.is_empty() {
                let text = std::fs::read_to_string(&server.log).unwrap_or_default();
                if let Some(t) = text.lines().map(str::trim).find(|l| l.starts_with("pat_")) {
                    server.token = t.to_owned();
                }
            }
            let healthy = conn
                .send(Method::GET, "/healthz", &[], None, Duration::from_secs(2))
                .await
                .is_ok_and(|r| r.status == StatusCode::OK);
            if healthy && !server.token.is_empty() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(Error::Server(format!(
                    "not ready after 60 s:\n{}",
                    server.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The end of its log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// CPU, memory and sockets now.
    pub fn sample(&self) -> Result<Sample, Error> {
        sample(&self.pid.to_string())
    }

    /// Kills it and waits for it to go.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// CPU, memory and sockets of process `pid` (`self` for this one).
pub fn sample(pid: &str) -> Result<Sample, Error> {
    let proc_err =
        |what: &str, e: std::io::Error| Error::Server(format!("/proc/{pid}/{what}: {e}"));
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| proc_err("stat", e))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    let cpu = Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| proc_err("status", e))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut sockets = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| proc_err("fd", e))? {
        if let Ok(target) = std::fs::read_link(fd?.path())
            && target.to_string_lossy().starts_with("socket:")
        {
            sockets += 1;
        }
    }
    Ok(Sample {
        at: Instant::now(),
        cpu,
        rss: kib("VmRSS:") * 1024,
        hwm: kib("VmHWM:") * 1024,
        sockets,
    })
}

/// CPU time every process of the machine has used so far (all CPUs, idle and I/O wait
/// excluded): what others used is this less the control plane's and the simulator's.
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .enumerate()
        // user nice system idle iowait irq softirq steal guest guest_nice: guests are
        // already in user and nice.
        .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6 | 7))
        .map(|(_, v)| v.parse::<u64>().unwrap_or(0))
        .sum();
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 when it cannot tell).
fn clock_ticks() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The soft limit on open files of this process (children inherit it).
pub fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1024)
}
