//! Routes: a match and an action, with App Mesh gateway-route semantics and, where App Mesh
//! is silent, the Kubernetes Gateway API's.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::defaults;
use crate::listener::Limits;
use crate::units::Duration;

/// One route: which requests it takes and what it does with them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Stable name used in logs and metrics; defaults to `route-<index>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Explicit precedence: lower wins, and any priority beats none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Listeners (by name) this route is bound to; every listener when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<String>,
    /// What a request must look like to take this route; every request when empty.
    #[serde(rename = "match", default)]
    pub matches: RouteMatch,
    /// Forward to one or more weighted services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<Forward>,
    /// Answer with a redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// Answer with a fixed response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_response: Option<FixedResponse>,
    /// Serve a hosted app's files (a bundle of the Snapshot); the matched path prefix is
    /// the app's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppRef>,
    /// How the forwarded request's path and host are rewritten (forward only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Header edits on the request sent upstream.
    #[serde(default, skip_serializing_if = "HeaderEdits::is_empty")]
    pub request_headers: HeaderEdits,
    /// Header edits on the response sent to the client.
    #[serde(default, skip_serializing_if = "HeaderEdits::is_empty")]
    pub response_headers: HeaderEdits,
    /// Size limits tighter than the listener's.
    #[serde(default)]
    pub limits: Limits,
    /// Overrides the target services' request timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Who may call: credentials checked before anything else (managed APIs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::security::RouteAuth>,
    /// Client addresses allowed or denied (403 otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<crate::security::IpPolicy>,
    /// Throttling tiers applied to every request (with the caller's, when `auth` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<crate::security::Throttle>,
    /// Cross-origin access: preflights answered here, `Access-Control-*` on responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<crate::security::Cors>,
    /// The developer portal's Try Out may call this route from the Snapshot's
    /// `portal.origin`: preflights from it are answered and responses marked for it (set by
    /// the compiler on managed APIs' routes; no effect without `portal`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub try_out: bool,
    /// On a hybrid gateway, where callers with sandbox credentials are forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_forward: Option<Forward>,
    /// Protocols a client may switch to with `Upgrade` on this route (`["websocket"]` when
    /// unset; `[]` allows none). Any other `Upgrade` is removed before the request goes
    /// upstream; `h2c` is never relayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrades: Option<Vec<String>>,
}

/// A version of a hosted app, as a route names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRef {
    /// The app's slug.
    pub slug: String,
    /// The version.
    pub version: u32,
}

/// Conditions a request must meet; all given conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Hostnames: exact (`api.example.com`) or a wildcard suffix (`*.example.com`). The port is ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// HTTP methods (any of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Header conditions (all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions (all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<QueryMatch>,
    /// gRPC service and method, from the `/package.Service/Method` path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcMatch>,
}

/// How a path is matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathMatch {
    /// Plain string prefix, as App Mesh, Kong and nginx do: `/api` matches `/api`, `/api/x` and `/apix`.
    Prefix(String),
    /// Segment-aware prefix, as the Gateway API's PathPrefix: `/api` matches `/api` and `/api/x`, not `/apix`.
    PathPrefix(String),
    /// The whole path, exactly.
    Exact(String),
    /// A regular expression that must match the whole path.
    Regex(String),
}

/// One header condition. Exactly one of `exact`, `prefix`, `suffix`, `regex`, `present`, `absent`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// The value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The value ends with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// The whole value matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The header is present, whatever its value.
    #[serde(default, skip_serializing_if = "is_false")]
    pub present: bool,
    /// The header is absent.
    #[serde(default, skip_serializing_if = "is_false")]
    pub absent: bool,
    /// Negate the condition.
    #[serde(default, skip_serializing_if = "is_false")]
    pub invert: bool,
}

/// One query parameter condition. Exactly one of `exact`, `regex`, `present`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryMatch {
    /// Parameter name (case-sensitive).
    pub name: String,
    /// The (decoded) value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The (decoded) value matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The parameter is present.
    #[serde(default, skip_serializing_if = "is_false")]
    pub present: bool,
}

/// gRPC service and, optionally, method. Only gRPC requests (`content-type: application/grpc*`) match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcMatch {
    /// Fully qualified service name, e.g. `helloworld.Greeter`; any service when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Method name, e.g. `SayHello`; needs `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// Forward action: one service, or several with weights.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// Shorthand for a single target with weight 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Weighted targets; traffic splits in proportion to the weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
}

/// A weighted target of a forward action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Service name.
    pub service: String,
    /// Relative weight (0 takes no traffic).
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

/// Rewrites applied to a forwarded request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Prefix rewrite for `prefix`/`path_prefix` matches: a replacement value, or `false` to keep
    /// the path. When unset the matched prefix is replaced by `/`, as App Mesh does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<PrefixRewrite>,
    /// Replace the whole path with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Send this Host instead of the client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Send the target service's hostname as Host instead of the client's.
    #[serde(default, skip_serializing_if = "is_false")]
    pub host_to_target: bool,
}

/// The prefix rewrite setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrefixRewrite {
    /// Keep the path as the client sent it (`prefix = false`).
    Off,
    /// Replace the matched prefix with this value (`prefix = "/v2/"`).
    Value(String),
}

/// Header edits. `set` replaces, `add` appends, `remove` deletes; applied remove, set, add.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdits {
    /// Headers to append (existing values are kept).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Headers to set (existing values are replaced).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Headers to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Redirect action. Unset parts keep the request's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Host to redirect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port to redirect to; omitted from the URL when it is the scheme's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Replace the whole path with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Replace the matched prefix with this (prefix and path_prefix matches only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "defaults::redirect_status")]
    pub status: u16,
}

/// Fixed response action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedResponse {
    /// Status code.
    pub status: u16,
    /// Response headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl FixedResponse {
    /// A JSON answer with this status and body.
    pub fn json(status: u16, body: &str) -> Self {
        let mut headers = BTreeMap::new();
        headers.insert("content-type".to_owned(), "application/json".to_owned());
        Self {
            status,
            headers,
            body: Some(body.to_owned()),
        }
    }
}

impl Route {
    /// The route's name: the configured one or `route-<index>`.
    pub fn effective_name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("route-{index}"))
    }

    /// The services this route forwards to (none for redirects and fixed responses).
    pub fn all_targets(&self) -> Vec<Target> {
        self.forward
            .as_ref()
            .map(Forward::all_targets)
            .unwrap_or_default()
    }
}

impl Forward {
    /// The targets, with the `service` shorthand expanded.
    pub fn all_targets(&self) -> Vec<Target> {
        let mut out = self.targets.clone();
        if let Some(s) = &self.service {
            out.insert(
                0,
                Target {
                    service: s.clone(),
                    weight: 1,
                },
            );
        }
        out
    }
}

impl HeaderEdits {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Serialize for PrefixRewrite {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Off => s.serialize_bool(false),
            Self::Value(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for PrefixRewrite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PrefixRewrite;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a replacement prefix such as \"/v2/\", or false to keep the path")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<PrefixRewrite, E> {
                if v {
                    Ok(PrefixRewrite::Value("/".into()))
                } else {
                    Ok(PrefixRewrite::Off)
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PrefixRewrite, E> {
                Ok(PrefixRewrite::Value(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}
