//! Settings of one gateway process (a node), apart from what it serves.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::defaults;
use crate::units::Duration;

/// Process settings of a node. Changing them needs a restart; the Snapshot reloads live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// Worker threads, each with its own event loop; one per CPU when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// The internal port serving `/healthz`, `/readyz` and `/metrics`.
    #[serde(default)]
    pub internal: Internal,
    /// Structured access log.
    #[serde(default)]
    pub access_log: AccessLog,
    /// How long in-flight requests may run after SIGTERM before the process exits.
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: Duration,
    /// Reload when the config file changes (SIGHUP always reloads).
    #[serde(default = "defaults::yes")]
    pub watch: bool,
    /// Pull the snapshot from a control plane instead of serving the file's routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlaneLink>,
    /// The node's admin API (port 2020), for the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminSettings>,
    /// Share rate limits with the other nodes through this Redis (`redis://host:6379`);
    /// each node counts alone when unset or when Redis does not answer in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_redis: Option<String>,
    /// Automatic certificates for a gateway run from a file (`acme = true` listeners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<NodeAcme>,
    /// W3C trace context and span export.
    #[serde(default, skip_serializing_if = "Tracing::is_default")]
    pub tracing: Tracing,
    /// Who this node's ports belong to (set by the process, never read from a file):
    /// another gateway's process on the same machine cannot share them.
    #[serde(skip)]
    pub port_owner: Option<PortOwner>,
}

/// Who holds a node's listening ports. Processes with the same key share them (the nodes
/// of one gateway); any other is refused a port already held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortOwner {
    /// What must match to share a port.
    pub key: String,
    /// How the holder is named in errors.
    pub label: String,
}

/// How a standalone gateway gets certificates from an ACME CA.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAcme {
    /// The CA's directory URL, or `letsencrypt` / `letsencrypt-staging`.
    pub directory: String,
    /// Contact e-mail addresses for the account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email: Vec<String>,
    /// PEM CA bundle to trust for the directory's HTTPS (a private or test CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// `http-01` (port 80) or `tls-alpn-01` (port 443).
    #[serde(default = "http01")]
    pub challenge: String,
    /// Host names to get certificates for; the exact names routes match on when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Where the account, the certificates and their keys are kept (owner-only files).
    #[serde(default = "acme_dir")]
    pub state_dir: String,
    /// External Account Binding key id, for CAs that need one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eab_kid: Option<String>,
    /// External Account Binding HMAC key (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eab_hmac_key: Option<String>,
}

impl std::fmt::Debug for NodeAcme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAcme")
            .field("directory", &self.directory)
            .field("challenge", &self.challenge)
            .field("hosts", &self.hosts)
            .field("state_dir", &self.state_dir)
            .field("eab_kid", &self.eab_kid)
            .field(
                "eab_hmac_key",
                &self.eab_hmac_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

fn http01() -> String {
    "http-01".into()
}

fn acme_dir() -> String {
    "portico-acme".into()
}

/// How a node reaches its control plane.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneLink {
    /// Base URL of the control plane, e.g. `https://portico.example.com:9400`.
    pub url: String,
    /// The gateway's API token.
    pub token: String,
    /// Where the last applied snapshot and the node id are kept.
    #[serde(default = "cache_dir")]
    pub cache_dir: String,
    /// How often the node reports its state when nothing changes.
    #[serde(default = "heartbeat")]
    pub heartbeat: Duration,
    /// PEM file of the CA that signed the control plane's HTTPS certificate (pinned),
    /// besides the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Allow `http://` to a control plane that is not on this machine (the token would
    /// cross the network in clear: for development only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_http: bool,
}

/// Whether a URL may carry secrets: HTTPS, or plain HTTP to this machine.
pub fn secure_enough(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = if authority.starts_with('[') {
        authority.split(']').next().map(|h| &h[1..]).unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The node's admin API.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Address to bind.
    #[serde(default = "admin_address")]
    pub address: SocketAddr,
    /// The gateway's JWT secret: the control plane signs its calls with it.
    pub jwt_secret: String,
    /// Serve the admin API over HTTPS with this certificate chain (PEM file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<String>,
    /// The private key of `tls_cert_file` (PEM file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<String>,
}

impl std::fmt::Debug for ControlPlaneLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneLink")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("cache_dir", &self.cache_dir)
            .field("heartbeat", &self.heartbeat)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("address", &self.address)
            .field("jwt_secret", &"<redacted>")
            .finish()
    }
}

/// Default cache directory of a node.
pub fn cache_dir() -> String {
    "portico-gateway-cache".into()
}

fn heartbeat() -> Duration {
    Duration::from_secs(10)
}

/// Default admin address: every interface, port 2020.
pub fn admin_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 2020))
}

/// The internal health and metrics endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Internal {
    /// Serve it at all.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Address to bind; keep it off the public network.
    #[serde(default = "defaults::internal_address")]
    pub address: SocketAddr,
}

/// Access log settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// Write one line per request.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// `-` for standard output, or a file path (appended to).
    #[serde(default = "stdout")]
    pub path: String,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            workers: None,
            internal: Internal::default(),
            access_log: AccessLog::default(),
            drain_timeout: defaults::drain_timeout(),
            watch: true,
            control_plane: None,
            admin: None,
            rate_limit_redis: None,
            acme: None,
            tracing: Tracing::default(),
            port_owner: None,
        }
    }
}

/// Which requests a gateway's nodes trace, set on the gateway in the control plane (its
/// snapshot carries it); it takes the place of each node's own `[node.tracing]` sampler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// `parent_based`, `always`, `never` or `ratio`, as in `[node.tracing]`.
    #[serde(default = "parent_based")]
    pub sampler: String,
    /// The fraction recorded with `ratio` (of new traces with `parent_based`), 0 to 1.
    #[serde(default = "one")]
    pub ratio: f64,
}

impl Sampling {
    /// What is wrong with it: (field, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        sampler_problems(&self.sampler, self.ratio)
    }
}

/// What is wrong with a sampler's name and ratio: (field, message).
fn sampler_problems(sampler: &str, ratio: f64) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if !matches!(sampler, "parent_based" | "always" | "never" | "ratio") {
        out.push((
            "sampler",
            format!("`{sampler}`: use parent_based, always, never or ratio"),
        ));
    }
    if !(0.0..=1.0).contains(&ratio) {
        out.push(("ratio", format!("{ratio}: use 0 to 1")));
    }
    out
}

/// Which requests' traces are recorded and where their spans go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// `parent_based` (the caller's decision, new traces always), `always`, `never`, or
    /// `ratio` (new traces by `ratio`, whatever the caller says).
    #[serde(default = "parent_based")]
    pub sampler: String,
    /// The fraction of traces recorded with `ratio`, or of new traces with
    /// `parent_based` (0 to 1).
    #[serde(default = "one")]
    pub ratio: f64,
    /// OTLP/HTTP endpoint spans are sent to (`http://collector:4318/v1/traces`); none are
    /// sent when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans.
    #[serde(default = "service_name")]
    pub service_name: String,
    /// Spans waiting to be sent at most; more are dropped and counted.
    #[serde(default = "queue")]
    pub queue: usize,
}

fn parent_based() -> String {
    "parent_based".into()
}
fn one() -> f64 {
    1.0
}
fn service_name() -> String {
    "portico-gateway".into()
}
fn queue() -> usize {
    2048
}

impl Default for Tracing {
    fn default() -> Self {
        Self {
            sampler: parent_based(),
            ratio: one(),
            otlp_endpoint: None,
            service_name: service_name(),
            queue: queue(),
        }
    }
}

impl Tracing {
    /// Whether it is all defaults (left out of written configs).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// What is wrong with it: (field, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = sampler_problems(&self.sampler, self.ratio);
        if let Some(e) = &self.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            out.push((
                "otlp_endpoint",
                format!("`{e}` is not a URL: write it as http://collector:4318/v1/traces"),
            ));
        }
        if self.service_name.trim().is_empty() {
            out.push(("service_name", "give the spans' service name".into()));
        }
        if !(1..=1_000_000).contains(&self.queue) {
            out.push(("queue", format!("{}: use 1 to 1000000", self.queue)));
        }
        out
    }
}

impl Default for Internal {
    fn default() -> Self {
        Self {
            enabled: true,
            address: defaults::internal_address(),
        }
    }
}

impl Default for AccessLog {
    fn default() -> Self {
        Self {
            enabled: true,
            path: stdout(),
        }
    }
}

fn stdout() -> String {
    "-".into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_travel_over_https_or_to_this_machine_only() {
        for (url, ok) in [
            ("https://cp.example.com:9400", true),
            ("http://127.0.0.1:9400", true),
            ("http://localhost:9400/x", true),
            ("http://[::1]:9400", true),
            ("http://10.0.0.5:9400", false),
            ("http://cp.example.com", false),
            ("ftp://x", false),
        ] {
            assert_eq!(super::secure_enough(url), ok, "{url}");
        }
    }
}
