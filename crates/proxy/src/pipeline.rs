//! The request path, as named phases in order:
//! `route -> check_limits -> (redirect | fixed | forward: select_upstream -> send -> respond) -> log`.
//! A request loads its listener's runtime once and keeps it to the end.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, COOKIE, EXPECT, HOST, LOCATION};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use portico_model::{HashOn, ListenerProtocol};
use tokio::sync::oneshot;

use crate::body::{ClientBody, RequestBody, RequestStream, ResponseBody};
use crate::clock;
use crate::exchange::{ConnActivity, Exchange, InFlight, Interim, LogFields};
use crate::headers::{self, X_REQUEST_ID};
use crate::respond::{ErrorKind, ProxyError, error_response};
use crate::rewrite;
use crate::router;
use crate::runtime::{
    Action, Fixed, Forward, HostRewrite, ListenerRuntime, PathRewrite, Redirect, Route,
};
use crate::upstream::balance::{EndpointSet, hash64};
use crate::upstream::client::{self, SendError, UpstreamBody};
use crate::upstream::endpoint::Endpoint;
use crate::upstream::tls::UpStream;
use crate::upstream::{Service, h1};

/// A client connection as requests on it see it.
#[derive(Debug)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's IP as a header value, made once per connection.
    pub peer_ip: HeaderValue,
    /// `http`, or `https` once the connection is TLS.
    pub scheme: &'static str,
    /// Activity, for the idle timer.
    pub activity: Arc<ConnActivity>,
    /// Where interim (1xx) responses go, on connections that can send them (HTTP/1.1).
    pub interim: Option<Interim>,
    /// The port of the listener it came in on (0 when unknown).
    pub listener_port: u16,
}

impl Conn {
    /// A connection from `peer` over `scheme` (`http` or `https`).
    pub fn new(peer: SocketAddr, scheme: &'static str) -> Self {
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            peer,
            peer_ip,
            scheme,
            activity: Arc::new(ConnActivity::default()),
            interim: None,
            listener_port: 0,
        }
    }
}

/// Serves one request.
pub async fn handle(
    lr: Arc<ListenerRuntime>,
    conn: &Conn,
    mut req: Request<ClientBody>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    conn.activity.in_flight.fetch_add(1, Ordering::Relaxed);
    conn.activity.started.fetch_add(1, Ordering::Relaxed);
    let mut ex = Exchange::new(started, Some(conn.activity.clone()));
    let grpc = lr.protocol == ListenerProtocol::Grpc || is_grpc(req.headers());
    let request_id = headers::request_id(req.headers());
    // Before the log fields: a request is logged with the host it is routed by.
    let accepted = accept(&mut req);
    if let Some(sink) = &lr.access_log {
        ex.log = Some(Box::new(LogFields {
            sink: sink.clone(),
            client: conn.peer,
            listener: lr.name.clone(),
            method: req.method().clone(),
            host: host_of(&req).to_owned(),
            target: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
            version: req.version(),
            request_id: Some(request_id.clone()),
            route: None,
            service: None,
            consumer: None,
            error: None,
            attempts: 0,
        }));
    }
    let head = req.method() == Method::HEAD;
    let answer = match accepted {
        Ok(()) => proxy(&lr, conn, req, &mut ex, &request_id, grpc).await,
        Err(e) => Err(e),
    };
    let mut resp = match answer {
        Ok(r) => r,
        Err(e) => {
            if let Some(l) = &mut ex.log {
                l.error = Some(e.kind.code());
            }
            let mut r = error_response(&e, grpc, Some(&request_id));
            if head {
                *r.body_mut() = ResponseBody::empty();
            }
            r
        }
    };
    if resp.status() == StatusCode::NO_CONTENT {
        // A 204 has no content and must not say how long it is (RFC 9110 section 8.6).
        resp.headers_mut().remove(CONTENT_LENGTH);
    }
    ex.status = resp.status().as_u16();
    if ex.stats.is_none() {
        ex.stats = Some(lr.unrouted.clone());
    }
    resp.body_mut().attach(ex);
    resp
}

/// Phase `accept`: what makes a request malformed whatever its route.
fn accept(req: &mut Request<ClientBody>) -> Result<(), ProxyError> {
    canonical_host(req)
}

/// Makes `Host` the one host a request is routed, checked, logged and forwarded by. An
/// absolute-form target's authority replaces `Host` (RFC 9112 section 3.2.2); on HTTP/2 a
/// `host` that differs from `:authority` makes the request malformed (RFC 9113 section
/// 8.3.1). Userinfo in either, two `Host` fields, or none on HTTP/1.1 is refused.
fn canonical_host(req: &mut Request<ClientBody>) -> Result<(), ProxyError> {
    let bad = |what: &'static str| ProxyError::new(ErrorKind::BadRequest, what);
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("the request has more than one Host header"));
    }
    if host.is_some_and(|h| h.as_bytes().contains(&b'@')) {
        return Err(bad(
            "the Host header carries userinfo (`user@`), which is refused",
        ));
    }
    let Some(authority) = req.uri().authority() else {
        if host.is_none() && req.version() == Version::HTTP_11 {
            return Err(bad("an HTTP/1.1 request needs exactly one Host header"));
        }
        return Ok(());
    };
    let authority = authority.as_str();
    if authority.contains('@') {
        return Err(bad(
            "the request's authority carries userinfo (`user@`), which is refused",
        ));
    }
    match host {
        Some(h) if h.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) => return Ok(()),
        Some(_) if req.version() == Version::HTTP_2 => {
            return Err(bad(
                "the `host` header differs from `:authority` (RFC 9113 section 8.3.1)",
            ));
        }
        // HTTP/2 without `host`: `:authority` is the host ([`host_of`] reads it), no copy.
        None if req.version() == Version::HTTP_2 => return Ok(()),
        _ => {}
    }
    // HTTP/1.1 absolute form: the target's authority replaces `Host`.
    let value = HeaderValue::from_str(authority).map_err(|_| bad("bad authority"))?;
    req.headers_mut().insert(HOST, value);
    Ok(())
}

async fn proxy(
    lr: &ListenerRuntime,
    conn: &Conn,
    req: Request<ClientBody>,
    ex: &mut Exchange,
    request_id: &HeaderValue,
    grpc: bool,
) -> Result<Response<ResponseBody>, ProxyError> {
    if !lr.acme_http01.is_empty()
        && let Some(answer) = acme_http01(lr, &req)
    {
        return Ok(answer);
    }
    // The portal's Try Out preflight is routed by the method it asks for: it is answered
    // for the route the actual request will take, and only if that is a Try Out route.
    let try_out = try_out_preflight(lr, &req)
        .and_then(|m| route(lr, &req, &m, grpc).ok())
        .filter(|(id, _)| lr.routes[*id as usize].try_out);
    let try_out_preflight = try_out.is_some();
    let (id, normalized) = match try_out {
        Some(found) => found,
        None => route(lr, &req, req.method(), grpc)?,
    };
    let route = &lr.routes[id as usize];
    ex.stats = Some(route.stats.clone());
    if let Some(l) = &mut ex.log {
        l.route = Some(route.name.clone());
    }
    let portal = lr.portal.as_deref().filter(|_| route.try_out);
    // Requests without `Origin`, and routes without a policy, pass with no more than a
    // header lookup: nothing is allocated or locked for them.
    let origin = match (&route.cors, portal) {
        (None, None) => None,
        _ => req.headers().get(http::header::ORIGIN),
    };
    let portal = portal.filter(|p| origin.is_some_and(|o| p.allows(o)));
    let Some(origin) = origin.filter(|_| route.cors.is_some() || portal.is_some()) else {
        check_limits(lr, route, &req)?;
        return serve_route(lr, route, conn, req, normalized, ex, request_id).await;
    };
    // Phase `cors`: preflights are answered here, before credentials are asked for.
    if crate::cors::CorsPolicy::is_preflight(req.method(), req.headers()) {
        check_limits(lr, route, &req)?;
        if let Some(p) = portal.filter(|_| try_out_preflight) {
            // The API's own answer when it allows all that is asked, else the portal's.
            if let Some(Ok(own)) = route.cors.as_ref().map(|c| c.preflight(req.headers())) {
                return Ok(own);
            }
            return p.preflight(req.headers());
        }
        if let Some(cors) = &route.cors {
            return cors.preflight(req.headers());
        }
    }
    let origin = origin.clone();
    let head = req.method() == Method::HEAD;
    // A browser can read only answers that carry CORS headers, errors included.
    let answer = match check_limits(lr, route, &req) {
        Ok(()) => serve_route(lr, route, conn, req, normalized, ex, request_id).await,
        Err(e) => Err(e),
    };
    let mut resp = match answer {
        Ok(r) => r,
        Err(e) => {
            if let Some(l) = &mut ex.log {
                l.error = Some(e.kind.code());
            }
            let mut r = error_response(&e, grpc, Some(request_id));
            if head {
                *r.body_mut() = ResponseBody::empty();
            }
            r
        }
    };
    if let Some(cors) = &route.cors {
        cors.decorate(&origin, resp.headers_mut());
    }
    if let Some(p) = portal {
        // After the API's own policy: the portal's rule adds to what it set.
        p.decorate(&origin, resp.headers_mut());
    }
    Ok(resp)
}

/// The method a CORS preflight from the developer portal's origin asks for, when the
/// listener answers the portal's Try Out. Costs a pointer test on requests that are not
/// `OPTIONS` or when no portal is set.
fn try_out_preflight(lr: &ListenerRuntime, req: &Request<ClientBody>) -> Option<Method> {
    let portal = lr.portal.as_deref()?;
    if req.method() != Method::OPTIONS {
        return None;
    }
    let h = req.headers();
    if !portal.allows(h.get(http::header::ORIGIN)?) {
        return None;
    }
    Method::from_bytes(
        h.get(http::header::ACCESS_CONTROL_REQUEST_METHOD)?
            .as_bytes(),
    )
    .ok()
}

/// An ACME CA's HTTP-01 validation request, answered before any route (a redirect to
/// HTTPS or a catch-all route must not hide it).
fn acme_http01(lr: &ListenerRuntime, req: &Request<ClientBody>) -> Option<Response<ResponseBody>> {
    let token = req
        .uri()
        .path()
        .strip_prefix(portico_model::acme::HTTP01_PREFIX)?;
    let answer = lr.acme_http01.get(token)?;
    let mut resp = Response::new(ResponseBody::full(answer.clone()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Some(resp)
}

/// Phases after routing: `authenticate -> (redirect | fixed | app | forward)`.
async fn serve_route(
    lr: &ListenerRuntime,
    route: &Route,
    conn: &Conn,
    req: Request<ClientBody>,
    normalized: Option<String>,
    ex: &mut Exchange,
    request_id: &HeaderValue,
) -> Result<Response<ResponseBody>, ProxyError> {
    if let Some(rules) = &route.ip {
        // Phase `ip`.
        rules.check(crate::ip::client_ip(
            conn.peer.ip(),
            req.headers(),
            &lr.trusted_proxies,
        ))?;
    }
    let mut req = req;
    let mut sandbox = false;
    let mut caller = None;
    if let Some(policy) = &route.auth {
        // Phase `authenticate`.
        let c = crate::auth::authenticate(
            &lr.security,
            policy,
            req.headers(),
            req.uri().query(),
            clock::unix_secs(),
        )?;
        sandbox = c.key_type == portico_model::KeyType::Sandbox;
        crate::auth::forward_identity(policy, &c, req.headers_mut());
        if let Some(l) = &mut ex.log {
            l.consumer = Some(c.consumer.clone());
        }
        caller = Some(c);
    } else {
        // Only the gateway says who called.
        req.headers_mut().remove(&crate::auth::X_CONSUMER);
        req.headers_mut().remove(&crate::auth::X_KEY_TYPE);
    }
    if let Some(t) = &route.throttle {
        // Phase `throttle`.
        lr.security
            .throttle(t, caller.as_ref(), clock::now_ns())
            .await?;
    }
    let mut resp = match &route.action {
        Action::Redirect(r) => redirect(r, route, &req, normalized.as_deref(), conn),
        Action::Fixed(f) => fixed(f, req.method() == Method::HEAD),
        Action::App(app) => {
            let path = normalized.as_deref().unwrap_or(req.uri().path());
            let cut = route.prefix_len.unwrap_or(0).min(path.len());
            let (root, rest) = path.split_at(cut);
            let root = root.trim_end_matches('/');
            app.serve(req.method(), root, rest, req.uri().query(), req.headers())
                .await
        }
        Action::Forward(f) => {
            let f = match (&route.sandbox, sandbox) {
                (Some(s), true) => s,
                _ => f,
            };
            return forward(f, route, conn, req, normalized, ex, request_id).await;
        }
    };
    route.response_headers.apply(resp.headers_mut());
    resp.headers_mut()
        .insert(X_REQUEST_ID.clone(), request_id.clone());
    Ok(resp)
}

/// Phase `route`: normalize host and path, find the route for `method` (the request's,
/// or the one a Try Out preflight asks for).
fn route(
    lr: &ListenerRuntime,
    req: &Request<ClientBody>,
    method: &Method,
    grpc: bool,
) -> Result<(u32, Option<String>), ProxyError> {
    let host = rewrite::normalize_host(host_of(req));
    let path = req.uri().path();
    if path == "*" && method != Method::OPTIONS {
        // The asterisk-form belongs to OPTIONS alone (RFC 9112 section 3.2.4).
        return Err(ProxyError::new(
            ErrorKind::BadRequest,
            "only OPTIONS may have `*` as its target",
        ));
    }
    let normalized = rewrite::normalize_path(path).map_err(|e| {
        ProxyError::new(
            ErrorKind::BadRequest,
            match e {
                rewrite::PathError::BadPercentEncoding => {
                    "the path has a `%` that is not followed by two hex digits"
                }
                rewrite::PathError::AboveRoot => "the path climbs above the root with `..`",
            },
        )
    })?;
    let rreq = router::Request {
        host: &host,
        path: &normalized,
        method,
        headers: req.headers(),
        query: req.uri().query(),
        grpc,
    };
    match lr.router.lookup(&rreq) {
        Some(id) => Ok((
            id,
            match normalized {
                Cow::Owned(s) => Some(s),
                Cow::Borrowed(_) => None,
            },
        )),
        None => Err(ProxyError::new(
            ErrorKind::NoRoute,
            format!(
                "no route for {} {}{}",
                method,
                host,
                truncate(&normalized, 200)
            ),
        )),
    }
}

/// Phase `check_limits`: the route's header and body limits (the listener's header limit
/// is enforced while parsing).
fn check_limits(
    lr: &ListenerRuntime,
    route: &Route,
    req: &Request<ClientBody>,
) -> Result<(), ProxyError> {
    // The listener's limit is enforced while parsing (exactly by the HTTP/1.1 server, plain
    // and TLS; by hyper's header list size on HTTP/2): only a smaller route limit is left.
    if route.max_header < lr.max_header {
        let size: usize = req.uri().path_and_query().map_or(1, |p| p.as_str().len())
            + req.method().as_str().len()
            + req
                .headers()
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if size as u64 > route.max_header {
            return Err(ProxyError::new(
                ErrorKind::HeadersTooLarge,
                format!(
                    "the request headers are {size} bytes; this route takes at most {}",
                    route.max_header
                ),
            ));
        }
    }
    if let Some(max) = route.max_body {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(ProxyError::new(
                ErrorKind::BodyTooLarge,
                format!(
                    "the request body is {} bytes; this route takes at most {max}",
                    declared.unwrap_or(0)
                ),
            ));
        }
    }
    Ok(())
}

fn redirect(
    r: &Redirect,
    route: &Route,
    req: &Request<ClientBody>,
    normalized: Option<&str>,
    conn: &Conn,
) -> Response<ResponseBody> {
    let raw_host = host_of(req);
    let (req_host, req_port) = split_port(raw_host);
    let scheme = r.scheme.as_deref().unwrap_or(conn.scheme);
    let host = r.host.as_deref().unwrap_or(req_host);
    // The Gateway API's rules: a given port wins; a scheme change goes to that scheme's
    // default port; otherwise the port stays: the one the client used, else the listener's.
    let port = match r.port {
        Some(p) => Some(p),
        None if scheme != conn.scheme => None,
        None => req_port.or((conn.listener_port != 0).then_some(conn.listener_port)),
    };
    let path = normalized.unwrap_or(req.uri().path());
    let path: Cow<str> = match &r.path {
        PathRewrite::Keep => Cow::Borrowed(path),
        PathRewrite::Full(p) => Cow::Borrowed(p),
        PathRewrite::Prefix(v) => Cow::Owned(rewrite::replace_prefix(
            path,
            route.prefix_len.unwrap_or(0),
            v,
        )),
    };
    let mut location = format!("{scheme}://{host}");
    if let Some(p) = port
        && !((scheme == "http" && p == 80) || (scheme == "https" && p == 443))
    {
        location.push_str(&format!(":{p}"));
    }
    location.push_str(&path);
    if let Some(q) = req.uri().query() {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = r.status;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

fn fixed(f: &Fixed, head: bool) -> Response<ResponseBody> {
    let mut resp = Response::new(if head {
        ResponseBody::empty()
    } else {
        ResponseBody::full(f.body.clone())
    });
    *resp.status_mut() = f.status;
    let h = resp.headers_mut();
    for (k, v) in &f.headers {
        h.append(k.clone(), v.clone());
    }
    if !f.body.is_empty() && !h.contains_key(CONTENT_TYPE) {
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from(f.body.len()));
    resp
}

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

/// Phases `select_upstream -> send -> respond` with retries.
async fn forward(
    f: &Forward,
    route: &Route,
    conn: &Conn,
    req: Request<ClientBody>,
    normalized: Option<String>,
    ex: &mut Exchange,
    request_id: &HeaderValue,
) -> Result<Response<ResponseBody>, ProxyError> {
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

/// Picks an endpoint for an attempt.
fn select_upstream(
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
        attempts += 1;
        if let Some(l) = &mut ex.log {
            l.attempts = attempts;
        }
        let (set, i) = select_upstream(&up, avoid)?;
        let ep = set.endpoints[i].clone();
        let in_flight = InFlight::new(ep.clone());
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
        };
        let b = body.take().unwrap_or(RequestBody::Empty);
        let can_retry = attempts <= svc.retry_attempts;
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
                let retryable = err_retryable(svc, &set, i, &err, back.is_some() || replayable);
                if retryable && can_retry && svc.budget.try_retry() {
                    svc.stats.retries.inc();
                    avoid = Some(i);
                    body = back;
                    continue;
                }
                ex.endpoint = Some(in_flight);
                return Err(send_error(err, svc, &ep.label, up.timeout));
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
        attempts += 1;
        if let Some(l) = &mut ex.log {
            l.attempts = attempts;
        }
        let (set, i) = select_upstream(&up, avoid)?;
        let ep = set.endpoints[i].clone();
        let in_flight = InFlight::new(ep.clone());
        let mut req = match (pending.take(), &template) {
            (Some(r), _) => r,
            (None, Some(t)) => rebuild(t),
            (None, None) => {
                return Err(ProxyError::new(
                    ErrorKind::UpstreamReset,
                    "the request cannot be sent again",
                ));
            }
        };
        set_h2_target(&mut req, host_for(&up, &ep), &up.pq);
        let can_retry = attempts <= svc.retry_attempts;
        match client::send_h2(svc, &ep, req, up.timeout, &mut up.body_done).await {
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
                let retryable =
                    err_retryable(svc, &set, i, &err, back.is_some() || template.is_some());
                if retryable && can_retry && svc.budget.try_retry() {
                    svc.stats.retries.inc();
                    avoid = Some(i);
                    pending = back;
                    continue;
                }
                ex.endpoint = Some(in_flight);
                return Err(send_error(err, svc, &ep.label, up.timeout));
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

/// Records a failed attempt; true when it may be retried (`resendable`: the request can
/// still be sent).
fn err_retryable(
    svc: &Service,
    set: &EndpointSet,
    i: usize,
    err: &SendError,
    resendable: bool,
) -> bool {
    // Only what says the endpoint is unwell counts; answers about the request do not.
    if !matches!(
        err,
        SendError::BodyTooLarge(_)
            | SendError::ClientBody
            | SendError::ClientStalled(_)
            | SendError::StreamReset { .. }
    ) {
        svc.on_failure(set, i);
    }
    matches!(err, SendError::Connect(_) | SendError::ConnectTimeout) && resendable
}

/// Phase `respond`: the upstream's response, cleaned and edited, streaming its body.
fn respond(
    sent: client::Sent,
    up: &Upstream<'_>,
    ex: &mut Exchange,
    in_flight: InFlight,
) -> Response<ResponseBody> {
    up.svc.stats.latency.observe(sent.elapsed.as_secs_f64());
    ex.upstream_time = Some(sent.elapsed);
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
        SendError::Connect(e) => ProxyError::new(
            ErrorKind::ConnectFailed,
            format!("cannot connect to service `{name}` endpoint {endpoint}: {e}"),
        ),
        SendError::ConnectTimeout => ProxyError::new(
            ErrorKind::ConnectTimeout,
            format!(
                "connecting to service `{name}` endpoint {endpoint} timed out after {:?}",
                svc.connect_timeout
            ),
        ),
        SendError::Timeout => {
            svc.stats.timeouts.inc();
            ProxyError::new(
                ErrorKind::UpstreamTimeout,
                format!("service `{name}` endpoint {endpoint} did not answer within {timeout:?}"),
            )
        }
        SendError::Reset { detail } | SendError::StreamReset { detail } => {
            svc.stats.failures.inc();
            ProxyError::new(
                ErrorKind::UpstreamReset,
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

fn is_grpc(h: &HeaderMap) -> bool {
    h.get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The request's host: `Host`, made the one host by [`canonical_host`].
fn host_of<B>(req: &Request<B>) -> &str {
    req.headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
}

fn split_port(host: &str) -> (&str, Option<u16>) {
    if host.starts_with('[') {
        return match host.rfind("]:") {
            Some(i) => (&host[..=i], host[i + 2..].parse().ok()),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (host, None),
        },
        None => (host, None),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
