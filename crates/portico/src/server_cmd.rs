//! `portico server`: the control plane, and the built-in gateway `default` served by the same
//! process from the snapshots the control plane compiles for it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use portico_control::{Config, DEFAULT_GATEWAY};
use portico_model::{NodeReport, NodeSettings, SyncEnvelope};
use portico_proxy::Gateway;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Settings of `portico server`.
#[derive(Debug)]
pub struct ServerOptions {
    /// Data directory.
    pub data_dir: PathBuf,
    /// PostgreSQL URL; SQLite in the data directory when unset.
    pub database: Option<String>,
    /// The secret key's file; `<data_dir>/secret.key` when unset.
    pub secret_key_file: Option<PathBuf>,
    /// Run no node of the built-in gateway `default` in this process.
    pub no_builtin_gateway: bool,
    /// The public side's own listener.
    pub public_listen: Option<std::net::SocketAddr>,
    /// Admin API address.
    pub listen: SocketAddr,
    /// Port of the built-in gateway (first start).
    pub gateway_port: u16,
    /// Internal health/metrics address of the built-in gateway.
    pub internal: SocketAddr,
    /// Revisions kept per API.
    pub max_revisions: u32,
    /// Worker threads of the built-in gateway.
    pub workers: Option<usize>,
    /// A node silent this long is offline.
    pub node_offline_after: Duration,
    /// Nodes per gateway, and when a silent one is forgotten.
    pub node_limits: portico_control::NodeLimits,
    /// Who may sign up in the developer portal.
    pub portal_signup: portico_control::Signup,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// Redis for shared rate limits.
    pub rate_limit_redis: Option<String>,
    /// How long in-flight requests of the built-in gateway may run after SIGTERM.
    pub drain_timeout: portico_model::Duration,
    /// The built-in gateway's access log.
    pub access_log: portico_model::AccessLog,
    /// HTTPS certificate chain and key for the admin API and sync.
    pub tls: Option<portico_control::admin_tls::AdminTls>,
    /// Automatic certificates.
    pub acme: Option<portico_control::acme::AcmeConfig>,
    /// The developer portal's origin (default: the admin API's).
    pub portal_origin: Option<String>,
    /// Traces: the control plane's and the built-in gateway's.
    pub tracing: portico_model::node::Tracing,
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(opts: ServerOptions) -> anyhow::Result<()> {
    if let Some((field, e)) = opts.tracing.problems().into_iter().next() {
        let flag = match field {
            "sampler" => "--trace-sampler",
            "ratio" => "--trace-ratio",
            _ => "--otlp-endpoint",
        };
        anyhow::bail!("{flag}: {e}");
    }
    let tracing = match &opts.tracing.otlp_endpoint {
        Some(endpoint) => {
            let mut cfg = portico_otlp::ExportConfig::new(endpoint, "portico-control-plane");
            cfg.queue = opts.tracing.queue;
            Some(portico_control::trace::Tracing {
                exporter: portico_otlp::Exporter::start(cfg)?,
                sampler: portico_otlp::context::Sampler::named(
                    &opts.tracing.sampler,
                    opts.tracing.ratio,
                ),
            })
        }
        None => None,
    };
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let mut stop_api = stop_rx.clone();
    let config = Config {
        data_dir: opts.data_dir.clone(),
        database: opts.database.clone(),
        secret_key_file: opts.secret_key_file.clone(),
        public_listen: opts.public_listen,
        listen: opts.listen,
        default_gateway_port: opts.gateway_port,
        max_revisions: opts.max_revisions,
        node_offline_after: opts.node_offline_after,
        node_limits: opts.node_limits,
        portal_signup: opts.portal_signup,
        session_idle: opts.session_idle,
        tls: opts.tls.clone(),
        acme: opts.acme.is_some(),
        portal_origin: opts.portal_origin.clone(),
        tracing,
        ..Config::default()
    };
    let running = portico_control::start(config, async move {
        let _ = stop_api.wait_for(|s| *s).await;
    })
    .await
    .context("cannot start the control plane")?;
    let url = format!(
        "{}://{}",
        if opts.tls.is_some() { "https" } else { "http" },
        running.addr
    );
    if let Some(token) = &running.first_admin_token {
        // Standard output, not the log: shown once, never logged.
        println!(
            "\nPortico control plane, first start. The admin token (shown once, stored hashed):\n\n    {token}\n\nUse it:\n    portico login --url {url} --token {token}\n    curl -H 'Authorization: Bearer {token}' {url}/api/v1/status\n"
        );
    }
    if let Some(public) = running.public_addr {
        tracing::info!(%public, "public side (token service, gateway sync, developer portal) listening");
    }
    tracing::info!(
        %url,
        data_dir = %opts.data_dir.display(),
        portal_origin = %running.state.config.portal_origin.as_deref().unwrap_or(""),
        "control plane ready"
    );

    let st = running.state.clone();
    let acme = opts
        .acme
        .clone()
        .map(|cfg| portico_control::acme::spawn(st.clone(), cfg, stop_rx.clone()));
    if opts.no_builtin_gateway {
        // Only the control plane: the built-in gateway `default` is served by other
        // control-plane nodes (or by none).
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = stop_rx.changed() => {}
        }
        tracing::info!("shutting down: the admin API stops");
        let _ = stop_tx.send(true);
        if let Some(task) = acme {
            let _ = task.await;
        }
        let _ = running.task.await;
        return Ok(());
    }
    let gid = st.store.gateway_id(DEFAULT_GATEWAY).await?;
    let env = current(&st, gid).await?;
    local_files(&st, &env).await;
    let mut node = NodeSettings {
        workers: opts.workers,
        rate_limit_redis: opts.rate_limit_redis.clone(),
        access_log: opts.access_log.clone(),
        drain_timeout: opts.drain_timeout,
        tracing: opts.tracing.clone(),
        ..NodeSettings::default()
    };
    node.internal.address = opts.internal;
    let data_dir = std::fs::canonicalize(&opts.data_dir).unwrap_or_else(|_| opts.data_dir.clone());
    node.port_owner = Some(portico_model::PortOwner {
        key: format!("built-in gateway of {}", data_dir.display()),
        label: format!(
            "the built-in gateway `default` of the control plane in {}",
            data_dir.display()
        ),
    });
    let gateway = Arc::new(
        Gateway::start_with(
            &node,
            &env.snapshot,
            // The control plane's own file store: every version's files are there.
            Some(portico_proxy::apps::AppFiles::new(st.blobs.dir())),
        )
        .await
        .context("cannot start the built-in gateway `default`")?,
    );
    for (name, addr) in gateway.listeners().await {
        tracing::info!(gateway = DEFAULT_GATEWAY, listener = %name, %addr, "listener ready");
    }
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    // Each control-plane node of one database runs a node of `default`: each its own id.
    let builtin_id = if opts.database.is_some() {
        let digest = <sha2::Sha256 as sha2::Digest>::digest(
            format!("{hostname} {}", data_dir.display()).as_bytes(),
        );
        let short: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        format!("{}-{short}", portico_control::api::BUILTIN_NODE)
    } else {
        portico_control::api::BUILTIN_NODE.to_owned()
    };
    let mut applied = env;
    // The last apply's error and its time, reported until an apply succeeds.
    let mut last_error: Option<(String, u64)> = None;
    report(&st, &gateway, &builtin_id, gid, &hostname, &applied, None).await;

    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut versions = st.hub.subscribe(gid, applied.version);
    // Report well within the offline threshold (every 10 s with the default 30 s).
    let mut heartbeat =
        tokio::time::interval((opts.node_offline_after / 3).min(Duration::from_secs(10)));
    loop {
        tokio::select! {
            r = versions.changed() => {
                if r.is_err() { break; }
                match current(&st, gid).await {
                    Ok(env) if env.version != applied.version => {
                        // The deploy that made it, when traced: this apply is its child
                        // (looked up only when this gateway sends spans).
                        let deploy = match gateway.tracer() {
                            Some(_) => st.store.snapshot_trace(gid, env.version).await.ok().flatten(),
                            None => None,
                        };
                        let span = portico_proxy::node::ApplySpan::begin(
                            &gateway,
                            deploy.as_deref().map(str::as_bytes),
                            false,
                        );
                        local_files(&st, &env).await;
                        let outcome = gateway.apply(&env.snapshot).await;
                        if let Some(s) = span {
                            s.end(portico_proxy::node::ApplyDone {
                                node: builtin_id.clone(),
                                hostname: hostname.clone(),
                                gateway: Some(DEFAULT_GATEWAY.to_owned()),
                                version: Some(if outcome.is_ok() { env.version } else { applied.version }),
                                error: outcome.as_ref().err().map(ToString::to_string),
                            });
                        }
                        match outcome {
                            Ok(_) => {
                                tracing::info!(gateway = DEFAULT_GATEWAY, version = env.version, "snapshot applied");
                                applied = env;
                                last_error = None;
                                report(&st, &gateway, &builtin_id, gid, &hostname, &applied, None).await;
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "the built-in gateway refused its snapshot");
                                last_error = Some((e.to_string(), now_secs()));
                                report(&st, &gateway, &builtin_id, gid, &hostname, &applied, last_error.clone()).await;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "cannot load the built-in gateway's snapshot"),
                }
            }
            _ = heartbeat.tick() => report(&st, &gateway, &builtin_id, gid, &hostname, &applied, last_error.clone()).await,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = stop_rx.changed() => break,
        }
    }
    tracing::info!(drain_timeout = ?opts.drain_timeout.get(), "shutting down: the admin API stops, the built-in gateway drains its in-flight requests");
    let _ = stop_tx.send(true);
    gateway.shutdown().await;
    if let Some(task) = acme {
        let _ = task.await;
    }
    let _ = running.task.await;
    Ok(())
}

/// Puts the files of the apps in a snapshot on this node's disk (with PostgreSQL, another
/// control-plane node may have taken their upload); a file that cannot be had is logged
/// and the snapshot's apply says what is missing.
async fn local_files(st: &portico_control::ControlPlane, env: &SyncEnvelope) {
    for bundle in &env.snapshot.apps {
        for f in bundle.files.values() {
            match st.local_blob(&f.hash).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(app = %bundle.slug, hash = %f.hash, "an app file is in no store")
                }
                Err(e) => {
                    tracing::warn!(app = %bundle.slug, hash = %f.hash, error = %e, "cannot fetch an app file")
                }
            }
        }
    }
}

async fn current(st: &portico_control::ControlPlane, gid: i64) -> anyhow::Result<SyncEnvelope> {
    let snap = st
        .store
        .snapshot(gid)
        .await?
        .context("the built-in gateway has no snapshot")?;
    Ok(serde_json::from_str(&snap.body)?)
}

async fn report(
    st: &portico_control::ControlPlane,
    gateway: &Gateway,
    node_id: &str,
    gid: i64,
    hostname: &str,
    env: &SyncEnvelope,
    error: Option<(String, u64)>,
) {
    let r = NodeReport {
        node_id: node_id.to_owned(),
        hostname: hostname.to_owned(),
        applied_version: Some(env.version),
        applied_hash: Some(env.hash.clone()),
        last_error_at: error.as_ref().map(|(_, t)| *t),
        last_error: error.map(|(e, _)| e),
        node_key: None,
        unhealthy_endpoints: gateway.unhealthy_endpoints(),
    };
    if let Err(e) = st
        .store
        .report_node(gid, &r, None, st.config.node_limits)
        .await
    {
        tracing::warn!(error = %e, "cannot record the built-in node's state");
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
