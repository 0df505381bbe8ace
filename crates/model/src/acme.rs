//! Automatic certificates (ACME, RFC 8555) as a gateway sees them: the challenges its nodes
//! answer while the control plane orders a certificate, and where each host's certificate
//! stands. The certificates themselves travel with the listeners' TLS settings.

use serde::{Deserialize, Serialize};

/// The ACME part of a Snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeState {
    /// Challenges open right now; every node of the gateway answers them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub challenges: Vec<AcmeChallenge>,
    /// Each host's certificate state, for the node's admin API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<AcmeHostStatus>,
}

impl AcmeState {
    /// Nothing to answer and nothing to report.
    pub fn is_empty(&self) -> bool {
        self.challenges.is_empty() && self.hosts.is_empty()
    }
}

/// One challenge of an order: the CA asks for `key_authorization` at this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeChallenge {
    /// The host being validated.
    pub host: String,
    /// How the CA checks it.
    pub kind: ChallengeKind,
    /// The challenge token (base64url).
    pub token: String,
    /// `token.thumbprint`: the answer (its SHA-256 for TLS-ALPN-01).
    pub key_authorization: String,
}

/// The challenge types a gateway answers itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChallengeKind {
    /// `GET http://<host>/.well-known/acme-challenge/<token>` on port 80 (or the CA's port).
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// A TLS handshake with ALPN `acme-tls/1` on port 443 (or the CA's port).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl ChallengeKind {
    /// The RFC 8555 / RFC 8737 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
        }
    }

    /// Parses the RFC name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http-01" => Some(Self::Http01),
            "tls-alpn-01" => Some(Self::TlsAlpn01),
            _ => None,
        }
    }
}

/// Where one host's automatic certificate stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeHostStatus {
    /// The host.
    pub host: String,
    /// `pending`, `valid` or `error`.
    pub state: AcmeHostState,
    /// Unix seconds after which the current certificate is no longer valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
    /// Unix seconds when it is renewed (two thirds into its lifetime) or retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<i64>,
    /// Why the last order failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The state of a host's automatic certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcmeHostState {
    /// Being ordered (or waiting for its first order).
    Pending,
    /// A certificate is in place (a renewal may have failed: see `last_error`).
    Valid,
    /// No certificate: the last order failed and is retried at `next_attempt`.
    Error,
}

impl AcmeHostState {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Valid => "valid",
            Self::Error => "error",
        }
    }

    /// Parses the name.
    pub fn parse(s: &str) -> Self {
        match s {
            "valid" => Self::Valid,
            "error" => Self::Error,
            _ => Self::Pending,
        }
    }
}

/// The HTTP-01 answer path prefix.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// Whether `token` is a well-formed challenge token (base64url, as RFC 8555 requires).
pub fn token_ok(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
