//! Every rule a config must keep, checked in one place. Each problem is reported with the path
//! of the field it concerns; all problems are collected, not just the first.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::error::{Error, FieldError};
use crate::listener::{Limits, Listener};
use crate::route::{
    FixedResponse, Forward, GrpcMatch, HeaderEdits, HeaderMatch, PathMatch, PrefixRewrite,
    QueryMatch, Redirect, Rewrite, Route, RouteMatch,
};
use crate::service::{HashOn, LoadBalancing, Service};
use crate::snapshot::{GatewayFile, SCHEMA, Snapshot};

pub mod limits;

/// Largest weight a target or endpoint may have.
pub const MAX_WEIGHT: u32 = 10_000;

/// Validates a Snapshot.
pub fn snapshot(s: &Snapshot) -> Result<(), Error> {
    let mut v = Validator::default();
    v.schema(s.schema);
    v.content(&s.listeners, &s.services, &s.routes);
    v.security(s);
    v.acme(&s.acme);
    v.apps(s);
    if let Some(t) = &s.sampling {
        for (field, m) in t.problems() {
            v.err(format!("sampling.{field}"), m);
        }
    }
    if let Some(p) = &s.portal
        && let Err(m) = crate::portal::parse_origin(&p.origin)
    {
        v.err("portal.origin", m);
    }
    v.finish()
}

/// Validates a static gateway config file.
pub fn gateway_file(f: &GatewayFile) -> Result<(), Error> {
    let mut v = Validator::default();
    v.schema(f.schema);
    if let Some(w) = f.node.workers
        && !(1..=1024).contains(&w)
    {
        v.err(
            "node.workers",
            format!("{w} workers: use 1 to 1024, or leave it out for one per CPU"),
        );
    }
    if f.node.drain_timeout.get().is_zero() {
        v.err("node.drain_timeout", "must be more than 0s");
    }
    for (field, m) in f.node.tracing.problems() {
        v.err(format!("node.tracing.{field}"), m);
    }
    if f.node.access_log.path.trim().is_empty() {
        v.err(
            "node.access_log.path",
            "write `-` for standard output or a file path",
        );
    }
    if let Some(cp) = &f.node.control_plane {
        if !(cp.url.starts_with("http://") || cp.url.starts_with("https://")) {
            v.err(
                "node.control_plane.url",
                format!("`{}` is not a URL: write it as https://host:9400", cp.url),
            );
        }
        if cp.token.trim().is_empty() {
            v.err("node.control_plane.token", "give the gateway's API token");
        }
        if !f.listeners.is_empty() || !f.services.is_empty() || !f.routes.is_empty() {
            v.err(
                "listeners",
                "a node linked to a control plane gets its listeners, services and routes from there: remove them here, or remove [node.control_plane]",
            );
        }
    }
    if let Some(admin) = &f.node.admin
        && admin.jwt_secret.len() < 32
    {
        v.err(
            "node.admin.jwt_secret",
            "the JWT secret must be at least 32 characters (`portico gateway init` makes one)",
        );
    }
    for (i, l) in f.listeners.iter().enumerate() {
        if l.tls.as_ref().is_some_and(|t| t.acme) && f.node.acme.is_none() {
            v.err(
                format!("listeners[{i}].tls.acme"),
                "automatic certificates need an ACME CA: add [node.acme] with its directory (letsencrypt, or a URL)",
            );
        }
    }
    if let Some(a) = &f.node.acme {
        if a.directory.trim().is_empty() {
            v.err(
                "node.acme.directory",
                "give the CA's directory URL, or letsencrypt",
            );
        }
        if crate::acme::ChallengeKind::parse(&a.challenge).is_none() {
            v.err(
                "node.acme.challenge",
                format!("`{}`: use http-01 or tls-alpn-01", a.challenge),
            );
        }
        for (i, h) in a.hosts.iter().enumerate() {
            if let Err(m) = check_host(h, false) {
                v.err(format!("node.acme.hosts[{i}]"), m);
            }
        }
        if a.eab_kid.is_some() != a.eab_hmac_key.is_some() {
            v.err(
                "node.acme.eab_kid",
                "give eab_kid and eab_hmac_key together",
            );
        }
    }
    v.content(&f.listeners, &f.services, &f.routes);
    limits::merge(&mut v.errors, limits::of(f));
    v.finish()
}

/// What a header condition checks, once validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderCondition<'a> {
    /// Value equals.
    Exact(&'a str),
    /// Value starts with.
    Prefix(&'a str),
    /// Value ends with.
    Suffix(&'a str),
    /// Value matches the regular expression (whole value).
    Regex(&'a str),
    /// Header present.
    Present,
    /// Header absent.
    Absent,
}

/// What a query condition checks, once validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryCondition<'a> {
    /// Value equals.
    Exact(&'a str),
    /// Value matches the regular expression (whole value).
    Regex(&'a str),
    /// Parameter present.
    Present,
}

impl HeaderMatch {
    /// The one condition this header match sets, or what is wrong with it.
    pub fn condition(&self) -> Result<HeaderCondition<'_>, String> {
        let mut set = Vec::new();
        if let Some(x) = &self.exact {
            set.push(HeaderCondition::Exact(x));
        }
        if let Some(x) = &self.prefix {
            set.push(HeaderCondition::Prefix(x));
        }
        if let Some(x) = &self.suffix {
            set.push(HeaderCondition::Suffix(x));
        }
        if let Some(x) = &self.regex {
            set.push(HeaderCondition::Regex(x));
        }
        if self.present {
            set.push(HeaderCondition::Present);
        }
        if self.absent {
            set.push(HeaderCondition::Absent);
        }
        one_of(
            set,
            "exact, prefix, suffix, regex, present = true or absent = true",
        )
    }
}

impl QueryMatch {
    /// The one condition this query match sets, or what is wrong with it.
    pub fn condition(&self) -> Result<QueryCondition<'_>, String> {
        let mut set = Vec::new();
        if let Some(x) = &self.exact {
            set.push(QueryCondition::Exact(x));
        }
        if let Some(x) = &self.regex {
            set.push(QueryCondition::Regex(x));
        }
        if self.present {
            set.push(QueryCondition::Present);
        }
        one_of(set, "exact, regex or present = true")
    }
}

fn one_of<T>(mut set: Vec<T>, names: &str) -> Result<T, String> {
    match set.len() {
        1 => Ok(set.remove(0)),
        0 => Err(format!("give one condition: {names}")),
        _ => Err(format!("give only one condition of {names}")),
    }
}

/// Compiles a user regex the way the data plane does: anchored to the whole input.
pub fn anchored_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| regex_message(&e))
}

/// The one-line reason of a regex error, e.g. `unclosed group`.
fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    match text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
    {
        Some(reason) => reason.to_owned(),
        None => text
            .lines()
            .last()
            .unwrap_or("invalid regular expression")
            .trim()
            .to_owned(),
    }
}

/// True for an HTTP token (RFC 9110 `tchar`s), the syntax of header names and methods.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// True for a header value without control characters.
pub fn is_header_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Checks a hostname: DNS labels, optionally led by `*.`; no port, no trailing dot.
pub fn check_host(host: &str, wildcard_ok: bool) -> Result<(), String> {
    let name = match host.strip_prefix("*.") {
        Some(rest) if wildcard_ok => rest,
        Some(_) => return Err(format!("`{host}`: a wildcard is not allowed here")),
        None => host,
    };
    if host == "*" {
        return Err("`*`: leave `hosts` out to match every host".into());
    }
    if name.is_empty() {
        return Err(format!("`{host}` is not a hostname"));
    }
    limits::at_most(host, limits::HOST)?;
    if name.contains(':') && name.parse::<IpAddr>().is_err() {
        return Err(format!(
            "`{host}`: hosts are matched without the port; remove `:{}`",
            name.rsplit(':').next().unwrap_or("")
        ));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "`{host}` is not a valid hostname (label `{label}`)"
            ));
        }
    }
    Ok(())
}

/// What is wrong with a header name: not an HTTP token, or too long.
pub fn header_name_problem(name: &str) -> Option<String> {
    if !is_token(name) {
        Some(format!("`{name}` is not a header name"))
    } else {
        limits::at_most(name, limits::HEADER_NAME).err()
    }
}

/// A name of a service, route or listener: letters, digits, `.`, `_`, `-`.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= limits::OBJECT_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
}

/// The problems of an API's endpoint settings at `path`.
pub fn endpoint_settings(path: &str, e: &crate::service::EndpointSettings) -> Vec<FieldError> {
    let mut service = Service::new("settings", []);
    e.apply(&mut service);
    let mut v = Validator::default();
    v.service_settings(path, &service);
    v.errors
}

/// The problems of upstream TLS settings at `path`.
pub fn upstream_tls(path: &str, t: &crate::service::UpstreamTls) -> Vec<FieldError> {
    let mut v = Validator::default();
    v.upstream_tls(path, t);
    v.errors
}

impl Validator {
    fn security(&mut self, s: &Snapshot) {
        let mut names = HashSet::new();
        for (i, t) in s.security.tiers.iter().enumerate() {
            for (field, msg) in t.problems() {
                self.err(format!("security.tiers[{i}].{field}"), msg);
            }
            if !names.insert(t.name.to_ascii_lowercase()) {
                self.err(
                    format!("security.tiers[{i}].name"),
                    format!("tier `{}` is defined twice", t.name),
                );
            }
        }
        let known = |v: &mut Self, path: String, tier: &Option<String>| {
            if let Some(t) = tier
                && !names.contains(&t.to_ascii_lowercase())
            {
                v.err(path, format!("no tier is named `{t}`"));
            }
        };
        for (i, r) in s.routes.iter().enumerate() {
            if let Some(th) = &r.throttle {
                known(self, format!("routes[{i}].throttle.api_tier"), &th.api_tier);
                known(
                    self,
                    format!("routes[{i}].throttle.operation_tier"),
                    &th.operation_tier,
                );
            }
        }
        // Only consumers with tiers name any (a million others cost nothing here); API
        // key hashes were checked as the keys were read (see `packed`).
        for (name, t) in s.security.consumers.tiered() {
            known(self, format!("security.consumers[{name}].tier"), &t.tier);
            for (api, tier) in &t.subscriptions {
                known(
                    self,
                    format!("security.consumers[{name}].subscriptions.{api}"),
                    &Some(tier.clone()),
                );
            }
        }
    }

    fn err(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.errors.push(FieldError::new(path, msg));
    }

    fn finish(self) -> Result<(), Error> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(self.errors))
        }
    }

    fn schema(&mut self, schema: u32) {
        if schema != SCHEMA {
            self.err(
                "schema",
                format!("schema {schema} is not known to this build, which reads schema {SCHEMA}"),
            );
        }
    }

    fn content(&mut self, listeners: &[Listener], services: &[Service], routes: &[Route]) {
        let listener_names = self.listeners(listeners);
        let service_names = self.services(services);
        let mut route_names = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            let p = format!("routes[{i}]");
            let name = r.effective_name(i);
            if r.name.is_some() && !is_name(&name) {
                self.err(
                    format!("{p}.name"),
                    format!("`{name}`: use letters, digits, `.`, `_` and `-` (at most 128)"),
                );
            }
            if let Some(first) = route_names.insert(name.clone(), i) {
                self.err(
                    format!("{p}.name"),
                    format!("`{name}` is already the name of routes[{first}]"),
                );
            }
            self.route(&p, r, &listener_names, &service_names);
        }
    }

    fn apps(&mut self, s: &Snapshot) {
        let mut keys = HashSet::new();
        for (i, b) in s.apps.iter().enumerate() {
            let p = format!("apps[{i}]");
            if !crate::app::slug_ok(&b.slug) {
                self.err(
                    format!("{p}.slug"),
                    format!("`{}` is not an app slug", b.slug),
                );
            }
            if !keys.insert((b.slug.as_str(), b.version)) {
                self.err(p.clone(), format!("{} is listed twice", b.key()));
            }
            for (path, f) in &b.files {
                if let Some(m) = crate::app::path_problem(path) {
                    self.err(format!("{p}.files[{path}]"), m);
                }
                if !crate::app::hash_ok(&f.hash) {
                    self.err(
                        format!("{p}.files[{path}].hash"),
                        "a SHA-256 in lower-case hex",
                    );
                }
            }
        }
        for (i, r) in s.routes.iter().enumerate() {
            if let Some(a) = &r.app
                && !keys.contains(&(a.slug.as_str(), a.version))
            {
                self.err(
                    format!("routes[{i}].app"),
                    format!("no app bundle {}@{} in this snapshot", a.slug, a.version),
                );
            }
        }
    }

    fn acme(&mut self, a: &crate::acme::AcmeState) {
        for (i, c) in a.challenges.iter().enumerate() {
            let p = format!("acme.challenges[{i}]");
            if let Err(m) = check_host(&c.host, false) {
                self.err(format!("{p}.host"), m);
            }
            if !crate::acme::token_ok(&c.token) {
                self.err(format!("{p}.token"), "a challenge token is base64url text");
            }
            let answer_ok = c
                .key_authorization
                .split_once('.')
                .is_some_and(|(t, thumb)| t == c.token && crate::acme::token_ok(thumb));
            if !answer_ok {
                self.err(
                    format!("{p}.key_authorization"),
                    "a key authorization is `<token>.<account key thumbprint>`",
                );
            }
        }
        for (i, h) in a.hosts.iter().enumerate() {
            if let Err(m) = check_host(&h.host, true) {
                self.err(format!("acme.hosts[{i}].host"), m);
            }
        }
    }

    fn listeners(&mut self, listeners: &[Listener]) -> HashSet<String> {
        let mut names = HashMap::new();
        let mut addrs = HashMap::new();
        for (i, l) in listeners.iter().enumerate() {
            let p = format!("listeners[{i}]");
            if let Some(tls) = &l.tls {
                if tls.certificates.is_empty() && !tls.acme {
                    self.err(
                        format!("{p}.tls.certificates"),
                        "give at least one certificate (cert_file and key_file), or set acme = true on a gateway managed by a control plane",
                    );
                }
                for (j, c) in tls.certificates.iter().enumerate() {
                    for (k, h) in c.hosts.iter().enumerate() {
                        if let Err(m) = check_host(h, true) {
                            self.err(format!("{p}.tls.certificates[{j}].hosts[{k}]"), m);
                        }
                    }
                    let files = c.cert_file.is_some() && c.key_file.is_some();
                    let text = c.cert_pem.is_some() && c.key_pem.is_some();
                    let some = c.cert_file.is_some()
                        || c.key_file.is_some()
                        || c.cert_pem.is_some()
                        || c.key_pem.is_some();
                    if files == text || !some {
                        self.err(
                            format!("{p}.tls.certificates[{j}]"),
                            "give cert_file and key_file (PEM files), or cert_pem and key_pem",
                        );
                    }
                }
            }
            for (j, t) in l.trusted_proxies.iter().enumerate() {
                if let Err(m) = crate::security::Cidr::parse(t) {
                    self.err(format!("{p}.trusted_proxies[{j}]"), m);
                }
            }
            let name = l.effective_name();
            if !is_name(&name) {
                self.err(
                    format!("{p}.name"),
                    format!("`{name}`: use letters, digits, `.`, `_` and `-`"),
                );
            }
            if let Some(first) = names.insert(name.clone(), i) {
                self.err(
                    format!("{p}.name"),
                    format!("`{name}` is already the name of listeners[{first}]"),
                );
            }
            if l.port != 0
                && let Some(first) = addrs.insert((l.address, l.port), i)
            {
                self.err(
                    format!("{p}.port"),
                    format!(
                        "{}:{} is already used by listeners[{first}]",
                        l.address, l.port
                    ),
                );
            }
            self.limits(&format!("{p}.limits"), &l.limits);
            if l.idle_timeout.get().is_zero() {
                self.err(format!("{p}.idle_timeout"), "must be more than 0s");
            }
        }
        names.into_keys().collect()
    }

    fn limits(&mut self, p: &str, l: &Limits) {
        if let Some(h) = l.max_request_header_bytes
            && !(1024..=1 << 20).contains(&h.get())
        {
            self.err(
                format!("{p}.max_request_header_bytes"),
                format!("{h}: use 1KiB to 1MiB"),
            );
        }
    }

    fn upstream_tls(&mut self, p: &str, t: &crate::service::UpstreamTls) {
        if t.ca_file.is_some() && t.ca_pem.is_some() {
            self.err(format!("{p}.ca_file"), "give ca_file or ca_pem, not both");
        }
        if t.client_cert_file.is_some() != t.client_key_file.is_some() {
            self.err(
                format!("{p}.client_cert_file"),
                "give client_cert_file and client_key_file together",
            );
        }
        if t.insecure_skip_verify && (t.ca_file.is_some() || t.ca_pem.is_some()) {
            self.err(
                format!("{p}.insecure_skip_verify"),
                "a CA to verify with and no verification contradict each other: drop one",
            );
        }
        if let Some(n) = &t.server_name
            && let Err(m) = check_host(n, false)
        {
            self.err(format!("{p}.server_name"), m);
        }
    }

    fn services(&mut self, services: &[Service]) -> HashSet<String> {
        let mut names = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            let p = format!("services[{i}]");
            if !is_name(&s.name) {
                self.err(
                    format!("{p}.name"),
                    format!(
                        "`{}`: use letters, digits, `.`, `_` and `-` (at most 128)",
                        s.name
                    ),
                );
            }
            if let Some(first) = names.insert(s.name.clone(), i) {
                self.err(
                    format!("{p}.name"),
                    format!("`{}` is already the name of services[{first}]", s.name),
                );
            }
            if s.endpoints.is_empty() {
                self.err(
                    format!("{p}.endpoints"),
                    "list at least one endpoint, e.g. [\"127.0.0.1:8080\"]",
                );
            }
            let mut seen = HashSet::new();
            for (j, e) in s.endpoints.iter().enumerate() {
                let ep = format!("{p}.endpoints[{j}]");
                match e.host_port() {
                    Ok((host, _)) => {
                        let host = host.trim_start_matches('[').trim_end_matches(']');
                        if let Err(m) = check_host(host, false) {
                            self.err(format!("{ep}.address"), m);
                        }
                    }
                    Err(m) => self.err(format!("{ep}.address"), m),
                }
                if !seen.insert(e.address.as_str()) {
                    self.err(
                        format!("{ep}.address"),
                        format!("`{}` is listed twice", e.address),
                    );
                }
                if e.priority > 100 {
                    self.err(
                        format!("{ep}.priority"),
                        format!("{}: use 0 (the first group) to 100", e.priority),
                    );
                }
                if e.weight == 0 || e.weight > MAX_WEIGHT {
                    self.err(
                        format!("{ep}.weight"),
                        format!("{}: use 1 to {MAX_WEIGHT}", e.weight),
                    );
                }
            }
            if let Some(h) = &s.hostname
                && let Err(m) = check_host(h.split(':').next().unwrap_or(h), false)
            {
                self.err(format!("{p}.hostname"), m);
            }
            if let Some(t) = &s.tls {
                self.upstream_tls(&format!("{p}.tls"), t);
            }
            self.service_settings(&p, s);
        }
        names.into_keys().collect()
    }

    /// The settings a service shares with an API's `endpoint_settings`.
    fn service_settings(&mut self, p: &str, s: &Service) {
        for (field, d) in [
            ("connect_timeout", s.connect_timeout),
            ("request_timeout", s.request_timeout),
            ("idle_timeout", s.idle_timeout),
        ] {
            if d.get().is_zero() {
                self.err(format!("{p}.{field}"), "must be more than 0s");
            }
        }
        if s.dns_refresh.get().as_millis() < 100 {
            self.err(format!("{p}.dns_refresh"), "must be at least 100ms");
        }
        match &s.load_balancing {
            LoadBalancing::ConsistentHash(HashOn::Header(h)) => {
                if let Some(m) = header_name_problem(h) {
                    self.err(format!("{p}.load_balancing.consistent_hash.header"), m);
                }
            }
            LoadBalancing::ConsistentHash(HashOn::Cookie(c)) if !is_token(c) => {
                self.err(
                    format!("{p}.load_balancing.consistent_hash.cookie"),
                    format!("`{c}` is not a cookie name"),
                );
            }
            _ => {}
        }
        let r = &s.retries;
        if r.attempts > 10 {
            self.err(
                format!("{p}.retries.attempts"),
                format!("{}: use 0 to 10", r.attempts),
            );
        }
        for (j, st) in r.statuses.iter().enumerate() {
            if !(400..=599).contains(st) {
                self.err(
                    format!("{p}.retries.statuses[{j}]"),
                    format!("{st}: only 4xx and 5xx statuses can be retried"),
                );
            }
        }
        if !(0.0..=1.0).contains(&r.budget_ratio) {
            self.err(
                format!("{p}.retries.budget_ratio"),
                format!("{}: use 0.0 to 1.0", r.budget_ratio),
            );
        }
        let o = &s.outlier_detection;
        for (j, st) in o.failure_statuses.iter().enumerate() {
            if !(400..=599).contains(st) {
                self.err(
                    format!("{p}.outlier_detection.failure_statuses[{j}]"),
                    format!("{st} is not an error status (400 to 599)"),
                );
            }
        }
        if o.max_ejection_percent > 100 {
            self.err(
                format!("{p}.outlier_detection.max_ejection_percent"),
                "use 0 to 100",
            );
        }
        if o.consecutive_failures > 0 && o.base_ejection_time.get().is_zero() {
            self.err(
                format!("{p}.outlier_detection.base_ejection_time"),
                "must be more than 0s",
            );
        }
        if o.max_ejection_time < o.base_ejection_time {
            self.err(
                format!("{p}.outlier_detection.max_ejection_time"),
                "must not be shorter than base_ejection_time",
            );
        }
        if let Some(h) = &s.health_check {
            self.health_check(&format!("{p}.health_check"), h);
        }
        let pool = &s.connection_pool;
        for (field, v) in [
            ("max_connections", pool.max_connections),
            ("max_requests", pool.max_requests),
        ] {
            if v == Some(0) {
                self.err(
                    format!("{p}.connection_pool.{field}"),
                    "must be at least 1 (leave it out for no limit)",
                );
            }
        }
        if pool.max_connections.is_some() && s.protocol.is_http2() {
            self.err(
                format!("{p}.connection_pool.max_connections"),
                "limits HTTP/1.1 connections; this service speaks HTTP/2: limit its streams with max_requests",
            );
        }
        if pool.max_pending_requests.is_some()
            && pool.max_connections.is_none()
            && pool.max_requests.is_none()
        {
            self.err(
                format!("{p}.connection_pool.max_pending_requests"),
                "requests wait only when max_connections or max_requests is reached: set one of them",
            );
        }
    }

    fn health_check(&mut self, p: &str, h: &crate::service::HealthCheck) {
        use crate::service::HealthProtocol;
        let interval = h.interval.get();
        if interval < std::time::Duration::from_millis(100) || interval.as_secs() > 3600 {
            self.err(format!("{p}.interval"), "use 100ms to 1h");
        }
        if h.timeout.get().is_zero() || h.timeout.get().as_secs() > 60 {
            self.err(format!("{p}.timeout"), "use more than 0s and at most 60s");
        }
        for (field, n) in [
            ("healthy_threshold", h.healthy_threshold),
            ("unhealthy_threshold", h.unhealthy_threshold),
        ] {
            if n == 0 || n > 100 {
                self.err(format!("{p}.{field}"), format!("{n}: use 1 to 100"));
            }
        }
        if h.port == Some(0) {
            self.err(format!("{p}.port"), "port 0 cannot be connected to");
        }
        let http = matches!(h.protocol, HealthProtocol::Http | HealthProtocol::Http2);
        match &h.path {
            Some(_) if !http => self.err(
                format!("{p}.path"),
                "only http and http2 checks request a path",
            ),
            Some(path)
                if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                self.err(
                    format!("{p}.path"),
                    format!("`{path}`: write a path starting with `/`, in ASCII without spaces (percent-encode the rest)"),
                )
            }
            _ => {}
        }
        if h.expected_statuses.is_empty() {
            self.err(
                format!("{p}.expected_statuses"),
                "list at least one status or range, e.g. \"200-399\"",
            );
        } else if !http && !crate::defaults::is_expected_statuses(&h.expected_statuses) {
            self.err(
                format!("{p}.expected_statuses"),
                "only http and http2 checks read a status",
            );
        }
        if h.grpc_service.is_some() && h.protocol != HealthProtocol::Grpc {
            self.err(
                format!("{p}.grpc_service"),
                "only grpc checks name a service",
            );
        }
        if let Some(host) = &h.host {
            if h.protocol == HealthProtocol::Tcp {
                self.err(format!("{p}.host"), "tcp checks send no Host");
            } else if let Err(m) = check_host(host.split(':').next().unwrap_or(host), false) {
                self.err(format!("{p}.host"), m);
            }
        }
    }

    fn route(
        &mut self,
        p: &str,
        r: &Route,
        listeners: &HashSet<String>,
        services: &HashSet<String>,
    ) {
        for (j, l) in r.listeners.iter().enumerate() {
            if !listeners.contains(l) {
                let mut known: Vec<_> = listeners.iter().map(String::as_str).collect();
                known.sort_unstable();
                self.err(
                    format!("{p}.listeners[{j}]"),
                    format!(
                        "no listener is named `{l}` (listeners: {})",
                        known.join(", ")
                    ),
                );
            }
        }
        self.matches(&format!("{p}.match"), &r.matches);
        let actions = [
            r.forward.is_some(),
            r.redirect.is_some(),
            r.fixed_response.is_some(),
            r.app.is_some(),
        ];
        match actions.iter().filter(|a| **a).count() {
            0 => self.err(
                p,
                "give an action: forward, redirect, fixed_response or app",
            ),
            1 => {}
            _ => self.err(
                p,
                "give only one action of forward, redirect, fixed_response and app",
            ),
        }
        if let Some(f) = &r.forward {
            self.forward(&format!("{p}.forward"), f, services);
        }
        if let Some(f) = &r.sandbox_forward {
            if r.forward.is_none() {
                self.err(
                    format!("{p}.sandbox_forward"),
                    "a sandbox target needs the route to forward too",
                );
            }
            self.forward(&format!("{p}.sandbox_forward"), f, services);
        }
        for (j, u) in r.upgrades.iter().flatten().enumerate() {
            if u.eq_ignore_ascii_case("h2c") {
                self.err(
                    format!("{p}.upgrades[{j}]"),
                    "`h2c` is never relayed: a client that switches a connection to HTTP/2 behind the gateway escapes its routes (request smuggling); clients speak HTTP/2 to the gateway itself",
                );
            } else if !u.split('/').all(is_token) {
                self.err(
                    format!("{p}.upgrades[{j}]"),
                    format!("`{u}` is not a protocol name (an HTTP token such as `websocket`)"),
                );
            }
        }
        if let Some(ip) = &r.ip {
            for (field, msg) in ip.problems() {
                self.err(format!("{p}.ip.{field}"), msg);
            }
        }
        if let Some(c) = &r.cors {
            for (field, msg) in c.problems() {
                self.err(format!("{p}.cors.{field}"), msg);
            }
        }
        if let Some(a) = &r.auth {
            if a.api.trim().is_empty() {
                self.err(
                    format!("{p}.auth.api"),
                    "name the API callers must be subscribed to",
                );
            }
            if let Some(m) = header_name_problem(&a.api_key_header) {
                self.err(format!("{p}.auth.api_key_header"), m);
            }
            if a.mode == crate::security::AuthMode::None {
                self.err(
                    format!("{p}.auth.mode"),
                    "leave `auth` out for a route anyone may call",
                );
            }
        }
        let prefix_match = matches!(
            r.matches.path,
            Some(PathMatch::Prefix(_) | PathMatch::PathPrefix(_))
        );
        if let Some(rw) = &r.rewrite {
            if r.forward.is_none() {
                self.err(
                    format!("{p}.rewrite"),
                    "rewrites apply to forwarded requests; this route does not forward",
                );
            }
            let segment_prefix = matches!(r.matches.path, Some(PathMatch::PathPrefix(_)));
            self.rewrite(&format!("{p}.rewrite"), rw, prefix_match, segment_prefix);
        }
        if let Some(rd) = &r.redirect {
            self.redirect(&format!("{p}.redirect"), rd, prefix_match);
        }
        if let Some(fr) = &r.fixed_response {
            self.fixed(&format!("{p}.fixed_response"), fr);
        }
        self.edits(&format!("{p}.request_headers"), &r.request_headers);
        self.edits(&format!("{p}.response_headers"), &r.response_headers);
        self.limits(&format!("{p}.limits"), &r.limits);
        if r.timeout.is_some_and(|t| t.get().is_zero()) {
            self.err(format!("{p}.timeout"), "must be more than 0s");
        }
    }

    fn matches(&mut self, p: &str, m: &RouteMatch) {
        for (j, h) in m.hosts.iter().enumerate() {
            if let Err(msg) = check_host(h, true) {
                self.err(format!("{p}.hosts[{j}]"), msg);
            }
        }
        if let Some(path) = &m.path {
            let (kind, value) = match path {
                PathMatch::Prefix(v) => ("prefix", v),
                PathMatch::PathPrefix(v) => ("path_prefix", v),
                PathMatch::Exact(v) => ("exact", v),
                PathMatch::Regex(v) => ("regex", v),
            };
            let fp = format!("{p}.path.{kind}");
            if kind == "regex" {
                if let Err(msg) = anchored_regex(value) {
                    self.err(fp, msg);
                }
            } else if !value.starts_with('/') {
                self.err(fp, format!("`{value}` must start with `/`"));
            } else if value.contains(['?', '#']) || value.bytes().any(|b| b <= b' ' || b == 0x7f) {
                self.err(fp, format!("`{value}` must be a path only, without query, fragment, spaces or control characters"));
            }
            if m.grpc.is_some() {
                self.err(
                    format!("{p}.grpc"),
                    "a gRPC match sets the path itself; remove `path` or `grpc`",
                );
            }
        }
        for (j, method) in m.methods.iter().enumerate() {
            if !is_token(method) {
                self.err(
                    format!("{p}.methods[{j}]"),
                    format!("`{method}` is not an HTTP method"),
                );
            } else if method.bytes().any(|b| b.is_ascii_lowercase()) {
                self.err(
                    format!("{p}.methods[{j}]"),
                    format!(
                        "methods are case-sensitive: write `{}`",
                        method.to_ascii_uppercase()
                    ),
                );
            }
        }
        for (j, h) in m.headers.iter().enumerate() {
            self.header_match(&format!("{p}.headers[{j}]"), h);
        }
        for (j, q) in m.query.iter().enumerate() {
            let qp = format!("{p}.query[{j}]");
            if q.name.is_empty() {
                self.err(format!("{qp}.name"), "must not be empty");
            }
            match q.condition() {
                Ok(QueryCondition::Regex(re)) => {
                    if let Err(msg) = anchored_regex(re) {
                        self.err(format!("{qp}.regex"), msg);
                    }
                }
                Ok(_) => {}
                Err(msg) => self.err(qp, msg),
            }
        }
        if let Some(g) = &m.grpc {
            self.grpc(&format!("{p}.grpc"), g);
        }
    }

    fn header_match(&mut self, p: &str, h: &HeaderMatch) {
        if let Some(m) = header_name_problem(&h.name) {
            self.err(format!("{p}.name"), m);
        }
        match h.condition() {
            Ok(HeaderCondition::Regex(re)) => {
                if let Err(msg) = anchored_regex(re) {
                    self.err(format!("{p}.regex"), msg);
                }
            }
            Ok(_) => {}
            Err(msg) => self.err(p, msg),
        }
    }

    fn grpc(&mut self, p: &str, g: &GrpcMatch) {
        let ident = |s: &str, dots: bool| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || (dots && b == b'.'))
                && !s.starts_with('.')
                && !s.ends_with('.')
        };
        if let Some(s) = &g.service
            && !ident(s, true)
        {
            self.err(
                format!("{p}.service"),
                format!("`{s}` is not a gRPC service name such as `helloworld.Greeter`"),
            );
        }
        if let Some(m) = &g.method {
            if !ident(m, false) {
                self.err(
                    format!("{p}.method"),
                    format!("`{m}` is not a gRPC method name such as `SayHello`"),
                );
            }
            if g.service.is_none() {
                self.err(
                    format!("{p}.method"),
                    "a method needs its service: set `service` too",
                );
            }
        }
    }

    fn forward(&mut self, p: &str, f: &Forward, services: &HashSet<String>) {
        if f.service.is_some() && !f.targets.is_empty() {
            self.err(p, "give either `service` or `targets`, not both");
        }
        let targets = f.all_targets();
        if targets.is_empty() {
            self.err(p, "give `service = \"name\"` or a list of `targets`");
        }
        for (j, t) in targets.iter().enumerate() {
            let tp = if f.service.is_some() {
                format!("{p}.service")
            } else {
                format!("{p}.targets[{j}].service")
            };
            if !services.contains(&t.service) {
                self.err(tp, format!("no service is named `{}`", t.service));
            }
            if t.weight > MAX_WEIGHT {
                self.err(
                    format!("{p}.targets[{j}].weight"),
                    format!("{}: use 0 to {MAX_WEIGHT}", t.weight),
                );
            }
        }
        if !targets.is_empty() && targets.iter().all(|t| t.weight == 0) {
            self.err(
                format!("{p}.targets"),
                "at least one target needs a weight above 0",
            );
        }
    }

    fn rewrite(&mut self, p: &str, rw: &Rewrite, prefix_match: bool, segment_prefix: bool) {
        if let Some(PrefixRewrite::Value(v)) = &rw.prefix {
            if !prefix_match {
                self.err(
                    format!("{p}.prefix"),
                    "a prefix rewrite needs a `prefix` or `path_prefix` path match",
                );
            }
            // A `path_prefix` match ends at a segment boundary, so what follows it starts
            // with `/` and an empty replacement just removes the prefix (Gateway API's
            // `ReplacePrefixMatch: ""`). After a plain `prefix` it could leave `1` of
            // `/chapter1`: not a path.
            if v.is_empty() && !segment_prefix {
                self.err(
                    format!("{p}.prefix"),
                    "an empty replacement works only with a `path_prefix` match (after a `prefix` match it could leave a path without its `/`); use `/`",
                );
            } else if !v.is_empty() && !v.starts_with('/') {
                self.err(format!("{p}.prefix"), format!("`{v}` must start with `/`"));
            }
        }
        if let Some(path) = &rw.path {
            if !path.starts_with('/') {
                self.err(format!("{p}.path"), format!("`{path}` must start with `/`"));
            }
            if matches!(rw.prefix, Some(PrefixRewrite::Value(_))) {
                self.err(
                    format!("{p}.path"),
                    "rewrite either the prefix or the whole path, not both",
                );
            }
        }
        if let Some(h) = &rw.host {
            if let Err(m) = check_host(h.split(':').next().unwrap_or(h), false) {
                self.err(format!("{p}.host"), m);
            }
            if rw.host_to_target {
                self.err(
                    format!("{p}.host"),
                    "give either `host` or `host_to_target = true`, not both",
                );
            }
        }
    }

    fn redirect(&mut self, p: &str, r: &Redirect, prefix_match: bool) {
        if let Some(s) = &r.scheme
            && s != "http"
            && s != "https"
        {
            self.err(
                format!("{p}.scheme"),
                format!("`{s}`: use `http` or `https`"),
            );
        }
        if let Some(h) = &r.host
            && let Err(m) = check_host(h, false)
        {
            self.err(format!("{p}.host"), m);
        }
        if r.port == Some(0) {
            self.err(format!("{p}.port"), "use 1 to 65535");
        }
        if let Some(path) = &r.path {
            if !path.starts_with('/') {
                self.err(format!("{p}.path"), format!("`{path}` must start with `/`"));
            }
            if r.prefix.is_some() {
                self.err(
                    format!("{p}.path"),
                    "give either `path` or `prefix`, not both",
                );
            }
        }
        if let Some(prefix) = &r.prefix {
            if !prefix.starts_with('/') {
                self.err(
                    format!("{p}.prefix"),
                    format!("`{prefix}` must start with `/`"),
                );
            }
            if !prefix_match {
                self.err(
                    format!("{p}.prefix"),
                    "a prefix replacement needs a `prefix` or `path_prefix` path match",
                );
            }
        }
        if ![301, 302, 303, 307, 308].contains(&r.status) {
            self.err(
                format!("{p}.status"),
                format!("{}: use 301, 302, 303, 307 or 308", r.status),
            );
        }
    }

    fn fixed(&mut self, p: &str, f: &FixedResponse) {
        if !(200..=599).contains(&f.status) {
            self.err(
                format!("{p}.status"),
                format!("{}: use 200 to 599", f.status),
            );
        }
        for (name, value) in &f.headers {
            self.header_pair(&format!("{p}.headers.{name}"), name, value);
        }
    }

    fn edits(&mut self, p: &str, e: &HeaderEdits) {
        for (name, value) in &e.set {
            self.header_pair(&format!("{p}.set.{name}"), name, value);
        }
        for (name, value) in &e.add {
            self.header_pair(&format!("{p}.add.{name}"), name, value);
        }
        for (j, name) in e.remove.iter().enumerate() {
            if let Some(m) = header_name_problem(name) {
                self.err(format!("{p}.remove[{j}]"), m);
            }
        }
    }

    fn header_pair(&mut self, p: &str, name: &str, value: &str) {
        if let Some(m) = header_name_problem(name) {
            self.err(p, m);
        } else if is_hop_by_hop(name) {
            self.err(
                p,
                format!("`{name}` is a hop-by-hop header the gateway manages itself"),
            );
        }
        if !is_header_value(value) {
            self.err(p, "the value has control characters");
        }
    }
}

/// Connection-level headers (RFC 9110 section 7.6.1) that never cross a proxy.
pub fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .any(|h| h.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests;
