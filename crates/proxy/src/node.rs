//! A node linked to a control plane: the sync client (long-poll for the gateway's snapshot,
//! validate, apply, keep it on disk, report), the on-disk cache it starts from when the
//! control plane is away, and the admin API on port 2020 that the control plane calls with a
//! JWT signed with the gateway's secret.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portico_model::delta::Held;
use portico_model::{
    ADMIN_AUDIENCE, ADMIN_ISSUER, AdminClaims, DELTA_CONTENT_TYPE, NodeReport, Snapshot,
    SyncDeltas, SyncEnvelope,
};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};

use crate::Gateway;

/// How the node reaches its control plane.
#[derive(Clone)]
pub struct SyncSettings {
    /// Control plane base URL.
    pub url: String,
    /// The gateway's API token.
    pub token: String,
    /// Cache directory.
    pub cache_dir: PathBuf,
    /// Report interval when nothing changes.
    pub heartbeat: Duration,
    /// Longest a long-poll waits before it is asked again.
    pub poll_wait: Duration,
    /// PEM of a CA to trust for the control plane's certificate, besides the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Where hosted apps' files are kept (fetched by hash before a snapshot is applied).
    pub app_files: Option<Arc<crate::apps::AppFiles>>,
}

impl std::fmt::Debug for SyncSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncSettings")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

/// What the node knows about itself, shared by the sync loop and the admin API.
pub struct NodeState {
    /// Stable id, kept in the cache directory.
    pub node_id: String,
    /// The secret the control plane binds the id to (in the cache directory, 0600).
    node_key: String,
    /// Host name.
    pub hostname: String,
    inner: Mutex<Applied>,
    /// Wakes the sync loop to fetch now.
    pub resync: Notify,
    /// App files of the snapshot applied before the current one.
    previous_files: Mutex<std::collections::HashSet<String>>,
    /// The gateway's endpoint health, once the node serves.
    health: std::sync::OnceLock<Arc<crate::upstream::StateRegistry>>,
    /// The content of the last version received (applied, or refused by the runtime),
    /// indexed for deltas; none before the first, or after a delta that did not apply.
    /// Shared with the cache writer while it writes (a delta arriving meanwhile works on
    /// a copy): the writer never holds the lock for the seconds a large one takes.
    held: Mutex<Option<Arc<HeldAt>>>,
    /// Wakes the cache writer: what is held changed.
    cache_dirty: Notify,
    /// The version the cache file holds, once this process wrote one.
    written: Mutex<Option<u64>>,
    /// Reports go one at a time, each written as it is sent: one made before an apply can
    /// never land after the apply's report and show the node behind.
    reporting: tokio::sync::Mutex<()>,
    /// A report is waiting for its turn: it will say what is true when it goes, so
    /// another is not needed.
    report_waiting: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for NodeState {
    /// Never the node key, nor what is held (a whole snapshot).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeState")
            .field("node_id", &self.node_id)
            .field("hostname", &self.hostname)
            .field("node_key", &"<redacted>")
            .field("applied_version", &self.applied_version())
            .field("held_version", &self.held_version())
            .finish_non_exhaustive()
    }
}

/// A version's content as the node holds it.
#[derive(Debug, Clone)]
struct HeldAt {
    gateway: String,
    version: u64,
    hash: String,
    held: Held,
}

/// A [`SyncEnvelope`] borrowing what it says, to write the cache without a copy.
#[derive(serde::Serialize)]
struct EnvelopeRef<'a> {
    gateway: &'a str,
    version: u64,
    hash: &'a str,
    snapshot: &'a Snapshot,
}

#[derive(Debug, Default, Clone)]
struct Applied {
    gateway: Option<String>,
    version: Option<u64>,
    hash: Option<String>,
    /// The last apply's error and when (Unix seconds): cleared only by a good apply.
    last_error: Option<(String, u64)>,
    /// The current sync failure (the control plane unreachable, say): cleared by the next
    /// good poll; shown on the node's admin API, not reported.
    sync_error: Option<String>,
    last_sync: Option<u64>,
    acme: Vec<portico_model::AcmeHostStatus>,
    /// How updates arrived since the node started.
    updates: Updates,
}

/// How updates arrived: whole snapshots, chains of deltas, and deltas that did not apply
/// (each followed by a whole snapshot).
#[derive(Debug, Default, Clone, serde::Serialize)]
struct Updates {
    snapshots: u64,
    deltas: u64,
    resyncs: u64,
    last_resync: Option<String>,
}

impl NodeState {
    /// Loads (or creates) the node id and node key in `cache_dir`.
    pub fn new(cache_dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        // The cache holds the snapshot (private keys) and the node key: owner only.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(cache_dir)?;
        let id_path = cache_dir.join("node-id");
        let key_path = cache_dir.join("node-key");
        let (node_id, node_key) = match (
            std::fs::read_to_string(&id_path),
            std::fs::read_to_string(&key_path),
        ) {
            (Ok(id), Ok(key)) if !id.trim().is_empty() && key.trim().len() >= 32 => {
                (id.trim().to_owned(), key.trim().to_owned())
            }
            // A first start (or a node id from before node keys): a new identity.
            _ => {
                let id = format!("node-{}", &random_hex(8)?);
                let key = random_hex(32)?;
                write_private(&key_path, key.as_bytes())?;
                std::fs::write(&id_path, &id)?;
                (id, key)
            }
        };
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Ok(Self {
            node_id,
            node_key,
            hostname,
            inner: Mutex::new(Applied::default()),
            resync: Notify::new(),
            previous_files: Mutex::default(),
            health: std::sync::OnceLock::new(),
            held: Mutex::default(),
            cache_dirty: Notify::new(),
            written: Mutex::default(),
            reporting: tokio::sync::Mutex::new(()),
            report_waiting: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, Option<Arc<HeldAt>>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_written(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The version whose content is held.
    fn held_version(&self) -> Option<u64> {
        self.lock_held().as_ref().map(|h| h.version)
    }

    fn lock_files(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.previous_files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Watches the endpoint health of the gateway this node serves (for reports and status).
    pub fn watch_health(&self, registry: Arc<crate::upstream::StateRegistry>) {
        let _ = self.health.set(registry);
    }

    /// The report sent to the control plane.
    pub fn report(&self) -> NodeReport {
        let unhealthy_endpoints = self
            .health
            .get()
            .map(|r| crate::gateway::unhealthy(r))
            .unwrap_or_default();
        let a = self.lock();
        NodeReport {
            node_id: self.node_id.clone(),
            hostname: self.hostname.clone(),
            applied_version: a.version,
            applied_hash: a.hash.clone(),
            last_error: a.last_error.as_ref().map(|(e, _)| e.clone()),
            last_error_at: a.last_error.as_ref().map(|(_, t)| *t),
            node_key: Some(self.node_key.clone()),
            unhealthy_endpoints,
        }
    }

    /// The version applied now.
    pub fn applied_version(&self) -> Option<u64> {
        self.lock().version
    }

    fn set_applied(&self, gateway: &str, version: u64, hash: &str, snapshot: &Snapshot) {
        let mut a = self.lock();
        a.gateway = Some(gateway.to_owned());
        a.version = Some(version);
        a.hash = Some(hash.to_owned());
        a.last_error = None;
        a.acme = snapshot.acme.hosts.clone();
    }

    /// An apply failed: reported until an apply succeeds.
    fn set_apply_error(&self, e: String) {
        self.lock().last_error = Some((e, crate::clock::unix_secs()));
    }

    /// Syncing failed: shown until the next good poll.
    fn set_sync_error(&self, e: String) {
        self.lock().sync_error = Some(e);
    }

    fn synced(&self) {
        let mut a = self.lock();
        a.last_sync = Some(crate::clock::unix_secs());
        a.sync_error = None;
    }

    fn status_json(&self) -> serde_json::Value {
        let a = self.lock().clone();
        serde_json::json!({
            "node_id": self.node_id,
            "hostname": self.hostname,
            "gateway": a.gateway,
            "applied_version": a.version,
            "applied_hash": a.hash,
            "last_error": a.last_error.as_ref().map(|(e, _)| e),
            "last_error_at": a.last_error.as_ref().map(|(_, t)| t),
            "sync_error": a.sync_error,
            "last_sync": a.last_sync,
            "certificates": a.acme,
            "updates": a.updates,
            "endpoints": self.health.get().map(|r| r.health()).unwrap_or_default(),
        })
    }
}

/// `n` random bytes from the kernel, as hex.
fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a new file readable by its owner only (replacing an old one).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

const CACHE_FILE: &str = "snapshot.json";

/// The last applied snapshot from the cache, if there is one that still validates.
pub fn load_cache(cache_dir: &Path) -> Option<Cached> {
    let path = cache_dir.join(CACHE_FILE);
    if !path.exists() {
        return None;
    }
    // Read as it streams from the file: a million keys' JSON is never held whole.
    let streamed = || -> Option<Cached> {
        let file = std::fs::File::open(&path).ok()?;
        let env: SyncEnvelope =
            serde_json::from_reader(std::io::BufReader::with_capacity(1 << 20, file)).ok()?;
        if !env.hash.starts_with(portico_model::delta::DIGEST_PREFIX) {
            return None;
        }
        let held = Held::new(env.snapshot);
        held.matches(&env.hash).then_some(Cached {
            gateway: env.gateway,
            version: env.version,
            hash: env.hash,
            held,
        })
    };
    let cached = streamed().or_else(|| load_old_cache(&path));
    match cached {
        Some(c) if c.held.snapshot().validate().is_ok() => Some(c),
        _ => {
            tracing::warn!(path = %path.display(), "the cached snapshot is unreadable or invalid; ignoring it");
            None
        }
    }
}

/// A cache written by a build before digests: checked by the SHA-256 of the snapshot's
/// bytes as written.
fn load_old_cache(path: &Path) -> Option<Cached> {
    /// The envelope with the snapshot's bytes as written.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw<'a> {
        gateway: String,
        version: u64,
        hash: String,
        #[serde(borrow)]
        snapshot: &'a serde_json::value::RawValue,
    }
    let text = std::fs::read_to_string(path).ok()?;
    let raw = serde_json::from_str::<Raw<'_>>(&text).ok()?;
    if raw.hash.starts_with(portico_model::delta::DIGEST_PREFIX) {
        return None;
    }
    let bytes = raw.snapshot.get().as_bytes();
    let written = raw.hash == sha256_text(bytes);
    let held = Held::new(serde_json::from_slice::<Snapshot>(bytes).ok()?);
    (written || held.matches(&raw.hash)).then_some(Cached {
        gateway: raw.gateway,
        version: raw.version,
        hash: raw.hash,
        held,
    })
}

/// `sha256:<hex>` of `bytes`.
fn sha256_text(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(bytes);
    let mut out = String::from("sha256:");
    for b in d {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The snapshot in the cache, checked against its hash and held for deltas.
#[derive(Debug)]
pub struct Cached {
    /// The gateway.
    pub gateway: String,
    /// Its version.
    pub version: u64,
    hash: String,
    held: Held,
}

impl Cached {
    /// What it serves.
    pub fn snapshot(&self) -> &Snapshot {
        self.held.snapshot()
    }
}

/// Writes the cache file through `write`, streamed to a temporary file then renamed over
/// the old one: a million keys' JSON is never held whole in memory, and a reader never
/// sees half a file.
fn store_cache(
    cache_dir: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // The snapshot can hold private keys and API key hashes: owner only.
    let tmp = cache_dir.join(format!("{CACHE_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    write(&mut out)?;
    out.flush()?;
    drop(out);
    std::fs::rename(&tmp, cache_dir.join(CACHE_FILE))
}

/// Marks what the cache held as applied (the node started from it), and holds it for
/// the deltas that follow.
pub fn started_from_cache(state: &NodeState, cached: Cached) {
    // Its app files stay until the snapshot after the next one (a rollback needs them).
    *state.lock_files() = app_hashes(cached.snapshot());
    state.set_applied(
        &cached.gateway,
        cached.version,
        &cached.hash,
        cached.snapshot(),
    );
    *state.lock_written() = Some(cached.version);
    *state.lock_held() = Some(Arc::new(HeldAt {
        gateway: cached.gateway,
        version: cached.version,
        hash: cached.hash,
        held: cached.held,
    }));
}

/// Writes what the node holds to the cache, whenever it changes: a complete snapshot,
/// written off the sync loop (for a million keys it takes a while).
async fn cache_writer(state: Arc<NodeState>, dir: PathBuf) {
    loop {
        state.cache_dirty.notified().await;
        write_cache(&state, &dir).await;
    }
}

/// Writes the held snapshot to the cache when it is the one served and not written yet.
async fn write_cache(state: &Arc<NodeState>, dir: &Path) {
    let st = state.clone();
    let dir = dir.to_owned();
    let written = tokio::task::spawn_blocking(move || {
        let served = st.applied_version();
        // Shared with what serves and what the next delta applies to, not copied.
        let Some(h) = st.lock_held().clone() else {
            return Ok(());
        };
        // Not a version the runtime refused, not one already on disk.
        if Some(h.version) != served || *st.lock_written() == Some(h.version) {
            return Ok(());
        }
        store_cache(&dir, |out| {
            serde_json::to_writer(
                out,
                &EnvelopeRef {
                    gateway: &h.gateway,
                    version: h.version,
                    hash: &h.hash,
                    snapshot: h.held.snapshot(),
                },
            )
            .map_err(std::io::Error::other)
        })?;
        *st.lock_written() = Some(h.version);
        Ok::<_, std::io::Error>(())
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the snapshot cache"),
        Err(e) => tracing::warn!(error = %e, "the snapshot cache writer failed"),
    }
}

/// Pulls snapshots until `stop` turns true: long-poll, validate, apply, cache, report.
pub async fn run_sync(
    gateway: Arc<Gateway>,
    settings: SyncSettings,
    state: Arc<NodeState>,
    mut stop: watch::Receiver<bool>,
) {
    state.watch_health(gateway.registry().clone());
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
    if let Some(pem) = &settings.ca_pem {
        match reqwest::Certificate::from_pem_bundle(pem) {
            Ok(certs) => {
                for c in certs {
                    builder = builder.add_root_certificate(c);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the CA file is not PEM; syncing cannot start");
                return;
            }
        }
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the sync client");
            return;
        }
    };
    let base = settings.url.trim_end_matches('/').to_owned();
    let heartbeat = tokio::spawn(heartbeat_loop(
        client.clone(),
        base.clone(),
        settings.token.clone(),
        settings.heartbeat,
        state.clone(),
        stop.clone(),
    ));
    let writer = tokio::spawn(cache_writer(state.clone(), settings.cache_dir.clone()));
    let mut backoff = Duration::from_millis(500);
    // A version the node refused: do not fetch it again, wait for a newer one.
    let mut refused: Option<u64> = None;
    let mut force = false;
    loop {
        if *stop.borrow() {
            break;
        }
        let after = if force {
            None
        } else {
            refused.or(state.applied_version())
        };
        force = false;
        let mut url = format!(
            "{base}/api/v1/sync/snapshot?wait={}",
            settings.poll_wait.as_secs()
        );
        if let Some(v) = after {
            url.push_str(&format!("&after={v}"));
            // Only what changed since, when the node holds that version's content.
            if state.held_version() == Some(v) {
                url.push_str("&deltas=true");
            }
        }
        let req = client
            .get(&url)
            .bearer_auth(&settings.token)
            .timeout(settings.poll_wait + Duration::from_secs(15))
            .send();
        let outcome = tokio::select! {
            r = req => r,
            () = state.resync.notified() => { force = true; continue; }
            _ = stop.changed() => break,
        };
        let failure = match outcome {
            Err(e) => Some(format!(
                "cannot reach the control plane at {base}: {}",
                if e.is_connect() { "connection refused".to_owned() } else { e.to_string() }
            )),
            Ok(resp) => match resp.status() {
                StatusCode::NOT_MODIFIED => {
                    state.synced();
                    None
                }
                StatusCode::OK => {
                    let delta = resp
                        .headers()
                        .get(header::CONTENT_TYPE)
                        .is_some_and(|v| v.as_bytes().starts_with(DELTA_CONTENT_TYPE.as_bytes()));
                    let applying = ApplySpan::begin(
                        &gateway,
                        resp.headers().get(crate::trace::DEPLOY_TRACE).map(|v| v.as_bytes()),
                        delta,
                    );
                    let got = if delta {
                        read_body(resp).await.map(Got::Deltas)
                    } else {
                        read_whole(resp).await.map(|h| Got::Whole(Box::new(h)))
                    };
                    match got {
                    Ok(got) => {
                        state.synced();
                        let outcome = match got {
                            Got::Deltas(body) => {
                                apply_deltas(&gateway, &settings, &state, &client, &base, body).await
                            }
                            Got::Whole(held) => match *held {
                                Ok(held) => {
                                    serve(&gateway, &settings, &state, &client, &base, held, None).await
                                }
                                Err(e) => Err(e),
                            },
                        };
                        if let Some(s) = applying {
                            let r = state.report();
                            s.end(ApplyDone {
                                node: r.node_id,
                                hostname: r.hostname,
                                gateway: state.lock().gateway.clone(),
                                version: r.applied_version,
                                error: match &outcome {
                                    Ok(()) => None,
                                    Err(ApplyError::Refused(_, e) | ApplyError::Transient(e) | ApplyError::Resync(e)) => Some(e.clone()),
                                },
                            });
                        }
                        if outcome.is_ok() {
                            let u = &mut state.lock().updates;
                            if delta { u.deltas += 1 } else { u.snapshots += 1 }
                        }
                        let transient = match outcome {
                            Ok(()) => {
                                refused = None;
                                None
                            }
                            Err(ApplyError::Refused(version, e)) => {
                                // Not a connection problem: no back-off, wait for a newer one.
                                refused = version;
                                tracing::error!(error = %e, "snapshot refused; still serving the previous one");
                                state.set_apply_error(e);
                                None
                            }
                            // App files could not be fetched: try again after a pause.
                            Err(ApplyError::Transient(e)) => {
                                state.set_apply_error(e.clone());
                                Some(e)
                            }
                            // The deltas did not make what the control plane has: the whole
                            // snapshot, now.
                            Err(ApplyError::Resync(e)) => {
                                tracing::warn!(error = %e, "deltas not applied; fetching the whole snapshot");
                                let mut a = state.lock();
                                a.updates.resyncs += 1;
                                a.updates.last_resync = Some(e);
                                drop(a);
                                force = true;
                                None
                            }
                        };
                        report(&client, &base, &settings.token, &state);
                        transient
                    }
                    Err(e) => Some(format!("the snapshot download broke off: {e}")),
                    }
                }
                StatusCode::UNAUTHORIZED => Some(
                    "the control plane refused this node's API token (not linked yet, revoked or rotated); still serving the last snapshot".to_owned(),
                ),
                other => Some(format!("the control plane answered {other}")),
            },
        };
        match failure {
            None => backoff = Duration::from_millis(500),
            Some(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "sync failed");
                state.set_sync_error(e);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = state.resync.notified() => { force = true; }
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(15));
            }
        }
    }
    heartbeat.abort();
    writer.abort();
    // What was applied last is on disk before the node stops.
    write_cache(&state, &settings.cache_dir).await;
}

/// A node's apply of a traced deploy: a child of the control plane's `deploy` span,
/// recorded when the node traces.
#[derive(Debug)]
pub struct ApplySpan {
    tracer: Arc<portico_otlp::Exporter>,
    trace_id: [u8; 16],
    deploy: [u8; 8],
    delta: bool,
    start: u64,
}

/// What an apply did, for its span.
#[derive(Debug)]
pub struct ApplyDone {
    /// The node's id.
    pub node: String,
    /// Its host name.
    pub hostname: String,
    /// The gateway it serves.
    pub gateway: Option<String>,
    /// The version it serves after the apply.
    pub version: Option<u64>,
    /// Why the apply failed.
    pub error: Option<String>,
}

impl ApplySpan {
    /// The span, when `deploy` (the sync answer's [`crate::trace::DEPLOY_TRACE`]) names a
    /// sampled deploy and the node sends spans.
    pub fn begin(gateway: &Gateway, deploy: Option<&[u8]>, delta: bool) -> Option<Self> {
        let tracer = gateway.tracer()?.clone();
        let (trace_id, deploy, sampled) = crate::trace::parse_traceparent(deploy?)?;
        sampled.then(|| Self {
            tracer,
            trace_id,
            deploy,
            delta,
            start: crate::exchange::unix_nanos(),
        })
    }

    /// Records it, with what the node applied or why it did not.
    pub fn end(self, done: ApplyDone) {
        use portico_otlp::Value;
        let mut attributes = vec![
            ("portico.node", Value::Str(done.node)),
            ("host.name", Value::Str(done.hostname)),
            ("portico.sync.delta", Value::Bool(self.delta)),
        ];
        if let Some(v) = done.version {
            attributes.push(("portico.snapshot.version", Value::Int(v as i64)));
        }
        if let Some(g) = done.gateway {
            attributes.push(("portico.gateway", Value::Str(g)));
        }
        if done.error.is_some() {
            attributes.push(("error.type", Value::Str("apply_failed".into())));
        }
        self.tracer.record(portico_otlp::SpanData {
            trace_id: self.trace_id,
            span_id: crate::trace::new_span_id(),
            parent_id: Some(self.deploy),
            trace_state: String::new(),
            name: "apply snapshot".into(),
            kind: portico_otlp::Kind::Consumer,
            start: self.start,
            end: crate::exchange::unix_nanos(),
            attributes,
            events: Vec::new(),
            links: vec![(self.trace_id, self.deploy)],
            phases: Vec::new(),
            error: done.error,
            deferred: None,
        });
    }
}

/// Why a snapshot was not applied.
enum ApplyError {
    /// This version is wrong (unreadable, invalid, refused by the runtime): wait for another.
    Refused(Option<u64>, String),
    /// Its app files could not be fetched now: try again.
    Transient(String),
    /// Deltas that did not apply to what the node holds: fetch the whole snapshot.
    Resync(String),
}

/// A response's body in one buffer, grown as it arrives (a large one is moved by the
/// kernel, not copied, as it grows; collecting chunks and joining them held it twice).
async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What a sync answer carried.
enum Got {
    /// Deltas' JSON.
    Deltas(Vec<u8>),
    /// A whole snapshot, read and checked (or why it is refused).
    Whole(Box<Result<HeldAt, ApplyError>>),
}

/// A response body handed, as it arrives, to a blocking reader.
struct BodyReader {
    chunks: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use bytes::Buf as _;
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(c) => self.current = c,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Reads a whole snapshot as it arrives: parsed, hashed and checked off the workers that
/// serve traffic, and never held whole as JSON beside what is made of it (a million
/// keys' JSON is three times their packed size). A download that breaks off is an
/// error of the connection, not of the snapshot.
async fn read_whole(
    mut resp: reqwest::Response,
) -> Result<Result<HeldAt, ApplyError>, reqwest::Error> {
    let (tx, chunks) = tokio::sync::mpsc::channel(16);
    let parsed = tokio::task::spawn_blocking(move || {
        let reader = std::io::BufReader::with_capacity(
            1 << 16,
            BodyReader {
                chunks,
                current: bytes::Bytes::new(),
            },
        );
        let env: SyncEnvelope = serde_json::from_reader(reader).map_err(|e| {
            ApplyError::Refused(
                None,
                format!("the snapshot from the control plane is unreadable: {e}"),
            )
        })?;
        check_whole(env)
    });
    let mut broke = None;
    loop {
        match resp.chunk().await {
            // The reader stopped (the JSON is bad): its error says why.
            Ok(Some(c)) => {
                if tx.send(c).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                broke = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let parsed = parsed.await.unwrap_or_else(|e| {
        Err(ApplyError::Transient(format!(
            "reading the snapshot failed: {e}"
        )))
    });
    match broke {
        Some(e) => Err(e),
        None => Ok(parsed),
    }
}

/// Holds a whole snapshot once its digest and validation pass.
fn check_whole(env: SyncEnvelope) -> Result<HeldAt, ApplyError> {
    let SyncEnvelope {
        gateway: name,
        version,
        hash,
        snapshot,
    } = env;
    let held = Held::new(snapshot);
    if !held.matches(&hash) {
        return Err(ApplyError::Refused(
            Some(version),
            format!("snapshot {version} does not match its hash; refused"),
        ));
    }
    if let Err(e) = held.snapshot().validate() {
        return Err(ApplyError::Refused(
            Some(version),
            format!("snapshot {version} is invalid and was not applied: {e}"),
        ));
    }
    Ok(HeldAt {
        gateway: name,
        version,
        hash,
        held,
    })
}

/// Applies a chain of deltas to what the node holds, checks the digest after each step,
/// and serves the result. Anything wrong on the way is [`ApplyError::Resync`]: what is held
/// is dropped and the whole snapshot fetched.
async fn apply_deltas(
    gateway: &Gateway,
    settings: &SyncSettings,
    state: &NodeState,
    client: &reqwest::Client,
    base: &str,
    body: Vec<u8>,
) -> Result<(), ApplyError> {
    let deltas: SyncDeltas = serde_json::from_slice(&body)
        .map_err(|e| ApplyError::Resync(format!("the deltas are unreadable: {e}")))?;
    // Taken: until the steps apply, nothing is held.
    let taken = state.lock_held().take();
    let mut held = Arc::unwrap_or_clone(
        taken.ok_or_else(|| ApplyError::Resync("no snapshot is held".into()))?,
    );
    if deltas.gateway != held.gateway {
        return Err(ApplyError::Resync(format!(
            "the deltas are for gateway `{}`, the node holds `{}`",
            deltas.gateway, held.gateway
        )));
    }
    let steps = deltas.steps.len();
    let mut entities = 0;
    let mut touched = portico_model::delta::Touched::default();
    for step in deltas.steps {
        if step.from != held.version {
            return Err(ApplyError::Resync(format!(
                "a delta from version {} came for version {}",
                step.from, held.version
            )));
        }
        entities += step.changes.len();
        touched.add(&step.changes);
        held.held
            .apply(step.changes, &step.hash)
            .map_err(|e| ApplyError::Resync(format!("version {}: {e}", step.version)))?;
        held.version = step.version;
        held.hash = step.hash;
    }
    tracing::debug!(version = held.version, steps, entities, "deltas applied");
    serve(gateway, settings, state, client, base, held, Some(&touched)).await
}

/// Serves `held` ([`serve_held`]) and keeps it as what the node holds: even when the
/// runtime refused it (the next version's deltas apply to it), but not when its app files
/// are still missing (it will come whole again). What is served goes to the cache.
async fn serve(
    gateway: &Gateway,
    settings: &SyncSettings,
    state: &NodeState,
    client: &reqwest::Client,
    base: &str,
    held: HeldAt,
    touched: Option<&portico_model::delta::Touched>,
) -> Result<(), ApplyError> {
    let served = serve_held(gateway, settings, state, client, base, &held, touched).await;
    *state.lock_held() = match served {
        Err(ApplyError::Transient(_)) => None,
        _ => Some(Arc::new(held)),
    };
    if served.is_ok() {
        state.cache_dirty.notify_one();
    }
    served
}

/// Fetches the app files of what is held, serves it, and marks it applied. After deltas,
/// `touched` says what they changed: only that is compiled again.
async fn serve_held(
    gateway: &Gateway,
    settings: &SyncSettings,
    state: &NodeState,
    client: &reqwest::Client,
    base: &str,
    held: &HeldAt,
    touched: Option<&portico_model::delta::Touched>,
) -> Result<(), ApplyError> {
    let version = held.version;
    let snapshot = held.held.snapshot();
    let apps_may_change = touched.is_none_or(|t| t.other);
    if let Some(files) = settings.app_files.as_ref().filter(|_| apps_may_change) {
        fetch_app_files(client, base, &settings.token, files, snapshot)
            .await
            .map_err(|e| {
                ApplyError::Transient(format!("snapshot {version} waits for its app files: {e}"))
            })?;
    }
    let label = portico_model::snapshot::short_version(&held.hash);
    let started = std::time::Instant::now();
    match touched {
        Some(t) => gateway.apply_update(snapshot, t, &label).await,
        None => gateway.apply_as(snapshot, &label).await,
    }
    .map_err(|e| {
        ApplyError::Refused(
            Some(version),
            format!("snapshot {version} could not be applied: {e}"),
        )
    })?;
    if let Some(files) = settings.app_files.as_ref().filter(|_| apps_may_change) {
        // Keep the files of this snapshot and the one before (a rollback needs no fetch).
        let now_serving = app_hashes(snapshot);
        let mut keep = now_serving.clone();
        {
            let mut prev = state.lock_files();
            keep.extend(prev.iter().cloned());
            *prev = now_serving.clone();
        }
        files.retain(&now_serving);
        let removed = files.sweep(&keep);
        if removed > 0 {
            tracing::info!(files = removed, "app files no longer served removed");
        }
    }
    state.set_applied(&held.gateway, version, &held.hash, snapshot);
    tracing::info!(
        gateway = %held.gateway,
        version,
        hash = %held.hash,
        by = if touched.is_some() { "delta" } else { "whole" },
        runtime_ms = started.elapsed().as_millis() as u64,
        "snapshot applied"
    );
    Ok(())
}

/// The hashes of every app file a snapshot serves.
pub fn app_hashes(s: &portico_model::Snapshot) -> std::collections::HashSet<String> {
    s.apps
        .iter()
        .flat_map(|b| b.files.values().map(|f| f.hash.clone()))
        .collect()
}

/// Fetches the app files a snapshot needs and the node lacks, checking each one's hash;
/// nothing is applied until all are present.
async fn fetch_app_files(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    files: &crate::apps::AppFiles,
    snapshot: &portico_model::Snapshot,
) -> Result<(), String> {
    use futures_util::StreamExt as _;
    let mut wanted: Vec<(String, u64)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for b in &snapshot.apps {
        for f in b.files.values() {
            if seen.insert(f.hash.clone())
                && std::fs::metadata(files.path(&f.hash)).map(|m| m.len()).ok() != Some(f.size)
            {
                wanted.push((f.hash.clone(), f.size));
            }
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let total = wanted.len();
    let results: Vec<Result<(), String>> = futures_util::stream::iter(wanted)
        .map(|(hash, size)| fetch_one(client, base, token, files, hash, size))
        .buffer_unordered(8)
        .collect()
        .await;
    let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if let Some(first) = failed.first() {
        return Err(format!(
            "{} of {total} files failed, e.g. {first}",
            failed.len()
        ));
    }
    tracing::info!(files = total, "app files fetched");
    Ok(())
}

async fn fetch_one(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    files: &crate::apps::AppFiles,
    hash: String,
    size: u64,
) -> Result<(), String> {
    use sha2::Digest as _;
    use tokio::io::AsyncWriteExt as _;
    let mut resp = client
        .get(format!("{base}/api/v1/sync/blobs/{hash}"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .map_err(|e| format!("{hash}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!(
            "{hash}: the control plane answered {}",
            resp.status()
        ));
    }
    let path = files.path(&hash);
    let dir = path.parent().unwrap_or(files.dir()).to_owned();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = dir.join(format!("{hash}.part"));
    let mut out = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut got = 0u64;
    let result = async {
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{hash}: {e}"))? {
            got += chunk.len() as u64;
            if got > size {
                return Err(format!("{hash}: more bytes than the {size} expected"));
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| format!("{}: {e}", tmp.display()))?;
        }
        out.flush().await.map_err(|e| e.to_string())?;
        let digest: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if digest != hash || got != size {
            return Err(format!(
                "{hash}: the file arrived changed ({got} bytes, SHA-256 {digest})"
            ));
        }
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// Sends what the node serves to the control plane, in the background. Reports go in
/// order, each made when its turn comes; while one waits for its turn, more are not
/// queued (the waiting one will carry what they would).
fn report(client: &reqwest::Client, base: &str, token: &str, state: &Arc<NodeState>) {
    use std::sync::atomic::Ordering;
    if state.report_waiting.swap(true, Ordering::AcqRel) {
        return;
    }
    let req = client
        .post(format!("{base}/api/v1/sync/report"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(10));
    let state = state.clone();
    tokio::spawn(async move {
        let _turn = state.reporting.lock().await;
        // From here a new report waits for this one, and says what is true after it.
        state.report_waiting.store(false, Ordering::Release);
        let req = req.json(&state.report());
        match req.send().await {
            Err(e) => tracing::debug!(error = %e, "report failed"),
            // Refused: this node's id is bound to another node, or the gateway has as many
            // nodes as it may have. Say so: `portico status` will not list this node.
            Ok(r) if !r.status().is_success() => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_owned))
                    .unwrap_or(body);
                tracing::warn!(%status, error = %message, "the control plane refused this node's report");
            }
            Ok(_) => {}
        }
    });
}

async fn heartbeat_loop(
    client: reqwest::Client,
    base: String,
    token: String,
    every: Duration,
    state: Arc<NodeState>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        report(&client, &base, &token, &state);
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The admin API's keys: the JWT secret and the hash of the node's own API token.
#[derive(Clone)]
pub struct AdminKeys {
    /// Verifies the control plane's JWTs.
    pub jwt_secret: String,
    /// SHA-256 hex of the node's API token.
    pub token_hash: String,
}

impl std::fmt::Debug for AdminKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKeys(<redacted>)")
    }
}

/// SHA-256 hex of a token.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Binds the admin API; serve it with [`serve_admin`].
pub async fn bind_admin(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves the admin API: `GET /admin/v1/status`, `POST /admin/v1/resync`,
/// `POST /admin/v1/verify`. Every call needs a valid JWT; without one the answer is 401
/// and nothing else.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    keys: AdminKeys,
    state: Arc<NodeState>,
    tls: Option<crate::tls::TlsRuntime>,
    mut stop: watch::Receiver<bool>,
) {
    let keys = Arc::new(keys);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let keys = keys.clone();
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_admin_conn(stream, keys, state).await,
                Some(t) => {
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(Duration::from_secs(10), t.acceptor.accept(stream))
                            .await
                    {
                        serve_admin_conn(s, keys, state).await;
                    }
                }
            }
        });
    }
}

async fn serve_admin_conn<I>(io: I, keys: Arc<AdminKeys>, state: Arc<NodeState>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let keys = keys.clone();
        let state = state.clone();
        async move { Ok::<_, Infallible>(admin(req, &keys, &state).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn admin(
    req: Request<Incoming>,
    keys: &AdminKeys,
    state: &NodeState,
) -> Response<Full<Bytes>> {
    let unauthorized = || {
        json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": "unauthorized"}),
        )
    };
    let Some(claims) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .and_then(|jwt| verify_jwt(jwt.trim(), &keys.jwt_secret))
    else {
        return unauthorized();
    };
    let (parts, body) = req.into_parts();
    // Bodies are not used; read and drop a small one.
    let _ = http_body_util::Limited::new(body, 4096).collect().await;
    match (parts.method.as_str(), parts.uri.path()) {
        ("GET", "/admin/v1/status") => json(StatusCode::OK, &state.status_json()),
        ("POST", "/admin/v1/resync") => {
            state.resync.notify_one();
            json(StatusCode::ACCEPTED, &state.status_json())
        }
        ("POST", "/admin/v1/verify") => {
            if claims.tok.as_deref() != Some(keys.token_hash.as_str()) {
                return json(
                    StatusCode::FORBIDDEN,
                    &serde_json::json!({"error": "api_token_mismatch", "message": "the API token the control plane holds is not this gateway's"}),
                );
            }
            json(StatusCode::OK, &state.status_json())
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found", "message": "admin endpoints: GET /admin/v1/status, POST /admin/v1/resync, POST /admin/v1/verify"}),
        ),
    }
}

fn verify_jwt(jwt: &str, secret: &str) -> Option<AdminClaims> {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_audience(&[ADMIN_AUDIENCE]);
    v.set_issuer(&[ADMIN_ISSUER]);
    v.leeway = 30;
    jsonwebtoken::decode::<AdminClaims>(jwt, &DecodingKey::from_secret(secret.as_bytes()), &v)
        .ok()
        .map(|d| d.claims)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A control plane's report endpoint that holds the first report it gets for a while,
    /// and writes down the applied version of each as it answers it.
    async fn report_endpoint() -> (String, Arc<Mutex<Vec<Option<u64>>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let base = format!(
            "http://{}",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answered = seen.clone();
        tokio::spawn(async move {
            let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (seen, first) = (answered.clone(), first.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: its head, then as many bytes as it says.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match tcp.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 4096];
                            match tcp.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body: serde_json::Value =
                            serde_json::from_slice(&buf[head_end..head_end + len])
                                .unwrap_or_default();
                        buf.drain(..head_end + len);
                        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(400)).await;
                        }
                        seen.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(body["applied_version"].as_u64());
                        let ok = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
                        if tcp.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (base, seen)
    }

    /// Reports land in the order the node made them, each saying what is true when it
    /// is sent: an apply's report never lands before the heartbeat made ahead of it (that
    /// showed the node behind until its next heartbeat), and reports made while one waits
    /// are carried by that one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reports_land_in_order_and_say_what_is_true_when_sent() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let state = Arc::new(super::NodeState::new(dir.path()).unwrap_or_else(|e| panic!("{e}")));
        let (base, seen) = report_endpoint().await;
        let client = reqwest::Client::new();
        let snapshot = portico_model::Snapshot::default();
        state.set_applied("g", 1, "h1", &snapshot);
        super::report(&client, &base, "t", &state);
        // The first is held by the control plane; two versions are applied meanwhile.
        tokio::time::sleep(Duration::from_millis(100)).await;
        state.set_applied("g", 2, "h2", &snapshot);
        super::report(&client, &base, "t", &state);
        state.set_applied("g", 3, "h3", &snapshot);
        super::report(&client, &base, "t", &state);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap_or_else(|p| p.into_inner()).len() < 2 {
            assert!(std::time::Instant::now() < deadline, "reports never landed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Nothing else is on its way.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(seen, [Some(1), Some(3)]);
    }

    /// The node key never shows in the node's debug form.
    #[test]
    fn the_node_key_is_not_in_debug_output() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let state = super::NodeState::new(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let key =
            std::fs::read_to_string(dir.path().join("node-key")).unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{state:?}");
        assert!(shown.contains(&state.node_id), "{shown}");
        assert!(!shown.contains(key.trim()), "{shown}");
    }

    /// A cache written before digests (its hash the SHA-256 of the snapshot's bytes, its
    /// consumers in another order than the one held now) still loads; a changed byte
    /// does not.
    #[test]
    fn a_cache_from_before_digests_still_loads() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = "ab".repeat(32);
        let snapshot = format!(
            r#"{{"schema":1,"security":{{"api_keys":[{{"hash":"{key}","consumer":"zed","key_type":"production","apis":["a"]}}],"consumers":[{{"name":"zed","apis":["a"]}},{{"name":"amy","apis":["a"]}},{{"name":"bob","apis":["a"]}}]}}}}"#
        );
        let write = |snapshot: &str, hash: &str| {
            std::fs::write(
                dir.path().join(super::CACHE_FILE),
                format!(r#"{{"gateway":"g","version":3,"hash":"{hash}","snapshot":{snapshot}}}"#),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        };
        let hash = super::sha256_text(snapshot.as_bytes());
        write(&snapshot, &hash);
        let c = super::load_cache(dir.path()).unwrap_or_else(|| panic!("the old cache loads"));
        assert_eq!(c.version, 3);
        assert_eq!(c.snapshot().security.consumers.len(), 3);
        assert!(c.snapshot().security.api_keys.get(&key).is_some());
        write(&snapshot.replace("amy", "ann"), &hash);
        assert!(
            super::load_cache(dir.path()).is_none(),
            "a changed cache is refused"
        );
    }
}
