//! Portico's control plane: the store of what is published (gateways, services, APIs and
//! their revisions, deployments, raw routes), the admin REST API over it, the compiler run
//! on every change, and the sync endpoint gateway nodes long-poll for their snapshot.
//!
//! - [`store`]: SQLite through sqlx; every SQL statement lives there
//! - [`api`]: the admin REST API under `/api/v1` and the sync endpoints
//! - [`apply`]: `POST /api/v1/apply`, a document of every kind of object in one transaction
//! - [`extract`]: request parts read so that every rejection answers the JSON error shape
//! - [`acme`]: automatic certificates from an ACME CA
//! - [`link`]: proving a gateway's credentials by calling its admin API
//! - [`secrets`]: tokens, hashes, sealed JWT secrets
//! - [`tokens`]: the token service's keys, access tokens, JWKS
//! - [`signin`]: back-off for failed password-grant sign-ins

pub mod access;
pub mod acme;
pub mod admin_tls;
pub mod api;
pub mod apply;
pub mod archive;
pub mod blobs;
pub mod error;
pub mod extract;
pub mod leader;
pub mod link;
pub mod openapi;
pub mod page;
pub mod secrets;
pub mod signin;
pub mod store;
pub mod tokens;
pub mod trace;
pub mod web;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use error::Error;
pub use store::{DEFAULT_GATEWAY, NodeLimits, Store};

/// How a control plane runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the database and the secret key live.
    pub data_dir: PathBuf,
    /// The public side's address (token service, JWKS, gateway sync, developer portal);
    /// when unset, everything is served on `listen`.
    pub public_listen: Option<SocketAddr>,
    /// A PostgreSQL URL: the state lives there instead of the data directory's SQLite file.
    pub database: Option<String>,
    /// The key secrets at rest are sealed with (32 bytes); `<data_dir>/secret.key` when unset.
    /// Every control-plane node of one database is given the same file.
    pub secret_key_file: Option<PathBuf>,
    /// Admin API address.
    pub listen: SocketAddr,
    /// Port of the built-in gateway's HTTP listener when it is first created.
    pub default_gateway_port: u16,
    /// Revisions kept per API.
    pub max_revisions: u32,
    /// A node not heard from for this long is offline.
    pub node_offline_after: Duration,
    /// Longest a sync long-poll waits.
    pub long_poll_max: Duration,
    /// Serve the admin API and the public side over HTTPS.
    pub tls: Option<admin_tls::AdminTls>,
    /// An ACME client runs (listeners may ask for automatic certificates).
    pub acme: bool,
    /// Nodes per gateway at most, and when a silent one is forgotten.
    pub node_limits: store::NodeLimits,
    /// The developer portal's origin (`https://portal.example.com`), compiled into every
    /// gateway's snapshot so that its Try Out can call their APIs from the browser. When
    /// unset, the origin the admin API is reached at: `http://<listen address>` (`https://`
    /// with `tls`). [`start`] checks it and, in the running control plane's config, sets it
    /// to the serialized origin in use.
    pub portal_origin: Option<String>,
    /// Who may sign up in the developer portal.
    pub portal_signup: Signup,
    /// A sign-in session unused this long ends (it ends 12 h after sign-in in any case).
    pub session_idle: Duration,
    /// Spans of admin requests and deploys, and where they go; none when unset.
    pub tracing: Option<trace::Tracing>,
}

/// Who may sign up in the developer portal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Signup {
    /// Anyone, at once.
    Open,
    /// Anyone, once an admin approves them in the console.
    #[default]
    Approval,
    /// Nobody: admins create users.
    Closed,
}

impl std::str::FromStr for Signup {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(Self::Open),
            "approval" => Ok(Self::Approval),
            "closed" => Ok(Self::Closed),
            other => Err(format!("`{other}`: open, approval or closed")),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("portico-data"),
            database: None,
            secret_key_file: None,
            public_listen: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 9400)),
            default_gateway_port: 8080,
            max_revisions: 10,
            node_offline_after: Duration::from_secs(30),
            long_poll_max: Duration::from_secs(30),
            tls: None,
            acme: false,
            node_limits: store::NodeLimits::default(),
            portal_signup: Signup::default(),
            portal_origin: None,
            session_idle: Duration::from_secs(3600),
            tracing: None,
        }
    }
}

/// Snapshot versions per gateway, watched by long-polls and the built-in gateway.
#[derive(Debug, Default)]
pub struct Hub {
    senders: std::sync::Mutex<HashMap<i64, watch::Sender<u64>>>,
    /// Woken on every publish (the ACME client watches for new hosts).
    pub changed: tokio::sync::Notify,
    /// Gateways of the API tokens nodes sync with, by the token's hash, for a few seconds:
    /// when a change wakes ten thousand long-polls, each checks its token here instead of
    /// in the database. A gateway's entries go when it is woken (its token rotated or
    /// revoked, or it was deleted, on any control-plane node).
    owners: std::sync::Mutex<HashMap<String, (store::TokenOwner, std::time::Instant)>>,
    /// Moves on every wake: a lookup that raced with one is not remembered.
    wakes: std::sync::atomic::AtomicU64,
    /// The deploy trace of each gateway's latest snapshot version, by gateway: read once
    /// per version, not once per node answered.
    deploy_traces: std::sync::Mutex<HashMap<i64, (u64, Option<String>)>>,
}

/// How long a token's gateway is remembered (see [`Hub`]); a wake forgets it at once.
const OWNER_TTL: Duration = Duration::from_secs(10);
/// Tokens remembered at most (one per gateway whose nodes sync here).
const OWNERS_KEPT: usize = 100_000;

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, watch::Sender<u64>>> {
        self.senders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Announces new snapshot versions.
    pub fn publish(&self, moved: &[(i64, u64)]) {
        if moved.is_empty() {
            return;
        }
        let mut map = self.lock();
        let mut any = false;
        for &(gid, version) in moved {
            match map.get(&gid) {
                // Told only when it differs: the periodic check repeats what is known.
                Some(tx) => {
                    any |= tx.send_if_modified(|v| {
                        let newer = version != *v;
                        if newer {
                            *v = version;
                        }
                        newer
                    });
                }
                None => {
                    map.insert(gid, watch::channel(version).0);
                    any = true;
                }
            }
        }
        drop(map);
        if any {
            self.changed.notify_one();
        }
    }

    /// The deploy trace of `gateway`'s snapshot `version`, when it is the one remembered.
    pub fn deploy_trace(&self, gateway: i64, version: u64) -> Option<Option<String>> {
        let traces = self
            .deploy_traces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        traces
            .get(&gateway)
            .filter(|(v, _)| *v == version)
            .map(|(_, t)| t.clone())
    }

    /// Remembers the deploy trace of `gateway`'s snapshot `version`.
    pub fn remember_deploy_trace(&self, gateway: i64, version: u64, trace: Option<String>) {
        let mut traces = self
            .deploy_traces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match traces.get(&gateway) {
            Some((v, _)) if *v > version => {}
            _ => {
                traces.insert(gateway, (version, trace));
            }
        }
    }

    /// The gateway of the token with this hash, when it was looked up moments ago.
    pub fn owner(&self, token_hash: &str) -> Option<store::TokenOwner> {
        let owners = self
            .owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        owners
            .get(token_hash)
            .filter(|(_, at)| at.elapsed() < OWNER_TTL)
            .map(|(o, _)| o.clone())
    }

    /// Where wakes stand: taken before a token is looked up in the database, and given to
    /// [`Hub::remember_owner`] after.
    pub fn wakes(&self) -> u64 {
        self.wakes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Remembers the gateway of a token just looked up, unless a gateway was woken since
    /// `wakes` (the answer may predate a revocation).
    pub fn remember_owner(&self, token_hash: &str, owner: &store::TokenOwner, wakes: u64) {
        let mut owners = self
            .owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.wakes() != wakes {
            return;
        }
        if owners.len() >= OWNERS_KEPT {
            owners.retain(|_, (_, at)| at.elapsed() < OWNER_TTL);
            if owners.len() >= OWNERS_KEPT {
                owners.clear();
            }
        }
        owners.insert(
            token_hash.to_owned(),
            (owner.clone(), std::time::Instant::now()),
        );
    }

    /// Wakes the watchers of a gateway without a new version (its token was revoked).
    pub fn wake(&self, gid: i64) {
        // First forget its token: the woken long-polls check it again in the database.
        {
            let mut owners = self
                .owners
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.wakes.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            owners.retain(|_, (o, _)| o.gateway_id != gid);
        }
        if let Some(tx) = self.lock().get(&gid) {
            tx.send_modify(|_| {});
        }
    }

    /// Watches a gateway's snapshot version.
    pub fn subscribe(&self, gid: i64, current: u64) -> watch::Receiver<u64> {
        self.lock()
            .entry(gid)
            .or_insert_with(|| watch::channel(current).0)
            .subscribe()
    }
}

/// A running control plane's shared state.
#[derive(Debug)]
pub struct ControlPlane {
    /// The database.
    pub store: Store,
    /// Seals JWT secrets and certificate keys.
    pub sealer: Arc<secrets::Sealer>,
    /// Snapshot versions (the store's: its writes announce new ones at commit).
    pub hub: Arc<Hub>,
    /// Settings.
    pub config: Config,
    /// App files on disk.
    pub blobs: blobs::Blobs,
    /// Failed password-grant sign-ins.
    pub signins: signin::Throttle,
    /// Set when the control plane stops: sync long-polls answer at once instead of
    /// holding the shutdown for up to their 30 s.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Whether this node does the background duties that must run once (ACME, pruning).
    pub leader: leader::Leadership,
    /// Turns for the work of gateway nodes' requests (sync answers, reports, app files):
    /// half the database connections. When a change wakes ten thousand long-polls at
    /// once, they take their turns here, and the admin API keeps the other connections
    /// and a short run queue.
    pub node_work: tokio::sync::Semaphore,
}

impl ControlPlane {
    /// Waits for a turn to do a node's request's work (see `node_work`).
    pub async fn node_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.node_work.acquire().await.ok()
    }

    /// Records an app file stored on this node's disk; on PostgreSQL it also goes into the
    /// database first, so that every control-plane node can serve it.
    pub async fn keep_blob(&self, hash: &str, size: u64) -> Result<(), Error> {
        self.store
            .copy_blob_in(hash, &self.blobs.path(hash))
            .await?;
        self.store.add_blob(hash, size).await
    }

    /// Whether an app file is on this node's disk, writing it there from the database
    /// when another control-plane node took its upload.
    pub async fn local_blob(&self, hash: &str) -> Result<bool, Error> {
        let path = self.blobs.path(hash);
        if tokio::fs::metadata(&path).await.is_ok() {
            return Ok(true);
        }
        self.store.copy_blob_out(hash, &path).await
    }

    /// Removes from disk the app files the store forgot (no version references them); a
    /// file uploaded again meanwhile has its row back and stays.
    pub async fn sweep_files(&self, orphans: Vec<String>) {
        if orphans.is_empty() {
            return;
        }
        let mut gone = Vec::with_capacity(orphans.len());
        for h in orphans {
            if !self.store.has_blob(&h).await.unwrap_or(true) {
                gone.push(h);
            }
        }
        self.blobs.remove(&gone).await;
        tracing::info!(files = gone.len(), "unreferenced app files removed");
    }
}

/// Sweeps unreferenced app files every hour (uploads of versions never made, deleted
/// versions) until the control plane is dropped.
async fn sweep_files_hourly(state: std::sync::Weak<ControlPlane>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(st) = state.upgrade() else { return };
        if !st.leader.is_leader() {
            continue;
        }
        match st.store.take_unreferenced_blobs().await {
            Ok(orphans) => st.sweep_files(orphans).await,
            Err(e) => tracing::warn!(error = %e, "cannot sweep unreferenced app files"),
        }
    }
}

/// Forgets nodes that stayed silent too long, every minute (or sooner when they are
/// forgotten sooner), until the control plane is dropped.
async fn prune_silent_nodes(state: std::sync::Weak<ControlPlane>, forget_after: Duration) {
    let every = forget_after.clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(st) = state.upgrade() else { return };
        if !st.leader.is_leader() {
            continue;
        }
        match st
            .store
            .prune_nodes(st.config.node_limits.forget_after)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(nodes = n, "silent nodes forgotten"),
            Err(e) => tracing::warn!(error = %e, "cannot forget silent nodes"),
        }
        // Failed sign-ins shared in the database are forgotten like the memory's.
        if matches!(st.signins, signin::Throttle::Shared)
            && let Err(e) = st
                .store
                .forget_signin_failures(signin::LONGEST_PAUSE.as_secs() as i64)
                .await
        {
            tracing::warn!(error = %e, "cannot forget old failed sign-ins");
        }
    }
}

/// A control plane serving its admin API.
#[derive(Debug)]
pub struct Running {
    /// The address the admin API listens on.
    pub addr: SocketAddr,
    /// The address of the public side, when it has a listener of its own.
    pub public_addr: Option<SocketAddr>,
    /// Shared state.
    pub state: Arc<ControlPlane>,
    /// The admin token made on first start; shown once, stored hashed.
    pub first_admin_token: Option<String>,
    /// The server task; ends when the shutdown future passed to [`start`] completes.
    pub task: tokio::task::JoinHandle<()>,
}

/// Opens the store (creating the built-in gateway and the first admin token when they do
/// not exist yet) and serves the admin API until `shutdown` completes.
pub async fn start(
    mut config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Running, Error> {
    let configured_portal = config
        .portal_origin
        .as_deref()
        .map(portico_model::portal::parse_origin)
        .transpose()
        .map_err(|e| Error::Internal(format!("the portal origin (portal_origin): {e}")))?;
    // Bound before the store compiles anything: the default portal origin is the address
    // the admin API really listens on (port 0 resolved).
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Internal(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let public = match config.public_listen {
        Some(at) => {
            let l = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| Error::Internal(format!("cannot listen on {at}: {e}")))?;
            let local = l.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
            Some((l, local))
        }
        None => None,
    };
    // The portal is served on the public side when there is one.
    let portal_addr = public.as_ref().map_or(addr, |(_, a)| *a);
    let portal_origin = match configured_portal {
        Some(o) => o,
        None => {
            let addr = portal_addr;
            if addr.ip().is_unspecified() {
                tracing::warn!(%addr, "the admin API listens on every address, so the portal's origin cannot be known: browsers' Try Out calls will be refused until --portal-origin names it");
            }
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            portico_model::portal::parse_origin(&format!("{scheme}://{addr}"))
                .map_err(|e| Error::Internal(format!("the portal origin: {e}")))?
        }
    };
    config.portal_origin = Some(portal_origin.clone());
    // The secret key (and, on SQLite, the database) live here: owner only.
    secrets::private_dir(&config.data_dir)?;
    let mut store = match &config.database {
        Some(url) => Store::open_postgres(url).await?,
        None => Store::open(&config.data_dir).await?,
    };
    store.max_revisions = config.max_revisions;
    store.portal_origin = Some(portal_origin);
    let key_file = config
        .secret_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("secret.key"));
    let sealer = Arc::new(secrets::Sealer::load_or_create_at(&key_file)?);
    // Every node of one database seals with one key: another key would make the stored
    // secrets unreadable, or mix two keys in one table.
    store.check_key(&sealer, &key_file).await?;
    store.sealer = Some(sealer.clone());
    let first_admin_token = if store.has_admin_token().await? {
        None
    } else {
        // Only the node that stores it shows it (two may start together on one database).
        let token = secrets::generate("pat_");
        store
            .add_first_admin_token("first admin", &secrets::hash(&token))
            .await?
            .then_some(token)
    };
    store
        .ensure_default_gateway(config.default_gateway_port)
        .await?;
    // Stored definitions compiled by this version's compiler: a change in what a stored
    // definition means (a migrated field, a new default) reaches the gateways now. A gateway
    // whose stored state no longer compiles keeps its snapshot and is reported.
    for (gateway, e) in store.recompile_all().await? {
        tracing::error!(%gateway, error = %e, "this gateway's stored definitions do not compile; it keeps serving its last snapshot until they are fixed");
    }
    if store.active_signing_key().await?.is_none() {
        store
            .add_signing_key(&tokens::generate_key(&sealer)?)
            .await?;
        tracing::info!("token signing key created");
    }
    let hub = store.hub.clone();
    hub.publish(
        &store
            .snapshot_versions()
            .await?
            .into_iter()
            .map(|(id, _, v)| (id, v))
            .collect::<Vec<_>>(),
    );
    // Uploads a stopped control plane left half-written.
    let _ = std::fs::remove_dir_all(config.data_dir.join("blobs").join("tmp"));
    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    let leader = match &config.database {
        Some(url) => leader::Leadership::campaign(url.clone(), stopping.clone()),
        None => leader::Leadership::always(),
    };
    let node_work = tokio::sync::Semaphore::new(match store.backend() {
        store::Backend::Sqlite => store::SQLITE_CONNECTIONS as usize / 2,
        store::Backend::Postgres => store::POSTGRES_CONNECTIONS as usize / 2,
    });
    let state = Arc::new(ControlPlane {
        leader,
        node_work,
        store,
        sealer,
        hub,
        blobs: blobs::Blobs::new(&config.data_dir),
        signins: if config.database.is_some() {
            signin::Throttle::Shared
        } else {
            signin::Throttle::Local(signin::Memory::default())
        },
        config,
        stopping,
    });
    // The shutdown first releases the long-polls, then lets the server drain.
    let mut stopped = state.stopping.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    if let Some(url) = &state.config.database {
        tokio::spawn(store::notify::follow(
            Arc::downgrade(&state),
            url.clone(),
            state.stopping.clone(),
        ));
    }
    tokio::spawn(sweep_files_hourly(Arc::downgrade(&state)));
    tokio::spawn(prune_silent_nodes(
        Arc::downgrade(&state),
        state.config.node_limits.forget_after,
    ));
    let tls = match &state.config.tls {
        Some(how) => {
            let (chain, key, ca_file) =
                admin_tls::identity(how, &state.store, &state.sealer, &state.config.data_dir)
                    .await?;
            if let Some(ca) = ca_file {
                tracing::info!(ca = %ca.display(), "HTTPS with the control plane's CA: give this file to clients and gateway nodes (--ca-file)");
            }
            Some(admin_tls::acceptor(how, &chain, &key)?)
        }
        None => None,
    };
    let (admin_side, public_addr) = match public {
        Some((l, local)) => {
            let mut stopped = state.stopping.clone();
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let app = api::router_for(state.clone(), api::Side::Public);
            tokio::spawn(serve(l, tls.clone(), app, shutdown, "public side"));
            (api::Side::Admin, Some(local))
        }
        None => (api::Side::Both, None),
    };
    let app = api::router_for(state.clone(), admin_side);
    let task = tokio::spawn(serve(listener, tls, app, shutdown, "admin API"));
    Ok(Running {
        public_addr,
        addr,
        state,
        first_admin_token,
        task,
    })
}

/// The admin API over HTTPS: TLS handshake per connection, then HTTP/1.1 or HTTP/2.
/// Serves `app` on `listener` (over TLS when given an acceptor) until `shutdown`.
async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    what: &'static str,
) {
    match tls {
        None => {
            if let Err(e) = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
            {
                tracing::error!(error = %e, "{what} stopped");
            }
        }
        Some(acceptor) => serve_tls(listener, acceptor, app, shutdown).await,
    }
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
            () = &mut shutdown => return,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    use tower::ServiceExt as _;
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    app.clone().oneshot(req)
                });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: i64) -> store::TokenOwner {
        store::TokenOwner {
            gateway_id: id,
            name: format!("g{id}"),
        }
    }

    /// A token's gateway is remembered until its gateway is woken (token rotated or
    /// revoked, gateway deleted), and a lookup that raced with a wake is not remembered.
    #[test]
    fn token_owners_are_forgotten_when_their_gateway_is_woken() {
        let hub = Hub::default();
        let w = hub.wakes();
        hub.remember_owner("a", &owner(1), w);
        hub.remember_owner("b", &owner(2), w);
        assert_eq!(hub.owner("a").map(|o| o.gateway_id), Some(1));
        hub.wake(1);
        assert!(hub.owner("a").is_none(), "woken: looked up again");
        assert_eq!(hub.owner("b").map(|o| o.gateway_id), Some(2));
        // Looked up before a wake, answered after it: not remembered.
        let before = hub.wakes();
        hub.wake(3);
        hub.remember_owner("a", &owner(1), before);
        assert!(hub.owner("a").is_none());
        assert!(hub.owner("unknown").is_none());
    }
}
