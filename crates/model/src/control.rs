//! What operators define on the control plane: gateways (deploy targets), APIs and raw
//! gateway routes. The control plane stores these; `portico-compile` turns the ones deployed
//! to a gateway into that gateway's [`Snapshot`](crate::Snapshot).

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, FieldError};
use crate::listener::Listener;
use crate::route::Route;
use crate::validate;
use crate::validate::limits;

/// Which credentials a gateway accepts and which endpoints its APIs forward to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayKind {
    /// Serves APIs' production endpoints.
    #[default]
    Production,
    /// Serves APIs' sandbox endpoints.
    Sandbox,
    /// Serves both (production until keys tell them apart).
    Hybrid,
}

impl GatewayKind {
    /// The lower-case word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Sandbox => "sandbox",
            Self::Hybrid => "hybrid",
        }
    }
}

/// Who may see a gateway in the console and pick it as a target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Visibility {
    /// Roles that may see it; everyone when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles_allowed: Vec<String>,
    /// Roles that may not, whatever `roles_allowed` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles_denied: Vec<String>,
}

/// A gateway as the control plane sees it: a deploy target served by one or more nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySpec {
    /// Unique name (case-insensitive): letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// What it is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `production`, `sandbox` or `hybrid`.
    #[serde(rename = "type", default)]
    pub kind: GatewayKind,
    /// Admin URL of the gateway (its port 2020 API), e.g. `https://gw1.example.com:2020`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// IP address of the gateway server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Port of the gateway's admin API.
    #[serde(default = "admin_port")]
    pub admin_port: u16,
    /// PEM certificate (or CA) the gateway's HTTPS admin API is trusted by (public).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_ca_pem: Option<String>,
    /// Hostnames the gateway serves; APIs deployed to it answer on these (every host when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Host apps are served on by path (`/<slug>/`); `apps.<first host>` by default, any host
    /// when the gateway has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps_host: Option<String>,
    /// Traffic listeners; one HTTP listener on port 8080 when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
    /// Show it in the console.
    #[serde(default = "yes")]
    pub display_in_console: bool,
    /// Who may see it.
    #[serde(default)]
    pub visibility: Visibility,
    /// Which requests its nodes trace; each node's own `[node.tracing]` sampler when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<crate::node::Sampling>,
}

/// Lifecycle state of an API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Defined, deployable (a draft), not announced.
    #[default]
    Created,
    /// Announced to consumers.
    Published,
    /// Still served, with a `Deprecation` header on every response.
    Deprecated,
    /// No longer served anywhere; cannot be deployed.
    Retired,
}

/// One operation of an API: a method and a path under the API's context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// HTTP method; any method when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path under the context (segment-aware prefix), e.g. `/pets`.
    pub path: String,
    /// Overrides the API's `auth` for this operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::security::AuthMode>,
    /// Scopes a JWT must carry to call this operation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Throttling tier over all calls of this operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// A managed API: what a revision freezes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSpec {
    /// Name, e.g. `Petstore`.
    pub name: String,
    /// Version label, e.g. `v1`.
    pub version: String,
    /// Context path clients call it under, e.g. `/petstore/v1`.
    pub context: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Hostnames it answers on; the gateway's hosts when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Backend URLs for production traffic, e.g. `http://10.0.0.5:8080/api`.
    #[serde(default)]
    pub production_endpoints: Vec<String>,
    /// Backend URLs for sandbox traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sandbox_endpoints: Vec<String>,
    /// Backend URLs tried in this order when no production endpoint is available (WSO2's
    /// failover endpoints): each is a failover group of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub production_failover_endpoints: Vec<String>,
    /// The same for sandbox traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sandbox_failover_endpoints: Vec<String>,
    /// How the gateway uses the endpoints: load balancing, timeouts, retries, outlier
    /// ejection, active health checks and connection limits, as a service takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_settings: Option<crate::service::EndpointSettings>,
    /// TLS to `https://` backends: a private CA, the name to verify, a client certificate
    /// (files on the nodes), or no verification for tests. System roots when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_tls: Option<crate::service::UpstreamTls>,
    /// Operations; the whole context when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<Operation>,
    /// Who may call it: `none`, `api_key`, `jwt` or `any`.
    #[serde(default)]
    pub auth: crate::security::AuthMode,
    /// Header carrying an API key (`apikey` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_header: Option<String>,
    /// Query parameter that may carry an API key instead (off by default: keys in URLs end
    /// up in logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_query: Option<String>,
    /// Cross-origin access for browser clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<crate::security::Cors>,
    /// Throttling tier over all calls of the API, whoever makes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Client networks allowed or denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<crate::security::IpPolicy>,
    /// Who sees it in the developer portal once published: `public` (everyone, the
    /// default) or `restricted` to `visible_roles`.
    #[serde(default, skip_serializing_if = "ApiVisibility::is_public")]
    pub visibility: ApiVisibility,
    /// Roles that see a `restricted` API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub visible_roles: Vec<String>,
    /// The tiers (plans) a subscriber may choose when subscribing in the developer portal;
    /// empty: none to choose, and a subscription is limited by the API's or the consumer's
    /// tier as an admin set them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscription_tiers: Vec<String>,
    /// The API's OpenAPI (or Swagger 2) document, as JSON: frozen with each revision and
    /// rendered on the API's page in the developer portal. In a definition file given to
    /// the CLI, a string names a JSON file beside it, which the CLI reads in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openapi: Option<serde_json::Value>,
}

/// The largest OpenAPI document an API may carry, serialized (1 MiB).
pub const MAX_OPENAPI_BYTES: usize = 1 << 20;

/// Who sees an API in the developer portal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiVisibility {
    /// Everyone, signed in or not.
    #[default]
    Public,
    /// Only callers with one of the API's `visible_roles`.
    Restricted,
}

impl ApiVisibility {
    /// Whether it is `public`.
    pub fn is_public(&self) -> bool {
        *self == Self::Public
    }
}

/// A raw gateway route for mesh-style ingress, attached to gateways by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Unique name (case-insensitive).
    pub name: String,
    /// Gateways it is served on.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// The route, as the data plane has it (its `forward` names stored services).
    pub route: Route,
}

/// Who calls APIs (WSO2's "application", Kong's consumer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSpec {
    /// Unique name (case-insensitive): letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// Who owns it (a person or team).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// What it is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Throttling tier applied to everything it calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Blocked: its API keys and tokens are refused on every gateway from the next
    /// snapshot on, and the token service issues it none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
}

impl ConsumerSpec {
    /// Checks every rule; errors carry field paths.
    pub fn validate(&self) -> Result<(), Error> {
        let mut errors = Vec::new();
        name_rule(&self.name, "name", &mut errors);
        if let Some(t) = &self.tier {
            name_rule(t, "tier", &mut errors);
        }
        limits::merge(&mut errors, limits::of(self));
        done(errors)
    }
}

/// A backend URL taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointUrl {
    /// `host:port`.
    pub address: String,
    /// Path prefix on the backend, `/` when none.
    pub base_path: String,
    /// `https://`: the gateway speaks TLS to it.
    pub tls: bool,
}

/// Parses `http://host[:port][/path]` or `https://host[:port][/path]`.
pub fn parse_endpoint_url(url: &str) -> Result<EndpointUrl, String> {
    let (rest, tls, port) = if let Some(r) = url.strip_prefix("http://") {
        (r, false, 80)
    } else if let Some(r) = url.strip_prefix("https://") {
        (r, true, 443)
    } else {
        return Err(format!(
            "`{url}` is not a URL: write it as http://host:port/path or https://host/path"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("`{url}`: the host is missing or has user info"));
    }
    let address = if authority.starts_with('[') {
        if authority.ends_with(']') {
            format!("{authority}:{port}")
        } else {
            authority.to_owned()
        }
    } else if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:{port}")
    };
    let port_ok = address
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok {
        return Err(format!("`{url}`: the port must be 1 to 65535"));
    }
    // The host itself: a name, an IPv4 address or a bracketed IPv6 one.
    let (host, _) =
        crate::service::split_host_port(&address).map_err(|m| format!("`{url}`: {m}"))?;
    if address.starts_with('[') {
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "`{url}`: `{host}` in brackets is not an IPv6 address"
            ));
        }
    } else {
        validate::check_host(host, false).map_err(|m| format!("`{url}`: {m}"))?;
    }
    if path.contains(['?', '#']) {
        return Err(format!("`{url}`: a backend URL takes no query or fragment"));
    }
    Ok(EndpointUrl {
        address,
        base_path: path.to_owned(),
        tls,
    })
}

impl GatewaySpec {
    /// The host apps are served on by path: `apps_host`, else `apps.<first host>` (a
    /// wildcard's parent for `*.example.com`), else none (any host).
    pub fn effective_apps_host(&self) -> Option<String> {
        if let Some(h) = &self.apps_host {
            return Some(h.to_ascii_lowercase());
        }
        let first = self.hosts.first()?;
        let base = first.strip_prefix("*.").unwrap_or(first);
        Some(format!("apps.{}", base.to_ascii_lowercase()))
    }

    /// A gateway with defaults for everything but the name and type.
    pub fn new(name: &str, kind: GatewayKind) -> Self {
        Self {
            name: name.to_owned(),
            description: String::new(),
            kind,
            url: None,
            ip: None,
            admin_port: admin_port(),
            admin_ca_pem: None,
            hosts: Vec::new(),
            apps_host: None,
            listeners: Vec::new(),
            display_in_console: true,
            visibility: Visibility::default(),
            sampling: None,
        }
    }

    /// Checks every rule; errors carry field paths.
    pub fn validate(&self) -> Result<(), Error> {
        let mut errors = Vec::new();
        name_rule(&self.name, "name", &mut errors);
        if let Some(url) = &self.url {
            if let Err(m) = limits::at_most(url, limits::URL) {
                errors.push(FieldError::new("url", m));
            } else if !(url.starts_with("http://") || url.starts_with("https://")) {
                errors.push(FieldError::new(
                    "url",
                    format!("`{url}` is not a URL: write it as https://host:2020"),
                ));
            } else if let Err(m) = parse_endpoint_url(url) {
                errors.push(FieldError::new("url", m));
            }
        }
        if let Some(ip) = &self.ip
            && ip.parse::<std::net::IpAddr>().is_err()
        {
            errors.push(FieldError::new(
                "ip",
                format!("`{ip}` is not an IP address"),
            ));
        }
        if self.admin_port == 0 {
            errors.push(FieldError::new(
                "admin_port",
                "must be 1 to 65535 (2020 by default)",
            ));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if let Err(m) = validate::check_host(h, true) {
                errors.push(FieldError::new(format!("hosts[{i}]"), m));
            }
        }
        if let Some(h) = &self.apps_host
            && let Err(m) = validate::check_host(h, false)
        {
            errors.push(FieldError::new("apps_host", m));
        }
        // A private key in a gateway definition would be stored and shown in clear:
        // uploaded certificates are sealed and reach only the listeners serving their hosts.
        for (i, l) in self.listeners.iter().enumerate() {
            for (j, c) in l.tls.iter().flat_map(|t| t.certificates.iter()).enumerate() {
                if c.key_pem.is_some() {
                    errors.push(FieldError::new(
                        format!("listeners[{i}].tls.certificates[{j}].key_pem"),
                        "a gateway definition takes no private keys: upload the certificate with `portico certificates upload` (stored encrypted) and leave `certificates` empty",
                    ));
                }
            }
        }
        // Listeners follow the data plane's rules: validate them as a snapshot would.
        let probe = crate::Snapshot {
            listeners: self.listeners.clone(),
            ..Default::default()
        };
        if let Err(e) = probe.validate() {
            // An HTTPS listener without certificates gets the uploaded ones for its hosts.
            errors.extend(
                e.field_errors()
                    .into_iter()
                    .filter(|f| !f.path.ends_with(".tls.certificates")),
            );
        }
        if let Some(t) = &self.sampling {
            for (field, m) in t.problems() {
                errors.push(FieldError::new(format!("sampling.{field}"), m));
            }
        }
        limits::merge(&mut errors, limits::of(self));
        done(errors)
    }
}

impl ApiSpec {
    /// The API's id: `name-version`, lower case, anything but letters, digits, `.`, `_`
    /// and `-` turned into `-`.
    pub fn id(&self) -> String {
        slug(&format!("{}-{}", self.name, self.version))
    }

    /// Checks every rule; errors carry field paths.
    pub fn validate(&self) -> Result<(), Error> {
        let mut errors = Vec::new();
        if self.name.trim().is_empty() || self.name.chars().count() > limits::API_NAME {
            errors.push(FieldError::new(
                "name",
                format!(
                    "give the API a name of 1 to {} characters",
                    limits::API_NAME
                ),
            ));
        }
        if self.version.trim().is_empty() || self.version.chars().count() > limits::API_VERSION {
            errors.push(FieldError::new(
                "version",
                format!(
                    "give a version label of 1 to {} characters, e.g. v1",
                    limits::API_VERSION
                ),
            ));
        }
        if let Err(m) = limits::at_most(&self.context, limits::CONTEXT) {
            errors.push(FieldError::new("context", m));
        } else if !self.context.starts_with('/') || self.context.len() < 2 {
            errors.push(FieldError::new(
                "context",
                format!(
                    "`{}`: the context is a path such as /petstore/v1",
                    self.context
                ),
            ));
        } else if self.context.contains(['?', '#', ' ']) || self.context.ends_with('/') {
            errors.push(FieldError::new(
                "context",
                format!(
                    "`{}`: no query, fragment, spaces or trailing slash",
                    self.context
                ),
            ));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if let Err(m) = validate::check_host(h, true) {
                errors.push(FieldError::new(format!("hosts[{i}]"), m));
            }
        }
        match self.visibility {
            ApiVisibility::Restricted if self.visible_roles.is_empty() => {
                errors.push(FieldError::new(
                    "visible_roles",
                    "a restricted API names the roles that see it, e.g. [\"partner\"]",
                ));
            }
            ApiVisibility::Public if !self.visible_roles.is_empty() => {
                errors.push(FieldError::new(
                    "visible_roles",
                    "set visibility = \"restricted\" for visible_roles to apply (a public API is seen by everyone)",
                ));
            }
            _ => {}
        }
        for (i, r) in self.visible_roles.iter().enumerate() {
            name_rule(r, &format!("visible_roles[{i}]"), &mut errors);
        }
        if let Some(doc) = &self.openapi {
            let versioned = doc
                .get("openapi")
                .or_else(|| doc.get("swagger"))
                .is_some_and(serde_json::Value::is_string);
            if !doc.is_object() || !versioned || !doc.get("paths").is_some_and(|p| p.is_object()) {
                errors.push(FieldError::new(
                    "openapi",
                    "give an OpenAPI document: an object with `openapi` (or `swagger`) and `paths` (the CLI reads a JSON file named here)",
                ));
            } else if doc.to_string().len() > MAX_OPENAPI_BYTES {
                errors.push(FieldError::new(
                    "openapi",
                    format!("the document is larger than {MAX_OPENAPI_BYTES} bytes"),
                ));
            }
        }
        if self.subscription_tiers.len() > 100 {
            errors.push(FieldError::new(
                "subscription_tiers",
                "offer at most 100 tiers",
            ));
        }
        for (i, t) in self.subscription_tiers.iter().enumerate() {
            name_rule(t, &format!("subscription_tiers[{i}]"), &mut errors);
        }
        if self.production_endpoints.is_empty() {
            errors.push(FieldError::new(
                "production_endpoints",
                "give at least one backend URL, e.g. http://10.0.0.5:8080",
            ));
        }
        if self.sandbox_endpoints.is_empty() && !self.sandbox_failover_endpoints.is_empty() {
            errors.push(FieldError::new(
                "sandbox_failover_endpoints",
                "failover endpoints back sandbox_endpoints up: give those first",
            ));
        }
        if let Some(settings) = &self.endpoint_settings {
            errors.extend(validate::endpoint_settings("endpoint_settings", settings));
        }
        for (field, list) in [
            ("production_endpoints", &self.production_endpoints),
            ("sandbox_endpoints", &self.sandbox_endpoints),
            (
                "production_failover_endpoints",
                &self.production_failover_endpoints,
            ),
            (
                "sandbox_failover_endpoints",
                &self.sandbox_failover_endpoints,
            ),
        ] {
            let mut schemes = HashSet::new();
            for (i, u) in list.iter().enumerate() {
                if let Err(m) = limits::at_most(u, limits::URL) {
                    errors.push(FieldError::new(format!("{field}[{i}]"), m));
                    continue;
                }
                match parse_endpoint_url(u) {
                    Ok(e) => {
                        schemes.insert(e.tls);
                    }
                    Err(m) => errors.push(FieldError::new(format!("{field}[{i}]"), m)),
                }
            }
            if schemes.len() > 1 {
                errors.push(FieldError::new(
                    field,
                    "use one scheme for all of them: http:// or https://",
                ));
            }
            if self.backend_tls.is_some() && schemes.contains(&false) {
                errors.push(FieldError::new(
                    field,
                    "backend_tls is set: the backends are https:// URLs",
                ));
            }
        }
        // A failover endpoint takes the same requests: one scheme and one base path.
        for (field, primary, backups) in [
            (
                "production_failover_endpoints",
                &self.production_endpoints,
                &self.production_failover_endpoints,
            ),
            (
                "sandbox_failover_endpoints",
                &self.sandbox_endpoints,
                &self.sandbox_failover_endpoints,
            ),
        ] {
            let Some(first) = primary.first().and_then(|u| parse_endpoint_url(u).ok()) else {
                continue;
            };
            for (i, u) in backups.iter().enumerate() {
                let Ok(e) = parse_endpoint_url(u) else {
                    continue;
                };
                if e.tls != first.tls || e.base_path != first.base_path {
                    errors.push(FieldError::new(
                        format!("{field}[{i}]"),
                        format!(
                            "`{u}`: a failover endpoint takes the same requests as `{}`: use its scheme and path",
                            primary[0]
                        ),
                    ));
                }
            }
        }
        if let Some(t) = &self.backend_tls {
            errors.extend(validate::upstream_tls("backend_tls", t));
        }
        if let Some(h) = &self.api_key_header
            && let Some(m) = validate::header_name_problem(h)
        {
            errors.push(FieldError::new("api_key_header", m));
        }
        if let Some(q) = &self.api_key_query
            && (q.is_empty() || q.contains(['&', '=', '#', ' ']))
        {
            errors.push(FieldError::new(
                "api_key_query",
                format!("`{q}` is not a query parameter name"),
            ));
        }
        if let Some(c) = &self.cors {
            for (field, msg) in c.problems() {
                errors.push(FieldError::new(format!("cors.{field}"), msg));
            }
        }
        if let Some(ip) = &self.ip {
            for (field, msg) in ip.problems() {
                errors.push(FieldError::new(format!("ip.{field}"), msg));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, op) in self.operations.iter().enumerate() {
            if !op.path.starts_with('/') || op.path.contains(['?', '#', ' ']) {
                errors.push(FieldError::new(
                    format!("operations[{i}].path"),
                    format!("`{}`: a path under the context, such as /pets", op.path),
                ));
            }
            if let Some(m) = &op.method
                && !validate::is_token(m)
            {
                errors.push(FieldError::new(
                    format!("operations[{i}].method"),
                    format!("`{m}` is not an HTTP method"),
                ));
            }
            let key = (
                op.method.as_deref().map(str::to_ascii_uppercase),
                op.path.clone(),
            );
            if !seen.insert(key) {
                errors.push(FieldError::new(
                    format!("operations[{i}]"),
                    "the same method and path are defined twice",
                ));
            }
        }
        limits::merge(&mut errors, limits::of(self));
        done(errors)
    }
}

impl RouteSpec {
    /// Checks the rules that hold without the stored services; the control plane checks
    /// that the services exist.
    pub fn validate(&self) -> Result<(), Error> {
        let mut errors = Vec::new();
        name_rule(&self.name, "name", &mut errors);
        for (i, g) in self.gateways.iter().enumerate() {
            name_rule(g, &format!("gateways[{i}]"), &mut errors);
        }
        // The route alone, with stand-in services for what it forwards to; a name no
        // service can have gets none, so the route's own field reports it.
        let mut services = Vec::new();
        for t in self.route.all_targets() {
            if validate::is_name(&t.service)
                && !services
                    .iter()
                    .any(|s: &crate::Service| s.name == t.service)
            {
                services.push(crate::Service::new(&t.service, ["127.0.0.1:1".to_owned()]));
            }
        }
        // Stand-in listeners too: which listeners a gateway has is checked when the
        // gateways the route names compile it.
        let mut named: Vec<&String> = self
            .route
            .listeners
            .iter()
            .filter(|n| validate::is_name(n))
            .collect();
        named.sort_unstable();
        named.dedup();
        let listeners = named
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                let mut l = crate::Listener::new(
                    u16::try_from(i + 1).unwrap_or(1),
                    crate::ListenerProtocol::Http,
                );
                l.name = Some(n.clone());
                l
            })
            .collect();
        let probe = crate::Snapshot {
            routes: vec![self.route.clone()],
            services,
            listeners,
            ..Default::default()
        };
        if let Err(e) = probe.validate() {
            for mut fe in e.field_errors() {
                fe.path = fe.path.replacen("routes[0]", "route", 1);
                errors.push(fe);
            }
        }
        limits::merge(&mut errors, limits::of(self));
        done(errors)
    }
}

/// Lower-cases and replaces what is not a letter, digit, `.`, `_` or `-` by `-`.
pub fn slug(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn name_rule(name: &str, path: &str, errors: &mut Vec<FieldError>) {
    let ok = !name.is_empty()
        && name.len() <= limits::NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        errors.push(FieldError::new(
            path,
            format!("`{name}`: use 1 to 64 letters, digits, `.`, `_` or `-`"),
        ));
    }
}

fn done(errors: Vec<FieldError>) -> Result<(), Error> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(errors))
    }
}

fn admin_port() -> u16 {
    2020
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_parse_with_default_port_and_base_path() {
        let e = parse_endpoint_url("http://10.0.0.5:8080/api").unwrap_or_else(|m| panic!("{m}"));
        assert_eq!(e.address, "10.0.0.5:8080");
        assert_eq!(e.base_path, "/api");
        let e = parse_endpoint_url("http://backend").unwrap_or_else(|m| panic!("{m}"));
        assert_eq!(e.address, "backend:80");
        assert_eq!(e.base_path, "/");
        let e = parse_endpoint_url("https://x").unwrap_or_else(|m| panic!("{m}"));
        assert_eq!((e.address.as_str(), e.tls), ("x:443", true));
        assert!(parse_endpoint_url("x:80").is_err());
        assert!(parse_endpoint_url("http://x:0").is_err());
        assert!(parse_endpoint_url("http://x/a?b").is_err());
    }

    #[test]
    fn api_errors_name_their_fields() {
        let api = ApiSpec {
            name: "Pets".into(),
            version: "v1".into(),
            context: "pets".into(),
            description: String::new(),
            hosts: vec![],
            production_endpoints: vec!["ftp://x".into()],
            sandbox_endpoints: vec![],
            production_failover_endpoints: vec![],
            sandbox_failover_endpoints: vec![],
            endpoint_settings: None,
            backend_tls: None,
            operations: vec![Operation {
                method: Some("GE T".into()),
                path: "/x".into(),
                auth: None,
                scopes: vec![],
                tier: None,
            }],
            auth: Default::default(),
            api_key_header: None,
            api_key_query: None,
            cors: None,
            tier: None,
            ip: None,
            visibility: Default::default(),
            visible_roles: vec![],
            subscription_tiers: vec![],
            openapi: None,
        };
        let Err(Error::Invalid(errs)) = api.validate() else {
            panic!("expected errors")
        };
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["context", "production_endpoints[0]", "operations[0].method"]
        );
        assert_eq!(api.id(), "pets-v1");
    }

    #[test]
    fn backend_and_gateway_urls_need_a_real_host() {
        for bad in [
            "http://[::1",
            "http://[zz]:80",
            "http://a]b:80",
            "https://exa mple.com/",
            "http://host_:x",
        ] {
            assert!(parse_endpoint_url(bad).is_err(), "{bad}");
        }
        for good in [
            "http://[::1]:8080/api",
            "http://[::1]/",
            "https://pets.internal/api",
            "http://10.0.0.5:8080",
        ] {
            assert!(parse_endpoint_url(good).is_ok(), "{good}");
        }
        let mut g = GatewaySpec::new("edge", GatewayKind::Production);
        g.url = Some("http://[gw:2020".into());
        let Err(Error::Invalid(errs)) = g.validate() else {
            panic!("refused")
        };
        assert_eq!(errs[0].path, "url");
    }
}
