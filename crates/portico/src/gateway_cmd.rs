//! `portico gateway run` and `portico gateway check`: a gateway from a config file, with
//! reload on SIGHUP or file change and a graceful drain on SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use portico_model::{Format, GatewayFile, NodeSettings};
use portico_proxy::Gateway;
use tokio::signal::unix::{SignalKind, signal};

/// Reads and validates a config file; prints every problem.
fn load(path: &Path) -> Result<GatewayFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    GatewayFile::parse(&text, Format::from_path(&path.to_string_lossy())).map_err(|e| {
        e.field_errors()
            .iter()
            .map(|f| format!("{}: {f}", path.display()))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Reads and validates a config file for `gateway run`.
pub fn load_file(path: &Path) -> anyhow::Result<GatewayFile> {
    load(path).map_err(|e| anyhow::anyhow!("the config is invalid:\n{e}"))
}

/// `portico gateway check`.
pub fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok(file) => {
            let (_, snapshot) = file.into_parts();
            crate::cli::out!(
                "{}: ok: {} listeners, {} services, {} routes (version {})",
                path.display(),
                snapshot.listeners.len(),
                snapshot.services.len(),
                snapshot.routes.len(),
                snapshot.short_version()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// Command-line settings that win over the file's `[node]`.
#[derive(Debug, Default)]
pub struct Overrides {
    /// `--workers`.
    pub workers: Option<usize>,
    /// `--internal`.
    pub internal: Option<std::net::SocketAddr>,
    /// `--rate-limit-redis`.
    pub rate_limit_redis: Option<String>,
}

/// `portico gateway run` with a file and no control plane.
pub async fn run(path: &Path, overrides: Overrides) -> anyhow::Result<()> {
    let file = load(path).map_err(|e| anyhow::anyhow!("the config is invalid:\n{e}"))?;
    let (mut node, snapshot) = file.into_parts();
    // What the file says, to tell at reload whether `[node]` changed in it.
    let from_file = node.clone();
    if overrides.workers.is_some() {
        node.workers = overrides.workers;
    }
    if let Some(addr) = overrides.internal {
        node.internal.address = addr;
        node.internal.enabled = true;
    }
    if let Some(url) = overrides.rate_limit_redis {
        node.rate_limit_redis = Some(url);
    }
    // Processes run from the same file are one gateway: they may share ports.
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    node.port_owner = Some(portico_model::PortOwner {
        key: format!("file {}", canonical.display()),
        label: format!("the gateway run from {}", canonical.display()),
    });
    let gateway = std::sync::Arc::new(
        Gateway::start(&node, &snapshot)
            .await
            .context("cannot start the gateway")?,
    );
    // Automatic certificates: the ACME client with its state on this node.
    let acme = match &node.acme {
        Some(settings) => {
            let local =
                crate::acme_local::LocalAcme::open(settings, gateway.clone(), snapshot.clone())
                    .await
                    .context("cannot start automatic certificates")?;
            let config = portico_control::acme::AcmeConfig::from_settings(settings);
            let client = local.clone();
            let task = tokio::spawn(async move {
                portico_control::acme::run(&*client, &config).await;
            });
            Some((local, task))
        }
        None => None,
    };
    for (name, addr) in gateway.listeners().await {
        tracing::info!(listener = %name, %addr, "listener ready");
    }
    if let Some(addr) = gateway.internal_addr() {
        tracing::info!(%addr, "internal port ready: /healthz /readyz /metrics");
    }
    tracing::info!(version = %gateway.version().unwrap_or_default(), "gateway running");

    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut seen = stamp(path);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                seen = stamp(path);
                reload(&gateway, path, &from_file, acme.as_ref().map(|(a, _)| a)).await;
            }
            _ = tick.tick(), if node.watch => {
                let now = stamp(path);
                if now != seen {
                    seen = now;
                    tracing::info!(file = %path.display(), "config file changed: reloading");
                    reload(&gateway, path, &from_file, acme.as_ref().map(|(a, _)| a)).await;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    if let Some((_, task)) = &acme {
        task.abort();
    }
    tracing::info!(drain_timeout = ?node.drain_timeout.get(), "shutting down: draining in-flight requests");
    gateway.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn reload(
    gateway: &Gateway,
    path: &Path,
    running: &NodeSettings,
    acme: Option<&std::sync::Arc<crate::acme_local::LocalAcme>>,
) {
    let file = match load(path) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("reload refused, the running config keeps serving:\n{e}");
            gateway.metrics().reload(false);
            return;
        }
    };
    let (node, snapshot) = file.into_parts();
    if node != *running {
        tracing::warn!(
            "[node] settings changed; they apply at the next restart (routes, services and listeners apply now)"
        );
    }
    let applied = match acme {
        Some(a) => a.set_base(snapshot).await.map_err(|e| e.to_string()),
        None => gateway.apply(&snapshot).await.map_err(|e| e.to_string()),
    };
    match applied {
        Ok(version) => tracing::info!(%version, "config applied"),
        Err(e) => tracing::error!(error = %e, "reload refused, the running config keeps serving"),
    }
}

/// What identifies a version of the file: its content (config files are small, and
/// modification times can repeat within a second).
fn stamp(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}
