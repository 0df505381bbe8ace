//! A running gateway node: worker threads, listeners reconciled by diff on every Snapshot,
//! the internal health and metrics port, and graceful shutdown.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use portico_model::{NodeSettings, Snapshot};
use tokio::sync::oneshot;

use crate::Error;
use crate::access_log::AccessLog;
use crate::internal;
use crate::listener::{self, Shared};
use crate::metrics::Metrics;
use crate::runtime::{self, Runtime};
use crate::upstream::{StateRegistry, pool};

/// A running gateway node.
#[derive(Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
}

/// Health as the internal port reports it.
#[derive(Debug, Default)]
pub struct Health {
    /// A Snapshot is applied and listeners are bound.
    pub ready: AtomicBool,
    /// Shutting down: not ready any more.
    pub draining: AtomicBool,
    /// Version of the applied Snapshot.
    pub version: Mutex<Option<Arc<str>>>,
}

#[derive(Debug)]
struct Inner {
    workers: Mutex<Vec<Worker>>,
    handles: Vec<tokio::runtime::Handle>,
    cx: runtime::Context,
    active: tokio::sync::Mutex<Vec<Active>>,
    health: Arc<Health>,
    drain_timeout: Duration,
    internal: Option<(SocketAddr, oneshot::Sender<()>)>,
    /// Fetches OCSP responses for the served certificates.
    stapling: tokio::task::JoinHandle<()>,
    /// Who this process's ports belong to.
    port_owner: portico_model::PortOwner,
}

#[derive(Debug)]
struct Worker {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Active {
    key: Key,
    name: Arc<str>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// This process's claim on the port (none for port 0), released with the listener.
    _claim: Option<crate::portlock::Claim>,
}

/// Listeners are matched across Snapshots by address, or by name for port 0.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Addr(SocketAddr),
    Name(Arc<str>),
}

impl Gateway {
    /// Starts worker threads, applies `snapshot` and opens the internal port. Call from
    /// within a tokio runtime (it runs background tasks such as DNS refresh).
    pub async fn start(settings: &NodeSettings, snapshot: &Snapshot) -> Result<Self, Error> {
        Self::start_with(settings, snapshot, None).await
    }

    /// [`Gateway::start`] for a node that serves hosted apps from the files in `app_files`.
    pub async fn start_with(
        settings: &NodeSettings,
        snapshot: &Snapshot,
        app_files: Option<Arc<crate::apps::AppFiles>>,
    ) -> Result<Self, Error> {
        let n = settings
            .workers
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1);
        let metrics = Metrics::new();
        let access_log = if settings.access_log.enabled {
            Some(
                AccessLog::start(
                    &settings.access_log.path,
                    metrics.access_log_dropped.clone(),
                )
                .map_err(Error::Runtime)?,
            )
        } else {
            None
        };
        let tracer = match &settings.tracing.otlp_endpoint {
            Some(endpoint) => {
                let mut config =
                    portico_otlp::ExportConfig::new(endpoint, &settings.tracing.service_name);
                config.queue = settings.tracing.queue;
                let dropped = metrics.trace_spans_dropped.clone();
                Some(
                    portico_otlp::Exporter::start_counted(
                        config,
                        Some(Box::new(move |n| {
                            dropped.inc_by(n);
                        })),
                    )
                    .map_err(|e| Error::Runtime(std::io::Error::other(e)))?,
                )
            }
            None => None,
        };
        let shared = match &settings.rate_limit_redis {
            Some(url) => Some(
                crate::throttle::SharedLimits::start(
                    url,
                    metrics.ratelimit_redis_fallbacks.clone(),
                )
                .map_err(|e| Error::Runtime(std::io::Error::other(e)))?,
            ),
            None => None,
        };
        let mut workers = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let (w, h) = start_worker(i)?;
            workers.push(w);
            handles.push(h);
        }
        let health = Arc::new(Health::default());
        // Bound now, served once the snapshot applies: a start that fails closes the
        // socket at once, so a retry (with an empty snapshot) can bind it again.
        let (internal, internal_serve) = if settings.internal.enabled {
            let addr = settings.internal.address;
            let std = listener::bind(addr, false).map_err(|error| Error::Bind { addr, error })?;
            let local = std.local_addr().map_err(Error::Runtime)?;
            let (tx, rx) = oneshot::channel();
            (Some((local, tx)), Some((std, rx)))
        } else {
            (None, None)
        };
        let stapler = Arc::new(crate::ocsp::Stapler::default());
        let stapling = tokio::spawn(stapler.clone().run());
        let gw = Gateway {
            inner: Arc::new(Inner {
                stapling,
                workers: Mutex::new(workers),
                handles,
                cx: runtime::Context {
                    metrics,
                    registry: Arc::new(StateRegistry::default()),
                    access_log,
                    limiters: Arc::new(crate::throttle::Limiters::default()),
                    shared,
                    stapler: stapler.clone(),
                    app_files,
                    sampler: crate::trace::Sampler::named(
                        &settings.tracing.sampler,
                        settings.tracing.ratio,
                    ),
                    tracer,
                },
                active: tokio::sync::Mutex::new(Vec::new()),
                health,
                drain_timeout: settings.drain_timeout.get(),
                internal,
                port_owner: settings.port_owner.clone().unwrap_or_else(|| {
                    let pid = std::process::id();
                    portico_model::PortOwner {
                        key: format!("pid {pid}"),
                        label: format!("process {pid}"),
                    }
                }),
            }),
        };
        if let Err(e) = gw.apply(snapshot).await {
            gw.shutdown().await;
            return Err(e);
        }
        if let Some((std, rx)) = internal_serve {
            tokio::spawn(internal::serve(
                std,
                gw.inner.cx.metrics.clone(),
                gw.inner.health.clone(),
                rx,
            ));
        }
        gw.inner.health.ready.store(true, Ordering::Release);
        Ok(gw)
    }

    /// Validates, compiles and applies a Snapshot: new listeners are bound, unchanged ones
    /// keep their sockets and get the new routes, removed ones drain. On any error nothing
    /// changes. Returns the applied version.
    pub async fn apply(&self, snapshot: &Snapshot) -> Result<Arc<str>, Error> {
        self.apply_as(snapshot, &snapshot.short_version()).await
    }

    /// [`Gateway::apply`], with the version label known (a node has the digest already:
    /// computing it again would hash every entity).
    pub async fn apply_as(&self, snapshot: &Snapshot, version: &str) -> Result<Arc<str>, Error> {
        let inner = &self.inner;
        if inner.health.draining.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let rt = match Runtime::compile(snapshot, version, &inner.cx).await {
            Ok(rt) => rt,
            Err(e) => {
                inner.cx.metrics.reload(false);
                return Err(e);
            }
        };
        self.commit(rt).await
    }

    /// Applies `snapshot` after a change that touched only what `touched` says: only that
    /// is compiled again ([`Runtime::update`]), or everything when the change needs it.
    /// On any error nothing changes.
    pub async fn apply_update(
        &self,
        snapshot: &Snapshot,
        touched: &portico_model::delta::Touched,
        version: &str,
    ) -> Result<Arc<str>, Error> {
        let inner = &self.inner;
        if inner.health.draining.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let prev: HashMap<Arc<str>, Arc<crate::runtime::ListenerRuntime>> = {
            let active = inner.active.lock().await;
            active
                .iter()
                .map(|a| (a.name.clone(), a.shared.state.load_full()))
                .collect()
        };
        match Runtime::update(&prev, snapshot, touched, version, &inner.cx) {
            Ok(Some(rt)) => self.commit(rt).await,
            Ok(None) => self.apply_as(snapshot, version).await,
            Err(e) => {
                inner.cx.metrics.reload(false);
                Err(e)
            }
        }
    }

    /// Swaps `rt` in: new listeners are bound first (a bind failure changes nothing),
    /// unchanged ones get the new routes, removed ones drain.
    async fn commit(&self, rt: Runtime) -> Result<Arc<str>, Error> {
        let inner = &self.inner;
        let mut active = inner.active.lock().await;
        // Plan: bind everything new first, so a bind failure changes nothing.
        let mut kept = Vec::new();
        let mut fresh = Vec::new();
        for cl in rt.listeners {
            let key = if cl.spec.addr.port() == 0 {
                Key::Name(cl.spec.name.clone())
            } else {
                Key::Addr(cl.spec.addr)
            };
            match active.iter().position(|a| a.key == key) {
                Some(i) => kept.push((i, cl)),
                None => {
                    let sockets = match self.bind_all(cl.spec.addr) {
                        Ok(s) => s,
                        Err(e) => {
                            inner.cx.metrics.reload(false);
                            return Err(e);
                        }
                    };
                    fresh.push((key, cl, sockets));
                }
            }
        }
        // Commit.
        let kept_idx: HashSet<usize> = kept.iter().map(|(i, _)| *i).collect();
        for (i, cl) in kept {
            active[i].name = cl.spec.name.clone();
            active[i].shared.state.store(cl.runtime);
        }
        let mut next = Vec::new();
        for (i, a) in active.drain(..).enumerate() {
            if kept_idx.contains(&i) {
                next.push(a);
            } else {
                tracing::info!(listener = %a.name, addr = %a.addr, "listener removed; draining its connections");
                a.shared.stop.send_replace(true);
            }
        }
        for (key, cl, (addr, sockets, claim)) in fresh {
            let shared = Shared::new(cl.runtime, addr.port());
            for (socket, handle) in sockets.into_iter().zip(&inner.handles) {
                handle.spawn(listener::accept_loop(socket, shared.clone()));
            }
            tracing::info!(listener = %cl.spec.name, %addr, protocol = cl.spec.protocol.as_str(), "listening");
            next.push(Active {
                key,
                name: cl.spec.name.clone(),
                addr,
                shared,
                _claim: claim,
            });
        }
        *active = next;
        inner.cx.metrics.reload(true);
        *inner
            .health
            .version
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(rt.version.clone());
        Ok(rt.version)
    }

    /// Claims the port for this gateway, then binds one socket per worker (sharing the
    /// port with SO_REUSEPORT when there are several).
    #[allow(clippy::type_complexity)] // one caller, which takes the three apart
    fn bind_all(
        &self,
        addr: SocketAddr,
    ) -> Result<
        (
            SocketAddr,
            Vec<std::net::TcpListener>,
            Option<crate::portlock::Claim>,
        ),
        Error,
    > {
        let owner = &self.inner.port_owner;
        let claim = if addr.port() == 0 {
            None
        } else {
            match crate::portlock::claim(addr, owner) {
                Ok(c) => Some(c),
                Err(crate::portlock::ClaimError::Held(holder)) => {
                    return Err(Error::PortHeld {
                        addr,
                        holder,
                        ours: owner.label.clone(),
                    });
                }
                Err(crate::portlock::ClaimError::Io(e)) => {
                    // Without a runtime directory the check cannot run; binding goes on.
                    tracing::warn!(error = %e, %addr, "cannot check which gateway holds this port");
                    None
                }
            }
        };
        let n = self.inner.handles.len();
        let first = listener::bind(addr, n > 1).map_err(|error| Error::Bind { addr, error })?;
        let local = first
            .local_addr()
            .map_err(|error| Error::Bind { addr, error })?;
        let mut out = vec![first];
        for _ in 1..n {
            out.push(
                listener::bind(local, true).map_err(|error| Error::Bind { addr: local, error })?,
            );
        }
        Ok((local, out, claim))
    }

    /// Bound listener addresses by listener name.
    pub async fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.inner
            .active
            .lock()
            .await
            .iter()
            .map(|a| (a.name.to_string(), a.addr))
            .collect()
    }

    /// The address of the internal health and metrics port, when it is on.
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.inner.internal.as_ref().map(|(a, _)| *a)
    }

    /// Every endpoint active health checks watch, with its health.
    pub fn endpoint_health(&self) -> Vec<crate::upstream::EndpointHealth> {
        self.inner.cx.registry.health()
    }

    /// The endpoints active health checks hold out of balancing, for reports.
    pub fn unhealthy_endpoints(&self) -> Vec<portico_model::UnhealthyEndpoint> {
        unhealthy(&self.inner.cx.registry)
    }

    /// Where its spans go, when it traces.
    pub fn tracer(&self) -> Option<&Arc<portico_otlp::Exporter>> {
        self.inner.cx.tracer.as_ref()
    }

    /// The state kept across Snapshots (endpoint health, budgets, pool limits).
    pub fn registry(&self) -> &Arc<crate::upstream::StateRegistry> {
        &self.inner.cx.registry
    }

    /// The metric families.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.cx.metrics
    }

    /// The version of the applied Snapshot.
    pub fn version(&self) -> Option<Arc<str>> {
        self.inner
            .health
            .version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops accepting, lets in-flight requests finish up to the drain timeout, then stops
    /// the workers.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stapling.abort();
        inner.health.draining.store(true, Ordering::Release);
        inner.health.ready.store(false, Ordering::Release);
        let active: Vec<Active> = std::mem::take(&mut *inner.active.lock().await);
        for a in &active {
            a.shared.stop.send_replace(true);
        }
        let drained = futures_util::future::join_all(active.iter().map(|a| a.shared.drained()));
        if tokio::time::timeout(inner.drain_timeout, drained)
            .await
            .is_err()
        {
            let open: usize = active
                .iter()
                .map(|a| a.shared.open.load(Ordering::Relaxed))
                .sum();
            tracing::warn!(
                open,
                "drain timeout passed; closing the remaining connections"
            );
        }
        let workers: Vec<Worker> =
            std::mem::take(&mut *inner.workers.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for mut w in workers {
                if let Some(s) = w.stop.take() {
                    let _ = s.send(());
                }
                if let Some(t) = w.thread.take() {
                    let _ = t.join();
                }
            }
        })
        .await;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some((_, tx)) = self.internal.take() {
            let _ = tx.send(());
        }
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        for mut w in workers {
            if let Some(s) = w.stop.take() {
                let _ = s.send(());
            }
        }
    }
}

fn start_worker(i: usize) -> Result<(Worker, tokio::runtime::Handle), Error> {
    let (htx, hrx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("portico-worker-{i}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = htx.send(Err(e));
                    return;
                }
            };
            let _ = htx.send(Ok(rt.handle().clone()));
            rt.block_on(async move {
                let sweeper = tokio::spawn(async {
                    loop {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        pool::sweep();
                    }
                });
                let _ = stop_rx.await;
                sweeper.abort();
                pool::clear();
            });
        })
        .map_err(Error::Runtime)?;
    let handle = hrx
        .recv()
        .map_err(|_| Error::Runtime(std::io::Error::other("worker thread exited early")))?
        .map_err(Error::Runtime)?;
    Ok((
        Worker {
            stop: Some(stop_tx),
            thread: Some(thread),
        },
        handle,
    ))
}

/// The endpoints `registry`'s health checks hold out, at most as many as a report lists.
pub fn unhealthy(
    registry: &crate::upstream::StateRegistry,
) -> Vec<portico_model::UnhealthyEndpoint> {
    registry
        .health()
        .into_iter()
        .filter(|h| !h.healthy)
        .take(portico_model::MAX_REPORTED_ENDPOINTS)
        .map(|h| portico_model::UnhealthyEndpoint {
            service: h.service,
            endpoint: h.endpoint,
        })
        .collect()
}
