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

/// What a node reports after every apply and as a heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The last sync or apply error, cleared by the next success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
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
