//! Who may call what: route authentication policies and the key material a gateway checks
//! callers against, without asking the control plane.

use serde::{Deserialize, Serialize};

use crate::control::GatewayKind;

/// The environment a credential belongs to.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// Production credentials.
    #[default]
    Production,
    /// Sandbox credentials.
    Sandbox,
}

impl KeyType {
    /// The lower-case word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Sandbox => "sandbox",
        }
    }

    /// Whether a gateway of `kind` accepts this key type.
    pub fn accepted_by(self, kind: GatewayKind) -> bool {
        matches!(
            (self, kind),
            (_, GatewayKind::Hybrid)
                | (Self::Production, GatewayKind::Production)
                | (Self::Sandbox, GatewayKind::Sandbox)
        )
    }
}

/// How callers of an API (or one operation) prove who they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Anyone may call.
    #[default]
    None,
    /// An API key.
    ApiKey,
    /// A JWT access token from the control plane's token service.
    Jwt,
    /// Either an API key or a JWT.
    Any,
}

impl AuthMode {
    /// Whether API keys are accepted.
    pub fn api_key(self) -> bool {
        matches!(self, Self::ApiKey | Self::Any)
    }

    /// Whether JWTs are accepted.
    pub fn jwt(self) -> bool {
        matches!(self, Self::Jwt | Self::Any)
    }
}

/// A route's authentication policy (set by the compiler for managed APIs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    /// The API this route belongs to: callers must be subscribed to it.
    pub api: String,
    /// Accepted credentials.
    pub mode: AuthMode,
    /// Header carrying an API key.
    #[serde(default = "api_key_header")]
    pub api_key_header: String,
    /// Query parameter carrying an API key, when allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_query: Option<String>,
    /// Scopes a JWT must carry (all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// The default API key header.
pub fn api_key_header() -> String {
    "apikey".into()
}

/// One API key a gateway accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyGrant {
    /// SHA-256 (hex) of the key.
    pub hash: String,
    /// The consumer it identifies.
    pub consumer: String,
    /// Its environment.
    pub key_type: KeyType,
    /// APIs the consumer is subscribed to (ids).
    pub apis: Vec<String>,
    /// Unix seconds after which it no longer works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// Key material and settings for the gateway's policies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// The gateway's type: which key types it accepts.
    #[serde(default)]
    pub gateway_type: GatewayKind,
    /// API keys of consumers subscribed to APIs on this gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<ApiKeyGrant>,
}

impl Security {
    /// True when there is nothing in it but defaults.
    pub fn is_empty(&self) -> bool {
        self.api_keys.is_empty() && self.gateway_type == GatewayKind::default()
    }
}
