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

/// The time window of a throttling tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// Per second.
    Second,
    /// Per minute.
    #[default]
    Minute,
    /// Per hour.
    Hour,
    /// Per day.
    Day,
}

impl Period {
    /// Length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Self::Second => 1,
            Self::Minute => 60,
            Self::Hour => 3600,
            Self::Day => 86_400,
        }
    }
}

/// A throttling tier: `limit` requests per `period`, at most `burst` back to back.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Unique name (case-insensitive), e.g. `gold`.
    pub name: String,
    /// Requests allowed per period.
    pub limit: u32,
    /// The period.
    #[serde(default)]
    pub per: Period,
    /// Requests allowed back to back; `limit` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl Tier {
    /// Problems with this tier as (field, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            out.push((
                "name",
                format!(
                    "`{}`: use 1 to 64 letters, digits, `.`, `_` or `-`",
                    self.name
                ),
            ));
        }
        if self.limit == 0 {
            out.push(("limit", "must be 1 or more".to_owned()));
        }
        if self.burst == Some(0) {
            out.push((
                "burst",
                "must be 1 or more, or left out for `limit`".to_owned(),
            ));
        }
        out
    }
}

/// Tiers that apply to one consumer on this gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerLimits {
    /// The consumer.
    pub name: String,
    /// Tier over everything it calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Tier per subscribed API (API id -> tier).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub subscriptions: std::collections::BTreeMap<String, String>,
    /// Every API deployed here the consumer is subscribed to (ids, sorted): the gateway
    /// admits its access tokens to these only, whatever the token's `apis` claim says, so
    /// deleting, blocking or unsubscribing a consumer takes effect with the next snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apis: Vec<String>,
}

/// The tiers a route applies to every request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    /// The API, for per-API and per-subscription limits.
    pub api: String,
    /// Tier over all callers of the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_tier: Option<String>,
    /// Tier over all callers of this operation (this route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_tier: Option<String>,
}

/// An IP network: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// Network address.
    pub addr: std::net::IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `addr[/prefix]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or network (write 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Which client addresses may call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpPolicy {
    /// Only these networks (everyone when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Never these networks (wins over `allow`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl IpPolicy {
    /// Problems as (field, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for a in &self.allow {
            if let Err(m) = Cidr::parse(a) {
                out.push(("allow", m));
            }
        }
        for d in &self.deny {
            if let Err(m) = Cidr::parse(d) {
                out.push(("deny", m));
            }
        }
        out
    }

    /// True when it restricts nothing.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// Cross-origin access for browsers (answered at the gateway).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Origins allowed (`https://app.example.com`), or `*` for any.
    pub allow_origins: Vec<String>,
    /// Methods allowed; GET, HEAD and POST when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Request headers allowed; whatever the browser asks for when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers the browser may read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Let browsers send cookies and credentials (needs explicit origins, not `*`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u32>,
}

impl Cors {
    /// Problems with this policy as (field, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.allow_origins.is_empty() {
            out.push((
                "allow_origins",
                "name at least one origin, or `*`".to_owned(),
            ));
        }
        for o in &self.allow_origins {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://"))
                || o.ends_with('/')
            {
                out.push((
                    "allow_origins",
                    format!(
                        "`{o}` is not an origin: write scheme://host[:port] without a path, or `*`"
                    ),
                ));
            }
        }
        if self.allow_credentials && self.allow_origins.iter().any(|o| o == "*") {
            out.push((
                "allow_credentials",
                "browsers refuse credentials with origin `*`: list the origins".to_owned(),
            ));
        }
        for m in &self.allow_methods {
            if !crate::validate::is_token(m) {
                out.push(("allow_methods", format!("`{m}` is not a method")));
            }
        }
        for h in self.allow_headers.iter().chain(&self.expose_headers) {
            if let Some(m) = crate::validate::header_name_problem(h) {
                out.push(("allow_headers", m));
            }
        }
        out
    }
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

/// A public key JWTs are verified with (ES256, P-256).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    /// Key id, as in the token header.
    pub kid: String,
    /// X coordinate, base64url.
    pub x: String,
    /// Y coordinate, base64url.
    pub y: String,
}

/// How the gateway checks JWT access tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// The `aud` tokens must carry.
    pub audience: String,
    /// The token service's public keys (the current one and recently retired ones).
    pub keys: Vec<JwtKey>,
}

/// The claims of an access token from the token service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The consumer.
    pub sub: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Expires (Unix seconds).
    pub exp: u64,
    /// Token id.
    pub jti: String,
    /// The client it was issued to.
    pub client_id: String,
    /// Production or sandbox.
    pub key_type: KeyType,
    /// Granted scopes, space-separated.
    #[serde(default)]
    pub scope: String,
    /// APIs the consumer was subscribed to when the token was issued (informative: the
    /// gateway checks the subscriptions in its snapshot).
    #[serde(default)]
    pub apis: Vec<String>,
    /// The person the application acts for (password grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Key material and settings for the gateway's policies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// The gateway's type: which key types it accepts.
    #[serde(default)]
    pub gateway_type: GatewayKind,
    /// API keys of consumers subscribed to APIs on this gateway.
    #[serde(default, skip_serializing_if = "crate::packed::ApiKeys::is_empty")]
    pub api_keys: crate::packed::ApiKeys,
    /// JWT verification, when the token service has keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSettings>,
    /// Throttling tiers the routes and consumers name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<Tier>,
    /// Consumer and subscription tiers.
    #[serde(default, skip_serializing_if = "crate::packed::Consumers::is_empty")]
    pub consumers: crate::packed::Consumers,
}

impl Security {
    /// True when there is nothing in it but defaults.
    pub fn is_empty(&self) -> bool {
        // Every field: whatever is left out here is lost on the way to the nodes.
        let Self {
            gateway_type,
            api_keys,
            jwt,
            tiers,
            consumers,
        } = self;
        api_keys.is_empty()
            && jwt.is_none()
            && tiers.is_empty()
            && consumers.is_empty()
            && *gateway_type == GatewayKind::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_survives_the_trip_to_the_nodes() {
        let s = crate::Snapshot {
            security: Security {
                tiers: vec![Tier {
                    name: "ten".into(),
                    limit: 10,
                    per: Period::Hour,
                    burst: None,
                }],
                consumers: vec![ConsumerLimits {
                    name: "c".into(),
                    tier: Some("ten".into()),
                    subscriptions: Default::default(),
                    apis: vec!["pets-v1".into()],
                }]
                .into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let text = serde_json::to_string(&s).unwrap_or_default();
        let back: crate::Snapshot = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, s, "{text}");
    }

    #[test]
    fn networks_contain_what_they_should() {
        let n = Cidr::parse("10.1.0.0/16").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            n.contains(
                "10.1.200.3"
                    .parse()
                    .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))
            )
        );
        assert!(
            !n.contains(
                "10.2.0.1"
                    .parse()
                    .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))
            )
        );
        let one = Cidr::parse("127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            one.contains(
                "::ffff:127.0.0.1"
                    .parse()
                    .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))
            )
        );
        let all = Cidr::parse("0.0.0.0/0").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            all.contains(
                "8.8.8.8"
                    .parse()
                    .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))
            )
        );
        let v6 = Cidr::parse("2001:db8::/32").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            v6.contains(
                "2001:db8:1::5"
                    .parse()
                    .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))
            )
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }
}
