//! Services: upstreams with endpoints, load balancing, timeouts, retries and outlier ejection.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::defaults;
use crate::units::Duration;

/// An upstream that routes forward to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unique name routes refer to.
    pub name: String,
    /// Protocol spoken to the endpoints.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Endpoints: `"host:port"` or `{ address = "host:port", weight = 3 }`. DNS names are
    /// resolved at start and every `dns_refresh`.
    #[serde(deserialize_with = "endpoints")]
    pub endpoints: Vec<Endpoint>,
    /// How a request picks an endpoint.
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// Host sent upstream when a route sets `rewrite.host_to_target`; the endpoint's `host:port` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Time allowed to open a connection to an endpoint.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: Duration,
    /// Time from the end of the request to the upstream's response headers.
    #[serde(default = "defaults::request_timeout")]
    pub request_timeout: Duration,
    /// Pooled connections idle longer than this are closed.
    #[serde(default = "defaults::upstream_idle_timeout")]
    pub idle_timeout: Duration,
    /// Longest pause between bytes of a response body (5 minutes by default; `0s` turns it
    /// off): a backend that stalls mid-body has its response ended rather than holding the
    /// client forever.
    #[serde(
        default = "defaults::upstream_body_idle_timeout",
        skip_serializing_if = "defaults::is_upstream_body_idle_timeout"
    )]
    pub body_idle_timeout: Duration,
    /// Idle connections kept per endpoint and worker thread.
    #[serde(default = "defaults::max_idle_per_endpoint")]
    pub max_idle_per_endpoint: u32,
    /// How often DNS names of endpoints are resolved again.
    #[serde(default = "defaults::dns_refresh")]
    pub dns_refresh: Duration,
    /// Retry policy.
    #[serde(default)]
    pub retries: Retries,
    /// Passive outlier ejection.
    #[serde(default)]
    pub outlier_detection: OutlierDetection,
    /// Speak TLS to the endpoints (HTTPS, gRPC over TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// Active health checks: every gateway node probes every endpoint, and an endpoint that
    /// fails is taken out of balancing until it passes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Limits on what the service's endpoints are asked to carry at once.
    #[serde(default, skip_serializing_if = "ConnectionPool::is_unlimited")]
    pub connection_pool: ConnectionPool,
}

/// The upstream settings of an API's endpoints: a service's, for the service each of the
/// API's environments compiles to. Unset fields keep a service's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    /// How a request picks an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<LoadBalancing>,
    /// Time allowed to open a connection to an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Time from the end of the request to the response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<Duration>,
    /// Pooled connections idle longer than this are closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Passive outlier ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Active health checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Connection and request limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
}

impl EndpointSettings {
    /// Sets what is given on `service`.
    pub fn apply(&self, service: &mut Service) {
        if let Some(v) = &self.load_balancing {
            service.load_balancing = v.clone();
        }
        if let Some(v) = self.connect_timeout {
            service.connect_timeout = v;
        }
        if let Some(v) = self.request_timeout {
            service.request_timeout = v;
        }
        if let Some(v) = self.idle_timeout {
            service.idle_timeout = v;
        }
        if let Some(v) = &self.retries {
            service.retries = v.clone();
        }
        if let Some(v) = &self.outlier_detection {
            service.outlier_detection = v.clone();
        }
        if let Some(v) = &self.health_check {
            service.health_check = Some(v.clone());
        }
        if let Some(v) = self.connection_pool {
            service.connection_pool = v;
        }
    }
}

/// Active health checks of a service's endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// How an endpoint is probed: `http`, `http2`, `grpc` (`grpc.health.v1.Health/Check`)
    /// or `tcp` (a connection that opens).
    #[serde(default)]
    pub protocol: HealthProtocol,
    /// Path requested by `http` and `http2` checks (`/` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Port probed; the endpoint's own by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Time between two probes of one endpoint (with up to 10 % jitter).
    #[serde(default = "defaults::health_interval")]
    pub interval: Duration,
    /// A probe without an answer within this fails.
    #[serde(default = "defaults::health_timeout")]
    pub timeout: Duration,
    /// Probes in a row that bring an unhealthy endpoint back.
    #[serde(default = "defaults::healthy_threshold")]
    pub healthy_threshold: u32,
    /// Probes in a row that take a healthy endpoint out.
    #[serde(default = "defaults::unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Statuses that pass an `http` or `http2` probe: numbers or ranges such as
    /// `"200-399"` (the default).
    #[serde(
        default = "defaults::expected_statuses",
        skip_serializing_if = "defaults::is_expected_statuses"
    )]
    pub expected_statuses: Vec<StatusRange>,
    /// The service name a `grpc` probe asks about (empty: the server as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_service: Option<String>,
    /// `Host` (`:authority`) of `http`, `http2` and `grpc` probes; the service's `hostname`,
    /// else the endpoint's `host:port`, by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// When every endpoint is unhealthy: `open` sends traffic to all of them anyway (the
    /// default, as Envoy's panic threshold), `closed` answers 503.
    #[serde(default, skip_serializing_if = "FailMode::is_open")]
    pub when_all_unhealthy: FailMode,
}

/// How a health check probes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthProtocol {
    /// An HTTP/1.1 `GET` of `path`.
    #[default]
    Http,
    /// An HTTP/2 (cleartext, prior knowledge; TLS when the service has it) `GET` of `path`.
    Http2,
    /// `grpc.health.v1.Health/Check`, passing when the answer is `SERVING`.
    Grpc,
    /// A TCP connection (and TLS handshake when the service has TLS) that opens.
    Tcp,
}

/// What a service does when all its endpoints fail their health checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Balance across every endpoint anyway.
    #[default]
    Open,
    /// Answer 503.
    Closed,
}

impl FailMode {
    /// Whether it is `open` (the default).
    pub fn is_open(&self) -> bool {
        *self == Self::Open
    }
}

/// A status or an inclusive range of statuses, written `200` or `"200-299"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange {
    /// Lowest status.
    pub from: u16,
    /// Highest status.
    pub to: u16,
}

impl StatusRange {
    /// Whether `status` is in the range.
    pub fn contains(&self, status: u16) -> bool {
        (self.from..=self.to).contains(&status)
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from == self.to {
            write!(f, "{}", self.from)
        } else {
            write!(f, "{}-{}", self.from, self.to)
        }
    }
}

impl std::str::FromStr for StatusRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a status or a range of statuses such as \"200-299\"");
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let from: u16 = a.trim().parse().map_err(|_| bad())?;
        let to: u16 = b.trim().parse().map_err(|_| bad())?;
        if !(100..=599).contains(&from) || !(100..=599).contains(&to) || from > to {
            return Err(format!(
                "`{s}`: statuses are 100 to 599, the lower one first"
            ));
        }
        Ok(Self { from, to })
    }
}

impl Serialize for StatusRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.from == self.to {
            s.serialize_u16(self.from)
        } else {
            s.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StatusRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status such as 200 or a range such as \"200-299\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusRange, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusRange, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusRange, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Limits on a service's connections and requests (App Mesh's and Envoy's connection pool).
/// A request over them is answered 503 at once, naming the limit; none queues without bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPool {
    /// HTTP/1.1: connections to the service's endpoints in use at once, from one gateway
    /// node (each carries one request at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection or a stream when the others are in use; 0 (and
    /// the default when the other limits are set) answers 503 at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight to the service at once, from one gateway node (HTTP/2 and gRPC
    /// streams; any protocol's requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
}

impl ConnectionPool {
    /// True when no limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.max_connections.is_none()
            && self.max_pending_requests.is_none()
            && self.max_requests.is_none()
    }
}

/// TLS to a service's endpoints: verified against the system's roots or given CAs, with the
/// server name sent in SNI and checked in the certificate, and optionally a client
/// certificate (mutual TLS to the backend).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM file of the CAs that sign the endpoints' certificates (instead of the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// The same as PEM text (how an API definition carries a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Name sent in SNI and checked against the certificate; the service's `hostname`, else
    /// each endpoint's host, by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// PEM file with a client certificate (and its chain) to present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<String>,
    /// PEM file with the client certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<String>,
    /// Accept any certificate. For tests only: anyone on the path can read the traffic.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca_file", &self.ca_file)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("server_name", &self.server_name)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

impl Service {
    /// A service with these endpoints (weight 1 each) and every other setting at its default.
    pub fn new(name: &str, endpoints: impl IntoIterator<Item = String>) -> Self {
        Self {
            name: name.to_owned(),
            protocol: UpstreamProtocol::default(),
            endpoints: endpoints
                .into_iter()
                .map(|address| Endpoint {
                    address,
                    weight: defaults::weight(),
                    priority: 0,
                })
                .collect(),
            load_balancing: LoadBalancing::default(),
            hostname: None,
            connect_timeout: defaults::connect_timeout(),
            request_timeout: defaults::request_timeout(),
            idle_timeout: defaults::upstream_idle_timeout(),
            body_idle_timeout: defaults::upstream_body_idle_timeout(),
            max_idle_per_endpoint: defaults::max_idle_per_endpoint(),
            dns_refresh: defaults::dns_refresh(),
            retries: Retries::default(),
            outlier_detection: OutlierDetection::default(),
            tls: None,
            health_check: None,
            connection_pool: ConnectionPool::default(),
        }
    }
}

/// The protocol a service's endpoints speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 over cleartext (prior knowledge), one multiplexed connection per endpoint.
    Http2,
    /// gRPC: HTTP/2 over cleartext.
    Grpc,
}

/// One endpoint of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `host:port`, where host is an IP address (IPv6 in brackets) or a DNS name.
    pub address: String,
    /// Relative weight.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// Failover group: endpoints of the lowest priority take the traffic while any of them
    /// is available; the next group only when none is (0, the first, by default).
    #[serde(default, skip_serializing_if = "defaults::is_zero")]
    pub priority: u32,
}

/// Load-balancing algorithm.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// Smooth weighted round-robin.
    #[default]
    RoundRobin,
    /// The less loaded of two random endpoints (power of two choices), weighted.
    LeastRequest,
    /// A random endpoint, weighted.
    Random,
    /// Consistent hashing (Maglev) on a request attribute; random when the attribute is missing.
    ConsistentHash(HashOn),
}

/// What consistent hashing hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// A request header's value.
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// The client's IP address.
    ClientIp,
}

/// Retry policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Retries after the first attempt; 0 disables retries.
    #[serde(default = "defaults::retry_attempts")]
    pub attempts: u32,
    /// Upstream statuses that are retried, for idempotent requests without a body.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<u16>,
    /// Share of the service's requests that retries may add (0.0 to 1.0).
    #[serde(default = "defaults::retry_budget_ratio")]
    pub budget_ratio: f64,
    /// Retries per second allowed whatever the ratio says.
    #[serde(default = "defaults::retry_budget_min_per_second")]
    pub budget_min_per_second: u32,
}

/// Passive outlier ejection: endpoints that keep failing are taken out for a growing back-off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive failures that eject; 0 disables. A failure says the endpoint is
    /// unwell: a connect error or timeout, a request timeout, a connection the endpoint
    /// broke, an answer that is not HTTP, or a status in `failure_statuses`. Answers about
    /// the request (4xx, 500, 501, an HTTP/2 stream refused or reset) and requests the
    /// client gave up on never count.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: u32,
    /// Response statuses that count as failures (502, 503 and 504 by default).
    #[serde(
        default = "defaults::failure_statuses",
        skip_serializing_if = "defaults::is_failure_statuses"
    )]
    pub failure_statuses: Vec<u16>,
    /// Length of the first ejection; the n-th ejection in a row lasts n times this.
    #[serde(default = "defaults::base_ejection_time")]
    pub base_ejection_time: Duration,
    /// Upper bound of an ejection.
    #[serde(default = "defaults::max_ejection_time")]
    pub max_ejection_time: Duration,
    /// Largest share of a service's endpoints ejected at once, in percent.
    #[serde(default = "defaults::max_ejection_percent")]
    pub max_ejection_percent: u8,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: defaults::retry_attempts(),
            statuses: Vec::new(),
            budget_ratio: defaults::retry_budget_ratio(),
            budget_min_per_second: defaults::retry_budget_min_per_second(),
        }
    }
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_failures: defaults::consecutive_failures(),
            failure_statuses: defaults::failure_statuses(),
            base_ejection_time: defaults::base_ejection_time(),
            max_ejection_time: defaults::max_ejection_time(),
            max_ejection_percent: defaults::max_ejection_percent(),
        }
    }
}

impl UpstreamProtocol {
    /// True for HTTP/2 and gRPC.
    pub fn is_http2(self) -> bool {
        matches!(self, Self::Http2 | Self::Grpc)
    }
}

impl Endpoint {
    /// Splits `host:port` (IPv6 as `[::1]:80`) into host and port.
    pub fn host_port(&self) -> Result<(&str, u16), String> {
        split_host_port(&self.address)
    }
}

/// Splits `host:port` (IPv6 as `[::1]:80`) into host and port.
pub fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{s}`: missing `]` after the IPv6 address"))?;
        let p = p
            .strip_prefix(':')
            .ok_or_else(|| format!("`{s}`: write the port after the address, e.g. `[::1]:8080`"))?;
        (h, p)
    } else {
        s.rsplit_once(':')
            .ok_or_else(|| format!("`{s}` has no port; write `host:port`, e.g. `127.0.0.1:8080`"))?
    };
    if host.is_empty() {
        return Err(format!("`{s}` has no host; write `host:port`"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{s}`: `{port}` is not a port number (1-65535)"))?;
    if port == 0 {
        return Err(format!("`{s}`: port 0 cannot be connected to"));
    }
    Ok((host, port))
}

impl<'de> Deserialize<'de> for EndpointForm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EndpointForm;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"host:port\" or a table { address = \"host:port\", weight = N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EndpointForm, E> {
                Ok(EndpointForm(Endpoint {
                    address: v.to_owned(),
                    weight: defaults::weight(),
                    priority: 0,
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EndpointForm, A::Error> {
                Endpoint::deserialize(de::value::MapAccessDeserializer::new(map)).map(EndpointForm)
            }
        }
        d.deserialize_any(V)
    }
}

/// An endpoint as written in a config file: a string or a table.
#[derive(Clone, Debug)]
pub(crate) struct EndpointForm(pub(crate) Endpoint);

/// Deserializes a list of endpoints written as strings or tables.
pub(crate) fn endpoints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Endpoint>, D::Error> {
    let forms: Vec<EndpointForm> = Vec::deserialize(d)?;
    Ok(forms.into_iter().map(|f| f.0).collect())
}
