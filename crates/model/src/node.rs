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
        }
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
