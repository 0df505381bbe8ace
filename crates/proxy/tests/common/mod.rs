//! Shared helpers: start an in-process gateway from TOML on port 0.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;

use portico_model::{Format, GatewayFile, Snapshot};
use portico_proxy::Gateway;

/// A gateway running in this test process.
pub struct Gw {
    pub gw: Gateway,
    pub addrs: HashMap<String, SocketAddr>,
}

/// The node settings every test uses: one worker, no access log, internal port on 0.
pub const NODE: &str = r#"
[node]
workers = 1
internal = { address = "127.0.0.1:0" }
access_log = { enabled = false }
"#;

impl Gw {
    /// Starts a gateway from `config` (listeners, services, routes; `[node]` is added).
    pub async fn start(config: &str) -> Self {
        Self::start_with(config, |_| {}).await
    }

    /// [`Gw::start`] with the Snapshot edited first (for what only a control plane sets).
    pub async fn start_with(config: &str, edit: impl FnOnce(&mut Snapshot)) -> Self {
        Self::start_node(NODE, config, edit).await
    }

    /// [`Gw::start`] writing the access log to `path`.
    /// A gateway exporting its spans to `endpoint` (OTLP/HTTP).
    pub async fn start_traced(config: &str, endpoint: &str) -> Self {
        let node = format!("{NODE}\n[node.tracing]\notlp_endpoint = {endpoint:?}\n");
        Self::start_node(&node, config, |_| {}).await
    }

    /// [`Gw::start_traced`] with at most `queue` spans waiting to be sent.
    pub async fn start_traced_queue(config: &str, endpoint: &str, queue: usize) -> Self {
        let node =
            format!("{NODE}\n[node.tracing]\notlp_endpoint = {endpoint:?}\nqueue = {queue}\n");
        Self::start_node(&node, config, |_| {}).await
    }

    pub async fn start_logged(config: &str, path: &std::path::Path) -> Self {
        let node = NODE.replace(
            "access_log = { enabled = false }",
            &format!("access_log = {{ path = {:?} }}", path.display().to_string()),
        );
        Self::start_node(&node, config, |_| {}).await
    }

    async fn start_node(node: &str, config: &str, edit: impl FnOnce(&mut Snapshot)) -> Self {
        let file = GatewayFile::parse(&format!("{node}\n{config}"), Format::Toml)
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n---\n{config}"));
        let (node, mut snapshot) = file.into_parts();
        edit(&mut snapshot);
        let gw = Gateway::start(&node, &snapshot)
            .await
            .expect("gateway starts");
        let addrs = gw
            .listeners()
            .await
            .into_iter()
            .map(|(n, a)| (n, SocketAddr::from(([127, 0, 0, 1], a.port()))))
            .collect();
        Self { gw, addrs }
    }

    /// The address of the listener named `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .addrs
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name}: {:?}", self.addrs))
    }

    /// `http://<listener>/<path>` for the listener named `web`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr("web"), path)
    }

    /// Applies a new config (same `[node]`).
    pub async fn apply(&self, config: &str) -> Result<String, String> {
        let file = GatewayFile::parse(&format!("{NODE}\n{config}"), Format::Toml)
            .map_err(|e| e.to_string())?;
        let (_, snapshot) = file.into_parts();
        self.gw
            .apply(&snapshot)
            .await
            .map(|v| v.to_string())
            .map_err(|e| e.to_string())
    }

    /// The metrics exposition from the internal port.
    pub async fn metrics(&self) -> String {
        let addr = self.gw.internal_addr().expect("internal port");
        portico_testkit::Client::new()
            .get(&format!("http://{addr}/metrics"))
            .await
            .text()
    }
}

/// A listener named `web` on port 0.
pub const WEB: &str = "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1\"\nport = 0\n";

/// A service block.
pub fn service(name: &str, addrs: &[SocketAddr], extra: &str) -> String {
    let eps: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[services]]\nname = \"{name}\"\nendpoints = [{}]\n{extra}\n",
        eps.join(", ")
    )
}
