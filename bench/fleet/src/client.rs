//! A simulated node: the sync loop of `portico_proxy::node::run_sync` without a proxy behind
//! it. It long-polls on a connection of its own, decodes and verifies each answer
//! ([`crate::receive`]), reports after each apply and every heartbeat, and backs off on
//! errors as a node does (0.5 s doubling to 15 s).
//!
//! Reports go through the report connections of the node's gateway ([`reporters`]): a
//! real node sends them on a second connection of its own, which would put two sockets per
//! node on the control plane, and this machine allows 20,000 open files per process. A
//! node's reports always take the same connection, so they arrive in the order they were
//! made. (A real node spawns each report on its own: a heartbeat made before an apply can
//! land after the apply's report and show the node stale until the next heartbeat.)

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode, header};
use portico_model::NodeReport;
use tokio::sync::{mpsc, watch};

use crate::http::Conn;
use crate::receive::Replica;

/// What one node has done, read by the driver while it runs.
#[derive(Debug, Default)]
pub struct Track {
    /// The version applied last (0 before the first apply).
    pub version: AtomicU64,
    /// When it was applied, microseconds after [`Fleet::epoch`].
    pub applied_us: AtomicU64,
    /// The version of the last report the control plane accepted.
    pub reported: AtomicU64,
    /// When that report was accepted, microseconds after [`Fleet::epoch`].
    pub reported_us: AtomicU64,
}

/// Counters over every node of a run.
#[derive(Debug, Default)]
pub struct Counters {
    /// Long-polls answered 200.
    pub snapshots: AtomicU64,
    /// Long-polls answered 304.
    pub not_modified: AtomicU64,
    /// Long-polls that failed (connection, timeout, a status other than 200 and 304).
    pub poll_errors: AtomicU64,
    /// Reports accepted (204).
    pub reports: AtomicU64,
    /// Reports refused or failed.
    pub report_errors: AtomicU64,
    /// TCP connections opened by nodes (long-polls and reports).
    pub connects: AtomicU64,
}

/// What every node of a run shares: the clock, counters and the first fatal error.
#[derive(Debug)]
pub struct Fleet {
    /// Time zero of the run's timestamps.
    pub epoch: Instant,
    /// Counters.
    pub counters: Counters,
    fatal: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
}

impl Fleet {
    /// A fleet whose clock starts now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            counters: Counters::default(),
            fatal: Mutex::new(None),
            last_error: Mutex::new(None),
        }
    }

    /// Microseconds since the epoch.
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Records a failure that ends the run (the first one is kept).
    pub fn fail(&self, message: String) {
        let mut f = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert(message);
    }

    /// The failure that ends the run, if one happened.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keeps the latest non-fatal error, to show with the counters.
    pub fn note(&self, message: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }

    /// The latest non-fatal error.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// How nodes sync.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The control plane's sync address.
    pub addr: std::net::SocketAddr,
    /// `wait=` of each long-poll (a node's `poll_wait`).
    pub wait: Duration,
    /// Report interval when nothing changes (a node's `heartbeat`).
    pub heartbeat: Duration,
}

/// One report to send, and whose.
#[derive(Debug)]
pub struct Job {
    report: NodeReport,
    track: Arc<Track>,
}

/// A gateway as its nodes know it: its API token and where their reports go.
#[derive(Clone, Debug)]
pub struct Link {
    /// The gateway's name.
    pub gateway: Arc<str>,
    /// `Bearer <API token>`.
    pub auth: Arc<str>,
    /// The queues of the gateway's report connections.
    pub reports: Arc<[mpsc::UnboundedSender<Job>]>,
}

/// Starts `connections` report senders for one gateway, each with a connection of its own,
/// and answers the gateway's link. They end when every [`Link`] is dropped.
pub fn reporters(
    settings: &Settings,
    gateway: &str,
    token: &str,
    connections: usize,
    fleet: &Arc<Fleet>,
) -> Link {
    let auth: Arc<str> = format!("Bearer {token}").into();
    let mut queues = Vec::new();
    for _ in 0..connections.max(1) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let (fleet, auth, addr) = (fleet.clone(), auth.clone(), settings.addr);
        tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            while let Some(job) = rx.recv().await {
                send_report(&mut conn, &auth, job, &fleet).await;
            }
        });
        queues.push(tx);
    }
    Link {
        gateway: gateway.into(),
        auth,
        reports: queues.into(),
    }
}

async fn send_report(conn: &mut Conn, auth: &str, job: Job, fleet: &Fleet) {
    let before = conn.connects;
    let version = job.report.applied_version.unwrap_or(0);
    let body = match serde_json::to_vec(&job.report) {
        Ok(b) => Bytes::from(b),
        Err(e) => return fleet.fail(format!("a report does not serialise: {e}")),
    };
    let outcome = conn
        .send(
            Method::POST,
            "/api/v1/sync/report",
            &[(header::AUTHORIZATION, auth)],
            Some(body),
            Duration::from_secs(10),
        )
        .await;
    let c = &fleet.counters;
    c.connects.fetch_add(conn.connects - before, Relaxed);
    match outcome {
        Ok(r) if r.status == StatusCode::NO_CONTENT => {
            c.reports.fetch_add(1, Relaxed);
            if job.track.reported.fetch_max(version, Relaxed) < version {
                job.track.reported_us.store(fleet.now_us(), Relaxed);
            }
        }
        Ok(r) => {
            c.report_errors.fetch_add(1, Relaxed);
            fleet.note(format!(
                "report of {} refused: {} {}",
                job.report.node_id,
                r.status,
                r.excerpt()
            ));
        }
        Err(e) => {
            c.report_errors.fetch_add(1, Relaxed);
            fleet.note(format!("report of {} failed: {e}", job.report.node_id));
        }
    }
}

/// One simulated node.
#[derive(Debug)]
pub struct Node {
    /// Its id, made at random like a node's first start.
    pub id: String,
    key: String,
    link: Link,
    /// Which of the gateway's report connections it uses.
    lane: usize,
    /// What it has done.
    pub track: Arc<Track>,
}

impl Node {
    /// A node of the gateway behind `link`, with a new random id and node key.
    pub fn new(link: Link, index: usize) -> Self {
        let hex = |n: usize| -> String {
            (0..n)
                .map(|_| format!("{:02x}", fastrand::u8(..)))
                .collect()
        };
        Self {
            id: format!("sim-{index}-{}", hex(4)),
            key: hex(32),
            lane: index % link.reports.len().max(1),
            link,
            track: Arc::new(Track::default()),
        }
    }

    /// Queues a report of what `replica` holds (a node's `report`: sent on the side).
    fn report(&self, replica: &Replica) {
        let held = replica.held();
        let report = NodeReport {
            node_id: self.id.clone(),
            hostname: "fleet-sim".into(),
            applied_version: held.map(|h| h.version),
            applied_hash: held.map(|h| h.hash.clone()),
            node_key: Some(self.key.clone()),
            ..NodeReport::default()
        };
        let Some(queue) = self.link.reports.get(self.lane) else {
            return;
        };
        let _ = queue.send(Job {
            report,
            track: self.track.clone(),
        });
    }

    /// Syncs until `stop` turns true or an answer fails verification (recorded in `fleet`).
    pub async fn run(
        self,
        settings: Arc<Settings>,
        fleet: Arc<Fleet>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut conn = Conn::new(settings.addr);
        let mut replica = Replica::default();
        let mut backoff = Duration::from_millis(500);
        // A node reports at start and then every heartbeat. Real nodes start independently:
        // the first interval is drawn at random so the fleet's heartbeats spread out.
        let period = settings.heartbeat.max(Duration::from_millis(1));
        let first = Duration::from_millis(fastrand::u64(0..period.as_millis() as u64 + 1));
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.report(&replica);
        let c = &fleet.counters;
        loop {
            if *stop.borrow() {
                return;
            }
            let path = format!(
                "/api/v1/sync/snapshot?wait={}{}",
                settings.wait.as_secs(),
                replica.query()
            );
            let before = conn.connects;
            let headers = [
                (header::AUTHORIZATION, &*self.link.auth),
                (header::ACCEPT_ENCODING, "gzip"),
            ];
            let outcome = {
                let poll = conn.send(
                    Method::GET,
                    &path,
                    &headers,
                    None,
                    settings.wait + Duration::from_secs(15),
                );
                tokio::pin!(poll);
                loop {
                    tokio::select! {
                        r = &mut poll => break r,
                        _ = beat.tick() => self.report(&replica),
                        _ = stop.changed() => return,
                    }
                }
            };
            c.connects.fetch_add(conn.connects - before, Relaxed);
            let failure = match outcome {
                Ok(r) if r.status == StatusCode::NOT_MODIFIED => {
                    c.not_modified.fetch_add(1, Relaxed);
                    None
                }
                Ok(r) if r.status == StatusCode::OK => {
                    c.snapshots.fetch_add(1, Relaxed);
                    let held = r
                        .decoded()
                        .and_then(|body| replica.receive(r.content_type(), &body));
                    match held {
                        Ok(h) => {
                            if self.track.version.swap(h.version, Relaxed) != h.version {
                                self.track.applied_us.store(fleet.now_us(), Relaxed);
                            }
                            self.report(&replica);
                            None
                        }
                        Err(e) => {
                            return fleet.fail(format!(
                                "node {} of gateway `{}`: {e}",
                                self.id, self.link.gateway
                            ));
                        }
                    }
                }
                Ok(r) => Some(format!(
                    "the control plane answered {}: {}",
                    r.status,
                    r.excerpt()
                )),
                Err(e) => Some(e.to_string()),
            };
            match failure {
                None => backoff = Duration::from_millis(500),
                Some(e) => {
                    c.poll_errors.fetch_add(1, Relaxed);
                    fleet.note(format!("long-poll of {}: {e}", self.id));
                    let until = tokio::time::Instant::now() + backoff;
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep_until(until) => break,
                            _ = beat.tick() => self.report(&replica),
                            _ = stop.changed() => return,
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(15));
                }
            }
        }
    }
}
