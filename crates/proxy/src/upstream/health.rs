//! Active health checks: every gateway node probes every endpoint of every service that has
//! a health check (HTTP/1.1, HTTP/2, gRPC `grpc.health.v1.Health/Check`, or a TCP connect),
//! each endpoint on its own jittered timer. An endpoint that fails `unhealthy_threshold`
//! probes in a row is taken out of balancing until it passes `healthy_threshold` in a row.
//! HTTP and gRPC probes keep their connection open between probes, so a check costs a
//! request, not a handshake.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portico_model::{FailMode, HealthProtocol, StatusRange};
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use super::Service;
use super::endpoint::Endpoint;
use super::tls::UpStream;

/// The most of a probe's answer that is read.
const MAX_PROBE_BODY: usize = 64 * 1024;
/// How often the set of probed endpoints is compared with the service's (DNS changes).
const RESYNC: Duration = Duration::from_secs(1);
const USER_AGENT_VALUE: &str = "portico-health-check";

/// A service's health check, compiled.
#[derive(Debug)]
pub struct HealthPolicy {
    protocol: HealthProtocol,
    path: String,
    port: Option<u16>,
    interval: Duration,
    timeout: Duration,
    rise: u32,
    fall: u32,
    expected: Box<[StatusRange]>,
    grpc_request: Bytes,
    host: Option<HeaderValue>,
    /// Balance across every endpoint when all fail.
    pub fail_open: bool,
}

impl HealthPolicy {
    /// Compiles a health check; `hostname` is the service's.
    pub fn new(h: &portico_model::HealthCheck, hostname: Option<&HeaderValue>) -> Self {
        let service = h.grpc_service.as_deref().unwrap_or("");
        Self {
            protocol: h.protocol,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            port: h.port,
            interval: h.interval.get(),
            timeout: h.timeout.get(),
            rise: h.healthy_threshold.max(1),
            fall: h.unhealthy_threshold.max(1),
            expected: h.expected_statuses.clone().into_boxed_slice(),
            grpc_request: grpc_frame(service),
            host: h
                .host
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
                .or_else(|| hostname.cloned()),
            fail_open: h.when_all_unhealthy == FailMode::Open,
        }
    }
}

/// Aborts a probe loop when dropped.
struct Probe {
    task: AbortHandle,
    label: Arc<str>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps one probe loop per endpoint of `service` until the service is dropped (a reload
/// replaced it): endpoints that DNS adds get a loop, those it removes lose theirs.
pub async fn supervise(service: Weak<Service>) {
    let mut probes: HashMap<SocketAddr, Probe> = HashMap::new();
    let mut seen: Option<Arc<super::balance::EndpointSet>> = None;
    loop {
        {
            let Some(svc) = service.upgrade() else { return };
            let Some(policy) = svc.health.clone() else {
                return;
            };
            let set = svc.endpoints.load_full();
            if seen.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &set)) {
                let (passed, failed) = svc.stats.health_checks();
                for ep in &set.endpoints {
                    probes.entry(ep.addr).or_insert_with(|| {
                        let task = tokio::spawn(probe_loop(
                            service.clone(),
                            ep.clone(),
                            policy.clone(),
                            passed.clone(),
                            failed.clone(),
                        ));
                        Probe {
                            task: task.abort_handle(),
                            label: ep.label.clone(),
                        }
                    });
                }
                probes.retain(|addr, p| {
                    let keep = set.endpoints.iter().any(|e| e.addr == *addr);
                    if !keep {
                        svc.stats.forget_endpoint(&p.label);
                    }
                    keep
                });
                seen = Some(set);
            }
        }
        tokio::time::sleep(RESYNC).await;
    }
}

/// Probes one endpoint until the service is gone.
async fn probe_loop(
    service: Weak<Service>,
    ep: Arc<Endpoint>,
    policy: Arc<HealthPolicy>,
    passed: Counter,
    failed: Counter,
) {
    // Spread the first probes of many endpoints over up to a second.
    let first = policy.interval.min(Duration::from_secs(1));
    tokio::time::sleep_until(on_grid(first.mul_f64(fastrand::f64()), policy.interval)).await;
    let mut held = Held::None;
    let mut gauge = None;
    loop {
        let Some(svc) = service.upgrade() else { return };
        let gauge = gauge.get_or_insert_with(|| svc.stats.endpoint_health(&ep.label));
        let result = match tokio::time::timeout(
            policy.timeout,
            probe(&svc, &ep, &policy, &mut held),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => {
                held = Held::None;
                Err(format!("no answer within {:?}", policy.timeout))
            }
        };
        match &result {
            Ok(()) => passed.inc(),
            Err(_) => failed.inc(),
        };
        if let Some(healthy) = ep.state.on_probe(result.is_ok(), policy.rise, policy.fall) {
            if healthy {
                tracing::info!(service = %svc.name, endpoint = %ep.label, "endpoint passed its health checks: back in balancing");
            } else {
                tracing::warn!(service = %svc.name, endpoint = %ep.label, reason = %result.as_ref().err().map_or("", |e| e.as_str()), "endpoint failed its health checks: taken out of balancing");
            }
        }
        gauge.set(i64::from(!ep.state.unhealthy()));
        drop(svc);
        // Up to 10 % either way, so probes from many nodes do not arrive in step.
        let jitter = 0.9 + 0.2 * fastrand::f64();
        tokio::time::sleep_until(on_grid(policy.interval.mul_f64(jitter), policy.interval)).await;
    }
}

/// `after` from now, moved up to the next tick of a grid of a tenth of `interval` (at most
/// 100 ms): the probes of many endpoints then wake the node together, a few times a second,
/// rather than each on its own (a wake-up costs more than a probe).
fn on_grid(after: Duration, interval: Duration) -> tokio::time::Instant {
    static BASE: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(tokio::time::Instant::now);
    let grid = (interval / 10).clamp(Duration::from_millis(1), Duration::from_millis(100));
    let at = tokio::time::Instant::now() + after;
    let since = at.saturating_duration_since(base).as_nanos();
    let g = grid.as_nanos();
    let ticks = since.div_ceil(g);
    base + Duration::from_nanos(u64::try_from(ticks * g).unwrap_or(u64::MAX))
}

/// A connection kept between probes.
enum Held {
    None,
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One probe. `Err` says why it failed.
async fn probe(
    svc: &Service,
    ep: &Endpoint,
    policy: &HealthPolicy,
    held: &mut Held,
) -> Result<(), String> {
    let addr = SocketAddr::new(ep.addr.ip(), policy.port.unwrap_or(ep.addr.port()));
    let host = policy.host.as_ref().unwrap_or(&ep.authority);
    match policy.protocol {
        HealthProtocol::Tcp => connect(svc, ep, addr).await.map(drop),
        HealthProtocol::Http => {
            let sender = match std::mem::replace(held, Held::None) {
                Held::H1(s) if !s.is_closed() => s,
                _ => {
                    let io = TokioIo::new(connect(svc, ep, addr).await?);
                    let (s, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    s
                }
            };
            let mut sender = sender;
            sender.ready().await.map_err(|e| e.to_string())?;
            let req = Request::builder()
                .method(Method::GET)
                .uri(policy.path.as_str())
                .header(HOST, host)
                .header(USER_AGENT, USER_AGENT_VALUE)
                .body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            Limited::new(resp.into_body(), MAX_PROBE_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?;
            *held = Held::H1(sender);
            expect_status(policy, status)
        }
        HealthProtocol::Http2 | HealthProtocol::Grpc => {
            let mut sender = match std::mem::replace(held, Held::None) {
                Held::H2(s) if !s.is_closed() => s,
                _ => {
                    let io = TokioIo::new(connect(svc, ep, addr).await?);
                    let (s, conn) = http2::Builder::new(TokioExecutor::new())
                        .timer(TokioTimer::new())
                        .handshake(io)
                        .await
                        .map_err(|e| e.to_string())?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    s
                }
            };
            sender.ready().await.map_err(|e| e.to_string())?;
            let scheme = if svc.tls.is_some() { "https" } else { "http" };
            let grpc = policy.protocol == HealthProtocol::Grpc;
            let path = if grpc {
                "/grpc.health.v1.Health/Check"
            } else {
                policy.path.as_str()
            };
            let uri = Uri::builder()
                .scheme(scheme)
                .authority(host.as_bytes())
                .path_and_query(path)
                .build()
                .map_err(|e| format!("probe URI: {e}"))?;
            let mut req = Request::builder()
                .uri(uri)
                .version(http::Version::HTTP_2)
                .header(USER_AGENT, USER_AGENT_VALUE);
            let body = if grpc {
                req = req
                    .method(Method::POST)
                    .header(CONTENT_TYPE, "application/grpc")
                    .header("te", "trailers");
                policy.grpc_request.clone()
            } else {
                req = req.method(Method::GET);
                Bytes::new()
            };
            let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let (head, body) = resp.into_parts();
            let collected = Limited::new(body, MAX_PROBE_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?;
            *held = Held::H2(sender);
            if !grpc {
                return expect_status(policy, head.status.as_u16());
            }
            let trailers = collected.trailers().cloned();
            let bytes = collected.to_bytes();
            let grpc_status = trailers
                .as_ref()
                .and_then(|t| t.get("grpc-status"))
                .or_else(|| head.headers.get("grpc-status"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if grpc_status != "0" {
                return Err(format!(
                    "grpc-status {}",
                    if grpc_status.is_empty() {
                        "missing"
                    } else {
                        &grpc_status
                    }
                ));
            }
            match serving_status(&bytes) {
                Some(1) => Ok(()),
                Some(n) => Err(format!("health status {} (not SERVING)", status_name(n))),
                None => Err("the answer is not a HealthCheckResponse".into()),
            }
        }
    }
}

fn expect_status(policy: &HealthPolicy, status: u16) -> Result<(), String> {
    if policy.expected.iter().any(|r| r.contains(status)) {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// Opens a connection to `addr` (with the service's TLS), within the connect timeout.
async fn connect(svc: &Service, ep: &Endpoint, addr: SocketAddr) -> Result<UpStream, String> {
    let open = async {
        let s = TcpStream::connect(addr).await?;
        let _ = s.set_nodelay(true);
        match &svc.tls {
            None => Ok(UpStream::Plain(s)),
            Some(tls) => tls.connect(s, super::client::host_of(&ep.authority)).await,
        }
    };
    match tokio::time::timeout(svc.connect_timeout, open).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("connecting to {addr}: {e}")),
        Err(_) => Err(format!("connecting to {addr} timed out")),
    }
}

/// A `grpc.health.v1.HealthCheckRequest { service }` in a gRPC frame.
fn grpc_frame(service: &str) -> Bytes {
    let mut msg = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        let mut n = service.len();
        while n >= 0x80 {
            msg.push((n as u8) | 0x80);
            n >>= 7;
        }
        msg.push(n as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(5 + msg.len());
    frame.push(0); // not compressed
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    Bytes::from(frame)
}

/// The `status` of a `HealthCheckResponse` in a gRPC frame (0 when absent, as proto3 says).
fn serving_status(frame: &[u8]) -> Option<u64> {
    let (&compressed, rest) = frame.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let mut msg = rest.get(4..4 + len)?;
    let mut status = 0;
    while !msg.is_empty() {
        let (key, used) = varint(msg)?;
        msg = &msg[used..];
        match key & 7 {
            0 => {
                let (v, used) = varint(msg)?;
                msg = &msg[used..];
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let (l, used) = varint(msg)?;
                msg = msg.get(used + l as usize..)?;
            }
            1 => msg = msg.get(8..)?,
            5 => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn status_name(n: u64) -> &'static str {
    match n {
        0 => "UNKNOWN",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "unexpected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_health_messages_are_framed_and_read() {
        assert_eq!(&grpc_frame("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &grpc_frame("pets")[..],
            &[0, 0, 0, 0, 6, 0x0a, 4, b'p', b'e', b't', b's']
        );
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0), "proto3 default");
        assert_eq!(serving_status(&[0, 0, 0, 0, 5]), None, "short");
        assert_eq!(serving_status(&[1, 0, 0, 0, 0]), None, "compressed");
        // Unknown fields are skipped.
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]),
            Some(1)
        );
    }
}
