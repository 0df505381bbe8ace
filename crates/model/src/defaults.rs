//! Every default value in one place. The config reference (docs/config.md) quotes these.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::units::{ByteSize, Duration};

/// Listeners bind every IPv4 interface unless told otherwise.
pub fn listen_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

/// A request body may pause 60 s between bytes.
pub fn request_body_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

/// True for the default [`request_body_idle_timeout`] (left out when serialized).
pub fn is_request_body_idle_timeout(d: &Duration) -> bool {
    *d == request_body_idle_timeout()
}

/// An upstream's response body may pause 5 minutes between bytes (Envoy's stream idle
/// timeout): long enough for quiet gRPC server streams, short enough to free a stalled one.
pub fn upstream_body_idle_timeout() -> Duration {
    Duration::from_secs(300)
}

/// True for the default [`upstream_body_idle_timeout`] (left out when serialized).
pub fn is_upstream_body_idle_timeout(d: &Duration) -> bool {
    *d == upstream_body_idle_timeout()
}

/// Client keep-alive idle timeout: 60 s, as nginx's `keepalive_timeout` and HAProxy's defaults.
pub fn client_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Largest request header block when neither listener nor route sets one: 64 KiB.
pub const MAX_REQUEST_HEADER_BYTES: ByteSize = ByteSize(64 * 1024);

/// Upstream connect timeout: 5 s.
pub fn connect_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Time from the end of the request to the upstream's response headers: 60 s.
pub fn request_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Idle pooled upstream connections are closed after 60 s.
pub fn upstream_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Idle pooled connections kept per endpoint and worker.
pub fn max_idle_per_endpoint() -> u32 {
    256
}

/// DNS names of endpoints are resolved again every 30 s.
pub fn dns_refresh() -> Duration {
    Duration::from_secs(30)
}

/// Endpoint weight when none is given.
pub fn weight() -> u32 {
    1
}

/// `0`, for serde.
pub fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An endpoint is probed every 10 s.
pub fn health_interval() -> Duration {
    Duration::from_secs(10)
}

/// A probe fails after 2 s without an answer.
pub fn health_timeout() -> Duration {
    Duration::from_secs(2)
}

/// Two passing probes in a row bring an endpoint back.
pub fn healthy_threshold() -> u32 {
    2
}

/// Three failing probes in a row take an endpoint out.
pub fn unhealthy_threshold() -> u32 {
    3
}

/// Statuses 200 to 399 pass an HTTP probe.
pub fn expected_statuses() -> Vec<crate::service::StatusRange> {
    vec![crate::service::StatusRange { from: 200, to: 399 }]
}

/// True for the default [`expected_statuses`] (left out when serialized).
pub fn is_expected_statuses(v: &[crate::service::StatusRange]) -> bool {
    v == expected_statuses().as_slice()
}

/// Retries after the first attempt: 1.
pub fn retry_attempts() -> u32 {
    1
}

/// Retries may add at most 20 % to the requests a service receives...
pub fn retry_budget_ratio() -> f64 {
    0.2
}

/// ...but 10 retries per second are always allowed.
pub fn retry_budget_min_per_second() -> u32 {
    10
}

/// Consecutive failures (connect errors, timeouts, 502/503/504) that eject an endpoint: 5.
pub fn consecutive_failures() -> u32 {
    5
}

/// Statuses that say an endpoint is unwell: 502, 503 and 504.
pub fn failure_statuses() -> Vec<u16> {
    vec![502, 503, 504]
}

/// True for the default [`failure_statuses`] (left out when serialized).
pub fn is_failure_statuses(v: &[u16]) -> bool {
    v == [502, 503, 504]
}

/// First ejection lasts 10 s; each further one adds another 10 s.
pub fn base_ejection_time() -> Duration {
    Duration::from_secs(10)
}

/// No ejection lasts longer than 5 minutes.
pub fn max_ejection_time() -> Duration {
    Duration::from_secs(300)
}

/// Every endpoint of a service may be ejected (the route then answers 503).
pub fn max_ejection_percent() -> u8 {
    100
}

/// In-flight requests get 30 s to finish on SIGTERM.
pub fn drain_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The internal health and metrics port.
pub fn internal_address() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9401)
}

/// Redirects answer 302 unless told otherwise.
pub fn redirect_status() -> u16 {
    302
}

/// `true`, for serde.
pub fn yes() -> bool {
    true
}
