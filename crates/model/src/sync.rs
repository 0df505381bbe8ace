//! What travels between the control plane and a node: the snapshot a node pulls and the
//! report it sends back.

use serde::{Deserialize, Serialize};

use crate::snapshot::Snapshot;

/// A gateway's compiled snapshot as the control plane hands it to nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncEnvelope {
    /// The gateway this snapshot is for.
    pub gateway: String,
    /// Moves up by one each time the content changes.
    pub version: u64,
    /// `sha256:<hex>` of the snapshot's content.
    pub hash: String,
    /// What the gateway serves.
    pub snapshot: Snapshot,
}

/// The content type of a [`SyncDeltas`] answer.
pub const DELTA_CONTENT_TYPE: &str = "application/vnd.portico.delta+json";

/// What changed since the version a node holds: one step per version, applied in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncDeltas {
    /// The gateway.
    pub gateway: String,
    /// The steps, each from the version before it.
    pub steps: Vec<DeltaStep>,
}

/// One version's changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaStep {
    /// The version these changes apply to.
    pub from: u64,
    /// The version they make.
    pub version: u64,
    /// The digest of the content they make.
    pub hash: String,
    /// The changes.
    pub changes: crate::delta::Changes,
}

/// What a node reports after every apply and as a heartbeat.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeReport {
    /// Stable id of the node (kept in its cache directory).
    pub node_id: String,
    /// Host name of the machine.
    pub hostname: String,
    /// Snapshot version the node serves; none before its first apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_version: Option<u64>,
    /// Hash of the snapshot the node serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_hash: Option<String>,
    /// The error of the last apply (a refused snapshot, app files that could not be
    /// fetched), cleared only by a successful apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Unix seconds of `last_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<u64>,
    /// A secret the node made at its first start and keeps in its cache directory: the
    /// control plane binds the node id to it at first contact, so another holder of the
    /// gateway's token cannot report as this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_key: Option<String>,
    /// Endpoints the node's active health checks hold out of balancing (at most
    /// [`MAX_REPORTED_ENDPOINTS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unhealthy_endpoints: Vec<UnhealthyEndpoint>,
}

/// The most unhealthy endpoints one report lists.
pub const MAX_REPORTED_ENDPOINTS: usize = 1000;

/// An endpoint that failed its health checks on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnhealthyEndpoint {
    /// The service.
    pub service: String,
    /// The endpoint's address.
    pub endpoint: String,
}

impl std::fmt::Debug for NodeKeyRedacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "<redacted>"
        } else {
            "None"
        })
    }
}

/// Shows whether a node key is there, never the key.
struct NodeKeyRedacted<'a>(&'a Option<String>);

impl std::fmt::Debug for NodeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeReport")
            .field("node_id", &self.node_id)
            .field("hostname", &self.hostname)
            .field("applied_version", &self.applied_version)
            .field("applied_hash", &self.applied_hash)
            .field("last_error", &self.last_error)
            .field("last_error_at", &self.last_error_at)
            .field("node_key", &NodeKeyRedacted(&self.node_key))
            .field("unhealthy_endpoints", &self.unhealthy_endpoints)
            .finish()
    }
}

/// Claims of the short-lived HS256 JWT the control plane sends to a node's admin API, signed
/// with the gateway's JWT secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminClaims {
    /// Always [`ADMIN_ISSUER`].
    pub iss: String,
    /// Always [`ADMIN_AUDIENCE`].
    pub aud: String,
    /// The gateway's name as the control plane knows it.
    pub sub: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds); a minute after `iat`.
    pub exp: u64,
    /// SHA-256 (hex) of the API token the control plane holds for the gateway, so the node
    /// can tell a wrong token from a wrong secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tok: Option<String>,
}

/// Issuer of admin JWTs.
pub const ADMIN_ISSUER: &str = "portico-control-plane";
/// Audience of admin JWTs.
pub const ADMIN_AUDIENCE: &str = "portico-gateway";
