//! Phase `forward`: the request rewritten for the upstream, then `choose upstream ->
//! connect and send -> respond`, with retries on another endpoint when the error says the
//! request may be sent again ([`ProxyError::retry`]) and the service's attempts and budget
//! allow it.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use http::header::{CONTENT_LENGTH, COOKIE, EXPECT, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use portico_model::HashOn;
use tokio::sync::oneshot;

use super::Ctx;
use crate::body::{ClientBody, RequestBody, RequestStream, ResponseBody};
use crate::clock;
use crate::exchange::{Exchange, InFlight, Interim};
use crate::fault::{ErrorKind, ProxyError};
use crate::headers::{self, X_REQUEST_ID};
use crate::rewrite;
use crate::runtime::{Forward, HostRewrite, PathRewrite, Route};
use crate::trace::{TRACEPARENT, TRACESTATE};
use crate::upstream::balance::{EndpointSet, hash64};
use crate::upstream::client::{self, SendError, UpstreamBody};
use crate::upstream::endpoint::Endpoint;
use crate::upstream::tls::UpStream;
use crate::upstream::{Service, h1};

/// What an HTTP/2 retry needs to send the request again.
struct Template {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

/// What both forwarding paths share.
struct Upstream<'a> {
    f: &'a Forward,
    route: &'a Route,
    svc: &'a Service,
    hash: Option<u64>,
    host: Option<HeaderValue>,
    pq: PathAndQuery,
    timeout: std::time::Duration,
    body_done: Option<oneshot::Receiver<()>>,
    request_id: &'a HeaderValue,
    /// Forwarding headers to encode directly (HTTP/1.1 without header edits).
    direct: Option<h1::Forwarded<'a>>,
    /// The client asked for a protocol upgrade the route allows.
    upgrade: bool,
    /// Where an HTTP/1.1 upstream's interim responses go, when the client can take them.
    interim: Option<&'a Interim>,
}

/// Forwards the request to the route's target `f`.
pub async fn forward(
    cx: &mut Ctx<'_>,
    f: &Forward,
    route: &Route,
    req: Request<ClientBody>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Ctx {
        conn,
        request_id,
        trace,
        normalized,
        ex,
        ..
    } = cx;
    let conn = *conn;
    let request_id = &*request_id;
    let target = f.pick();
    let svc: &Service = &target.service;
    ex.stats = Some(target.stats.clone());
    if let Some(l) = &mut ex.log {
        l.service = Some(svc.name.clone());
    }
    // Only the protocols the route allows are relayed; any other `Upgrade` is dropped and
    // the request goes on as a plain one.
    let upgrade = req.version() <= Version::HTTP_11
        && headers::is_upgrade_request(req.headers())
        && headers::upgrade_allowed(req.headers(), &route.upgrades);
    if upgrade && svc.protocol.is_http2() {
        return Err(ProxyError::new(
            ErrorKind::UpgradeUnsupported,
            format!(
                "service `{}` speaks HTTP/2; protocol upgrades need an HTTP/1.1 service",
                svc.name
            ),
        ));
    }
    let hash = svc
        .hash_on
        .as_ref()
        .and_then(|on| hash_key(on, req.headers(), conn.peer));
    let (mut parts, body) = req.into_parts();
    if !svc.protocol.is_http2() {
        join_cookies(&mut parts.headers);
    }
    // The upstream is told this trace with the gateway's span as its parent; what the
    // client sent is replaced (a malformed `traceparent` is never passed on).
    parts
        .headers
        .insert(TRACEPARENT.clone(), trace.traceparent());
    match &trace.tracestate {
        Some(state) => {
            parts.headers.insert(TRACESTATE.clone(), state.clone());
        }
        None => {
            parts.headers.remove(&TRACESTATE);
        }
    }

    // The path and query sent upstream.
    let path_src = normalized.as_deref().unwrap_or(parts.uri.path());
    let path: Cow<str> = match &f.path {
        PathRewrite::Keep => Cow::Borrowed(path_src),
        PathRewrite::Prefix(v) => Cow::Owned(rewrite::replace_prefix(
            path_src,
            route.prefix_len.unwrap_or(0),
            v,
        )),
        PathRewrite::Full(p) => Cow::Borrowed(p.as_str()),
    };
    let pq = path_and_query(&path, parts.uri.query(), &parts.uri)?;
    let client_host = parts.headers.get(HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });

    // HTTP/1.1 upstreams without header edits get the forwarding headers written straight
    // into the request head (one pass, no map edits); otherwise the map is edited first.
    let direct =
        (!svc.protocol.is_http2() && route.request_headers.is_empty()).then(|| h1::Forwarded {
            client_ip: &conn.peer_ip,
            proto: conn.scheme,
            host: client_host.clone(),
            request_id,
            via: headers::via(parts.version),
            upgrade,
        });
    if direct.is_none() {
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        // The gateway streams the body itself and answers `Expect: 100-continue` to the client.
        parts.headers.remove(EXPECT);
        headers::add_forwarded(
            &mut parts.headers,
            &conn.peer_ip,
            conn.scheme,
            client_host.clone(),
        );
        headers::add_via(&mut parts.headers, parts.version);
        parts
            .headers
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        route.request_headers.apply(&mut parts.headers);
    }
    let host = match &f.host {
        HostRewrite::Keep => client_host,
        HostRewrite::Value(v) => Some(v.clone()),
        HostRewrite::Target => svc.hostname.clone(),
    };

    let mut body_done = None;
    let body = if body.is_end_stream() {
        RequestBody::Empty
    } else {
        let counter = Arc::new(AtomicU64::new(0));
        ex.bytes_in = Some(counter.clone());
        let (tx, rx) = oneshot::channel();
        body_done = Some(rx);
        let stall = crate::body::Stall::new(route.body_idle, route.body_total);
        RequestBody::Stream(RequestStream::new(
            body,
            route.max_body,
            counter,
            Some(tx),
            stall,
        ))
    };
    svc.budget.on_request();
    let up = Upstream {
        f,
        route,
        svc,
        hash,
        host,
        pq,
        timeout: route.timeout.unwrap_or(svc.request_timeout),
        body_done,
        request_id,
        direct,
        upgrade,
        // HTTP/1.0 clients get no 1xx (RFC 9110 section 15.2).
        interim: conn
            .interim
            .as_ref()
            .filter(|_| parts.version == Version::HTTP_11),
    };
    if let Some(limits) = &svc.limits {
        match limits.admit(up.timeout).await {
            Ok(slot) => ex.pool_slot = Some(slot),
            Err(refused) => {
                svc.stats.overflow(limits.metric_limit(refused));
                return Err(limits.error(&svc.name, refused, up.timeout));
            }
        }
    }
    if svc.protocol.is_http2() {
        forward_h2(up, parts, body, ex).await
    } else {
        forward_h1(up, parts, body, ex).await
    }
}

/// The upstream's `Host` for an attempt on `ep`.
fn host_for<'a>(up: &'a Upstream<'_>, ep: &'a Endpoint) -> &'a HeaderValue {
    match (&up.f.host, &up.host) {
        (HostRewrite::Target, None) => &ep.authority,
        (_, Some(h)) => h,
        (_, None) => &ep.authority,
    }
}

/// Step `choose upstream`: an endpoint for an attempt, by the service's balancer, skipping
/// ejected and unhealthy endpoints and the one that just failed.
fn choose_upstream(
    up: &Upstream<'_>,
    avoid: Option<usize>,
) -> Result<(Arc<EndpointSet>, usize), ProxyError> {
    let set = up.svc.endpoints().clone();
    match set.pick(up.hash, avoid, clock::now_ms()) {
        Some(i) => Ok((set, i)),
        None => Err(ProxyError::new(
            ErrorKind::NoEndpoint,
            format!("service `{}` has no available endpoint", up.svc.name),
        )),
    }
}

/// The next attempt: counted (the log line says how many were made), an endpoint chosen,
/// and the request counted in flight on it.
fn begin_attempt(
    up: &Upstream<'_>,
    ex: &mut Exchange,
    attempts: &mut u32,
    avoid: Option<usize>,
) -> Result<(Arc<EndpointSet>, usize, Arc<Endpoint>, InFlight), ProxyError> {
    *attempts += 1;
    if let Some(l) = &mut ex.log {
        l.attempts = *attempts;
    }
    let (set, i) = choose_upstream(up, avoid)?;
    let ep = set.endpoints[i].clone();
    let in_flight = InFlight::new(ep.clone());
    Ok((set, i, ep, in_flight))
}

async fn forward_h1(
    mut up: Upstream<'_>,
    parts: http::request::Parts,
    body: RequestBody,
    ex: &mut Exchange,
) -> Result<Response<ResponseBody>, ProxyError> {
    let svc = up.svc;
    let has_body = !matches!(body, RequestBody::Empty);
    let content_length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let chunked = has_body && content_length.is_none();
    let replayable = !has_body && is_idempotent(&parts.method);
    let mut body = Some(body);
    let mut head = Vec::with_capacity(512);
    let mut attempts = 0u32;
    let mut avoid = None;
    loop {
        let (set, i, ep, in_flight) = begin_attempt(&up, ex, &mut attempts, avoid)?;
        head.clear();
        h1::encode_head(
            &mut head,
            &parts.method,
            up.pq.as_str(),
            host_for(&up, &ep),
            &parts.headers,
            content_length,
            chunked,
            up.direct.as_ref(),
        );
        let req = client::H1Request {
            head: &head,
            method: &parts.method,
            chunked,
            replayable,
            interim: up.interim,
            timed: ex.span.is_some(),
        };
        let b = body.take().unwrap_or(RequestBody::Empty);
        let can_retry = attempts <= svc.retry_attempts;
        let tried = ex.mark();
        match client::send_h1(svc, &ep, req, b, up.timeout, &mut up.body_done).await {
            Ok(sent) if sent.head.status == StatusCode::SWITCHING_PROTOCOLS && !up.upgrade => {
                // A tunnel nobody asked for would carry bytes no route checks.
                ex.endpoint = Some(in_flight);
                return Err(send_error(
                    SendError::Invalid(
                        "101 Switching Protocols to a request without an upgrade".into(),
                    ),
                    svc,
                    &ep.label,
                    up.timeout,
                ));
            }
            Ok(sent) => {
                if !record(svc, &set, i, sent.head.status, can_retry && replayable) {
                    avoid = Some(i);
                    continue;
                }
                return Ok(respond(sent, &up, ex, in_flight));
            }
            Err((err, back)) => {
                ex.phase("upstream attempt failed", tried, Instant::now());
                let resendable = back.is_some() || replayable;
                let e = attempt_failed(svc, &set, i, err, up.timeout);
                if may_retry(svc, &e, resendable, can_retry) {
                    avoid = Some(i);
                    body = back;
                    continue;
                }
                ex.endpoint = Some(in_flight);
                return Err(e);
            }
        }
    }
}

async fn forward_h2(
    mut up: Upstream<'_>,
    mut parts: http::request::Parts,
    body: RequestBody,
    ex: &mut Exchange,
) -> Result<Response<ResponseBody>, ProxyError> {
    let svc = up.svc;
    parts.version = Version::HTTP_2;
    let replayable = matches!(body, RequestBody::Empty) && is_idempotent(&parts.method);
    let template =
        (replayable && !svc.retry_statuses.is_empty() && svc.retry_attempts > 0).then(|| {
            Template {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                version: parts.version,
                headers: parts.headers.clone(),
            }
        });
    let mut pending = Some(Request::from_parts(parts, body));
    let mut attempts = 0u32;
    let mut avoid = None;
    loop {
        let (set, i, ep, in_flight) = begin_attempt(&up, ex, &mut attempts, avoid)?;
        let mut req = match (pending.take(), &template) {
            (Some(r), _) => r,
            (None, Some(t)) => rebuild(t),
            (None, None) => {
                return Err(ProxyError::new(
                    ErrorKind::Internal,
                    "the request cannot be sent again",
                ));
            }
        };
        set_h2_target(&mut req, host_for(&up, &ep), &up.pq);
        let can_retry = attempts <= svc.retry_attempts;
        let tried = ex.mark();
        match client::send_h2(
            svc,
            &ep,
            req,
            up.timeout,
            &mut up.body_done,
            tried.is_some(),
        )
        .await
        {
            Ok(sent) => {
                if !record(
                    svc,
                    &set,
                    i,
                    sent.head.status,
                    can_retry && template.is_some(),
                ) {
                    avoid = Some(i);
                    continue;
                }
                return Ok(respond(sent, &up, ex, in_flight));
            }
            Err((err, back)) => {
                ex.phase("upstream attempt failed", tried, Instant::now());
                let resendable = back.is_some() || template.is_some();
                let e = attempt_failed(svc, &set, i, err, up.timeout);
                if may_retry(svc, &e, resendable, can_retry) {
                    avoid = Some(i);
                    pending = back;
                    continue;
                }
                ex.endpoint = Some(in_flight);
                return Err(e);
            }
        }
    }
}

/// Records an answer for outlier detection. Returns false when the answer's status is to be
/// retried (and the budget allows it).
fn record(svc: &Service, set: &EndpointSet, i: usize, status: StatusCode, may_retry: bool) -> bool {
    if svc.failure_statuses.contains(&status.as_u16()) {
        svc.on_failure(set, i);
    } else {
        set.endpoints[i].state.on_success();
    }
    if may_retry && svc.retry_statuses.contains(&status.as_u16()) && svc.budget.try_retry() {
        svc.stats.retries.inc();
        return false;
    }
    true
}

/// A failed attempt on endpoint `i`: the error it becomes, counted against the endpoint
/// when it says the endpoint is unwell (answers about the request do not).
fn attempt_failed(
    svc: &Service,
    set: &EndpointSet,
    i: usize,
    err: SendError,
    timeout: std::time::Duration,
) -> ProxyError {
    let e = send_error(err, svc, &set.endpoints[i].label, timeout);
    if e.kind.counts_against_endpoint() {
        svc.on_failure(set, i);
    }
    e
}

/// The retry decision, made by the error: it may be retried ([`ProxyError::retry`]), the
/// request can still be sent (`resendable`), the service has attempts left and its retry
/// budget allows one more.
fn may_retry(svc: &Service, e: &ProxyError, resendable: bool, attempts_left: bool) -> bool {
    if e.retry && resendable && attempts_left && svc.budget.try_retry() {
        svc.stats.retries.inc();
        return true;
    }
    false
}

/// Step `respond`: the upstream's response, cleaned and edited, streaming its body.
fn respond(
    sent: client::Sent,
    up: &Upstream<'_>,
    ex: &mut Exchange,
    in_flight: InFlight,
) -> Response<ResponseBody> {
    up.svc.stats.latency.observe(sent.elapsed.as_secs_f64());
    ex.upstream_time = Some(sent.elapsed);
    if let Some(connected) = sent.connected {
        ex.phase("upstream connect", Some(sent.started), connected);
        ex.phase(
            "upstream response",
            Some(connected),
            sent.started + sent.elapsed,
        );
    }
    ex.endpoint = Some(in_flight);
    let client::Sent { mut head, body, .. } = sent;
    let switching = head.status == StatusCode::SWITCHING_PROTOCOLS;
    // The client's connection has its own version; an HTTP/1.0 upstream must not turn
    // the client's keep-alive connection into a 1.0 one.
    head.version = Version::HTTP_11;
    if matches!(body, UpstreamBody::H2(_)) {
        // HTTP/1.1 responses were cleaned while parsing.
        headers::strip_hop_by_hop(&mut head.headers, switching);
    }
    headers::add_via(&mut head.headers, Version::HTTP_11);
    up.route.response_headers.apply(&mut head.headers);
    head.headers
        .insert(X_REQUEST_ID.clone(), up.request_id.clone());
    if switching {
        // The server that writes the 101 takes the upstream socket for the tunnel.
        if let UpstreamBody::H1(b) = body
            && let Some(upstream) = b.into_upgraded()
        {
            head.extensions
                .insert(Tunnel(Arc::new(std::sync::Mutex::new(Some(upstream)))));
        }
        return Response::from_parts(head, ResponseBody::empty());
    }
    Response::from_parts(head, ResponseBody::upstream(body, up.svc.body_idle_timeout))
}

/// The upstream side of an upgraded connection (its stream and bytes already read),
/// handed to the server that writes the 101 in the response's extensions.
#[derive(Clone, Debug)]
pub struct Tunnel(Arc<std::sync::Mutex<Option<(UpStream, bytes::Bytes)>>>);

impl Tunnel {
    /// Takes the upstream socket (once).
    pub fn take(&self) -> Option<(UpStream, bytes::Bytes)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

fn send_error(
    err: SendError,
    svc: &Service,
    endpoint: &str,
    timeout: std::time::Duration,
) -> ProxyError {
    let name = &svc.name;
    match err {
        // Nothing reached the upstream: the request may go to another endpoint.
        SendError::Connect(e) => ProxyError::new(
            ErrorKind::ConnectFailed,
            format!("cannot connect to service `{name}` endpoint {endpoint}: {e}"),
        )
        .retryable(),
        SendError::ConnectTimeout => ProxyError::new(
            ErrorKind::ConnectTimeout,
            format!(
                "connecting to service `{name}` endpoint {endpoint} timed out after {:?}",
                svc.connect_timeout
            ),
        )
        .retryable(),
        SendError::Timeout => {
            svc.stats.timeouts.inc();
            ProxyError::new(
                ErrorKind::UpstreamTimeout,
                format!("service `{name}` endpoint {endpoint} did not answer within {timeout:?}"),
            )
        }
        SendError::Reset { detail } => {
            svc.stats.failures.inc();
            ProxyError::new(
                ErrorKind::UpstreamReset,
                format!(
                    "service `{name}` endpoint {endpoint} closed the connection before answering ({detail})"
                ),
            )
        }
        SendError::StreamReset { detail } => {
            svc.stats.failures.inc();
            ProxyError::new(
                ErrorKind::StreamReset,
                format!(
                    "service `{name}` endpoint {endpoint} closed the connection before answering ({detail})"
                ),
            )
        }
        SendError::Invalid(what) => ProxyError::new(
            ErrorKind::UpstreamReset,
            format!("service `{name}` endpoint {endpoint} sent an invalid HTTP response: {what}"),
        ),
        SendError::BodyTooLarge(max) => ProxyError::new(
            ErrorKind::BodyTooLarge,
            format!("the request body is larger than the {max}-byte limit"),
        ),
        SendError::ClientBody => ProxyError::new(
            ErrorKind::ClientAborted,
            "the client stopped sending its request body",
        ),
        SendError::ClientStalled(after) => ProxyError::new(
            ErrorKind::RequestTimeout,
            format!("the request body stalled: no bytes for {after:?}"),
        ),
    }
}

fn set_h2_target(req: &mut Request<RequestBody>, host: &HeaderValue, pq: &PathAndQuery) {
    let authority = host.to_str().ok().and_then(|h| h.parse::<Authority>().ok());
    let b = Uri::builder()
        .scheme(Scheme::HTTP)
        .path_and_query(pq.clone())
        .authority(authority.unwrap_or_else(|| Authority::from_static("localhost")));
    if let Ok(uri) = b.build() {
        *req.uri_mut() = uri;
    }
    req.headers_mut().remove(HOST);
}

fn rebuild(t: &Template) -> Request<RequestBody> {
    let mut r = Request::new(RequestBody::Empty);
    *r.method_mut() = t.method.clone();
    *r.uri_mut() = t.uri.clone();
    *r.version_mut() = t.version;
    *r.headers_mut() = t.headers.clone();
    r
}

fn path_and_query(
    path: &str,
    query: Option<&str>,
    original: &Uri,
) -> Result<PathAndQuery, ProxyError> {
    if let Some(pq) = original.path_and_query()
        && pq.path() == path
    {
        return Ok(pq.clone());
    }
    let s = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    PathAndQuery::try_from(s).map_err(|_| {
        ProxyError::new(
            ErrorKind::BadRequest,
            "the rewritten path is not a valid URI path",
        )
    })
}

fn hash_key(on: &HashOn, h: &HeaderMap, peer: SocketAddr) -> Option<u64> {
    match on {
        HashOn::Header(name) => h.get(name.as_str()).map(|v| hash64(v.as_bytes(), 0)),
        HashOn::Cookie(name) => h.get_all(COOKIE).iter().find_map(|v| {
            v.to_str().ok()?.split(';').find_map(|kv| {
                let (k, val) = kv.trim().split_once('=')?;
                (k == name).then(|| hash64(val.as_bytes(), 0))
            })
        }),
        HashOn::ClientIp => Some(match peer.ip() {
            std::net::IpAddr::V4(ip) => hash64(&ip.octets(), 0),
            std::net::IpAddr::V6(ip) => hash64(&ip.octets(), 0),
        }),
    }
}

/// Joins several `cookie` fields into one, `; `-separated, for an HTTP/1.1 upstream (RFC 9113
/// section 8.2.3: HTTP/2 clients may send each cookie as its own field). Costs one lookup
/// when there is at most one.
fn join_cookies(h: &mut HeaderMap) {
    let mut values = h.get_all(COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in h.get_all(COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(COOKIE, v);
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}
