//! `portico gateway init` and `portico gateway run` for a node linked to a control plane:
//! start from the cached snapshot, pull new ones, serve the admin API on port 2020.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use portico_model::{AdminSettings, ControlPlaneLink, NodeSettings, Snapshot};
use portico_proxy::Gateway;
use portico_proxy::node::{self, AdminKeys, NodeState, SyncSettings};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Options of `portico gateway init`.
#[derive(Debug)]
pub struct InitOptions {
    /// Where to write the node's config.
    pub output: PathBuf,
    /// Control plane URL to put in it.
    pub control_plane: String,
    /// Admin API address.
    pub admin_address: SocketAddr,
    /// Cache directory.
    pub cache_dir: String,
    /// Pinned CA of the control plane.
    pub ca_file: Option<String>,
    /// Serve the admin API over HTTPS with a certificate made here for these hosts.
    pub admin_tls_hosts: Vec<String>,
    /// Overwrite an existing file.
    pub force: bool,
}

/// Generates the gateway's API token and JWT secret and writes the node's config (mode 0600).
pub fn init(opts: &InitOptions) -> anyhow::Result<()> {
    if opts.output.exists() && !opts.force {
        anyhow::bail!(
            "{} exists: it may hold a linked gateway's credentials; pass --force to replace it",
            opts.output.display()
        );
    }
    let token = portico_control::secrets::generate("pgt_");
    let secret = portico_control::secrets::generate("pjs_");
    let node = NodeSettings {
        control_plane: Some(ControlPlaneLink {
            url: opts.control_plane.clone(),
            token: token.clone(),
            cache_dir: opts.cache_dir.clone(),
            heartbeat: portico_model::Duration::from_secs(10),
            ca_file: opts.ca_file.clone(),
            allow_insecure_http: false,
        }),
        admin: Some(AdminSettings {
            address: opts.admin_address,
            jwt_secret: secret.clone(),
            tls_cert_file: None,
            tls_key_file: None,
        }),
        ..NodeSettings::default()
    };
    let mut node = node;
    let mut admin_cert = None;
    if !opts.admin_tls_hosts.is_empty() {
        let (cert, key) = admin_certificate(&opts.output, &opts.admin_tls_hosts)?;
        if let Some(a) = node.admin.as_mut() {
            a.tls_cert_file = Some(cert.display().to_string());
            a.tls_key_file = Some(key.display().to_string());
        }
        admin_cert = Some(cert);
    }
    #[derive(serde::Serialize)]
    struct File<'a> {
        node: &'a NodeSettings,
    }
    let text = format!(
        "# Portico gateway node. Holds this gateway's API token and JWT secret: keep it private.\n{}",
        toml::to_string(&File { node: &node }).context("cannot write the config")?
    );
    if opts.force {
        let _ = std::fs::remove_file(&opts.output);
    }
    portico_control::secrets::write_private(&opts.output, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let port = opts.admin_address.port();
    if let Some(cert) = &admin_cert {
        crate::cli::out!(
            "The admin API serves HTTPS with {} (self-signed): link with --url https://THIS_HOST:{port} --admin-ca {}\n",
            cert.display(),
            cert.display()
        );
    }
    crate::cli::out!(
        "Wrote {out} (mode 0600).\n\nThis gateway's credentials (also in the file):\n    API token:  {token}\n    JWT secret: {secret}\n\nStart it:\n    portico gateway run --config {out}\n\nThen link it from the control plane (name, admin URL, IP and port {port}):\n    portico gateways link NAME --type production --url http://THIS_HOST:{port} --ip THIS_IP \\\n        --api-token {token} --jwt-secret {secret}",
        out = opts.output.display()
    );
    Ok(())
}

/// A self-signed certificate for the admin API, next to the node's config.
fn admin_certificate(config: &Path, hosts: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = config
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stem = config
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("gateway");
    let cert = dir.join(format!("{stem}-admin.pem"));
    let key = dir.join(format!("{stem}-admin.key"));
    let pair = rcgen::KeyPair::generate()?;
    let made = rcgen::CertificateParams::new(hosts.to_vec())?.self_signed(&pair)?;
    std::fs::write(&cert, made.pem())?;
    let _ = std::fs::remove_file(&key);
    portico_control::secrets::write_private(&key, pair.serialize_pem().as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((cert, key))
}

/// Runs a node that pulls its snapshot from a control plane.
pub async fn run(mut node: NodeSettings, poll_wait: Duration) -> anyhow::Result<()> {
    let link = node
        .control_plane
        .take()
        .context("no control plane configured")?;
    if !link.allow_insecure_http && !portico_model::node::secure_enough(&link.url) {
        anyhow::bail!(
            "{} is plain HTTP to another machine: the gateway's token would cross the network in clear. Use https:// (with --ca-file for a private CA), or set allow_insecure_http = true in [node.control_plane] for development",
            link.url
        );
    }
    let ca_pem = match &link.ca_file {
        Some(f) => Some(std::fs::read(f).with_context(|| format!("cannot read the CA file {f}"))?),
        None => None,
    };
    let cache_dir = PathBuf::from(&link.cache_dir);
    // The nodes of one gateway share its token: they may share ports; no other process may.
    node.port_owner = Some(portico_model::PortOwner {
        key: format!(
            "gateway token {} at {}",
            &portico_control::secrets::hash(&link.token)[..16],
            link.url
        ),
        label: format!(
            "a node of another gateway of the control plane at {} (cache {})",
            link.url, link.cache_dir
        ),
    });
    let state = Arc::new(
        NodeState::new(&cache_dir)
            .with_context(|| format!("cannot use the cache directory {}", cache_dir.display()))?,
    );
    let cached = node::load_cache(&cache_dir);
    let empty = Snapshot::default();
    let start_with = match &cached {
        Some(env) => {
            tracing::info!(gateway = %env.gateway, version = env.version, "starting from the cached snapshot");
            env.snapshot()
        }
        None => {
            tracing::info!("no cached snapshot: serving nothing until the control plane answers");
            &empty
        }
    };
    let app_files = portico_proxy::apps::AppFiles::new(cache_dir.join("files"));
    let gateway = Arc::new(start_gateway(&node, start_with, &cache_dir, &app_files).await?);
    if let Some(env) = cached {
        node::started_from_cache(&state, env);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_task = match &node.admin {
        Some(admin) => {
            let listener = node::bind_admin(admin.address)
                .await
                .with_context(|| format!("cannot listen on {} for the admin API", admin.address))?;
            tracing::info!(addr = %listener.local_addr()?, "admin API ready");
            let keys = AdminKeys {
                jwt_secret: admin.jwt_secret.clone(),
                token_hash: node::token_hash(&link.token),
            };
            let tls = match (&admin.tls_cert_file, &admin.tls_key_file) {
                (Some(cert), Some(key)) => Some(
                    portico_proxy::tls::TlsRuntime::http1(&portico_model::ListenerTls {
                        certificates: vec![portico_model::TlsCertificate {
                            cert_file: Some(cert.clone()),
                            key_file: Some(key.clone()),
                            ..Default::default()
                        }],
                        client_ca_file: None,
                        client_cert_required: false,
                        acme: false,
                    })
                    .map_err(|e| anyhow::anyhow!("admin API TLS: {e}"))?,
                ),
                _ => None,
            };
            Some(tokio::spawn(node::serve_admin(
                listener,
                keys,
                state.clone(),
                tls,
                stop_rx.clone(),
            )))
        }
        None => {
            tracing::warn!(
                "no [node.admin] settings: the control plane cannot link or resync this node"
            );
            None
        }
    };
    let settings = SyncSettings {
        url: link.url.clone(),
        token: link.token.clone(),
        cache_dir,
        heartbeat: link.heartbeat.get(),
        poll_wait,
        ca_pem,
        app_files: Some(app_files),
    };
    tracing::info!(control_plane = %link.url, node_id = %state.node_id, "syncing");
    let sync_task = tokio::spawn(node::run_sync(gateway.clone(), settings, state, stop_rx));
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = stop_tx.send(true);
    tracing::info!("shutting down: draining in-flight requests");
    gateway.shutdown().await;
    let _ = sync_task.await;
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn start_gateway(
    node: &NodeSettings,
    snapshot: &Snapshot,
    cache: &Path,
    files: &Arc<portico_proxy::apps::AppFiles>,
) -> anyhow::Result<Gateway> {
    match Gateway::start_with(node, snapshot, Some(files.clone())).await {
        Ok(g) => Ok(g),
        Err(e) if *snapshot != Snapshot::default() => {
            tracing::error!(error = %e, cache = %cache.display(), "the cached snapshot does not start; starting empty");
            Gateway::start_with(node, &Snapshot::default(), Some(files.clone()))
                .await
                .context("cannot start the gateway")
        }
        Err(e) => Err(e).context("cannot start the gateway"),
    }
}
