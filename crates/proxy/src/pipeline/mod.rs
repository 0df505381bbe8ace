//! The request path, as named phases over one per-request context ([`Ctx`]).
//!
//! Every request a listener hands over ([`handle`]) runs these phases, in this order. Each is
//! a small function over the context that goes on ([`Step::Next`]), answers now
//! ([`Step::Answer`]) or fails with a [`ProxyError`]; [`fail`] is the one place a failure
//! becomes a response (status, body, headers, log field, metrics), and [`finish`] the one
//! place every response passes on its way out.
//!
//! ```text
//!  accept ─► acme ─► route ─► cors ─► limits ─► ip ─► authenticate ─► throttle ─► act
//!  (host)     │        │        │                                                  │
//!             │        │        └ preflight: 204/403        ┌─────────────────────┤
//!             │        └ 404 no_route                        │ redirect  ─► answer │
//!             └ HTTP-01 challenge: answer                    │ fixed     ─► answer │
//!                                                            │ app       ─► answer │
//!                                                            │ forward:            │
//!                                                            │   choose upstream   │
//!                                                            │   connect + send  ◄─┤ retry (error says so)
//!                                                            │   respond           │
//!                                                            └─────────────────────┘
//!  any phase ──Err──► fail ──┐
//!  any answer ───────────────┴──► finish (CORS headers, 204 framing, metrics and the access
//!                                 log line when the body ends)
//! ```
//!
//! | phase | module | what it does |
//! |---|---|---|
//! | accept | [`accept`] | one host for the request (absolute form, `:authority`, userinfo); opens the log line |
//! | acme | [`route`] | an open HTTP-01 challenge answered before any route |
//! | route | [`route`] | host and path normalized, one route table lookup (a Try Out preflight by the method it asks for) |
//! | cors | [`cors`] | preflights answered; the origin whose answers get CORS headers |
//! | limits | [`admit`] | the route's header and declared body limits |
//! | ip | [`admit`] | the route's client address rules |
//! | authenticate | [`admit`] | API keys, JWTs; the caller's identity forwarded |
//! | throttle | [`admit`] | the route's tiers |
//! | act | [`action`] | redirect, fixed response, hosted app file, or forward |
//! | forward | [`forward`] | rewrite, choose upstream, connect and send (with retries), respond |
//!
//! A request loads its listener's runtime once and keeps it to the end: a reload never
//! changes the rules under a request already running. `docs/request-phases.md` describes
//! each phase's behaviour for users.

pub mod accept;
pub mod action;
pub mod admit;
pub mod cors;
pub mod forward;
pub mod route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use portico_model::ListenerProtocol;

use crate::auth::Caller;
use crate::body::{ClientBody, ResponseBody};
use crate::exchange::{ConnActivity, Exchange, Interim};
use crate::fault::{ProxyError, error_response};
use crate::headers;
use crate::runtime::{ListenerRuntime, Route};

pub use forward::Tunnel;

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

/// What a phase decided.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "returned in place; boxing would allocate for every answer the gateway gives itself"
)]
pub enum Step {
    /// Go on to the next phase.
    Next,
    /// Answer with this response now; later phases do not run.
    Answer(Response<ResponseBody>),
}

/// A phase's outcome: go on, answer now, or fail.
pub type Flow = Result<Step, ProxyError>;

/// The per-request context every phase reads and fills in.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The listener's compiled rules, loaded once for the whole request.
    pub lr: &'a ListenerRuntime,
    /// The client connection.
    pub conn: &'a Conn,
    /// The request's id (the client's `x-request-id` when usable, else a new one).
    pub request_id: HeaderValue,
    /// Its place in a trace: the caller's when it sent a valid `traceparent`, else new.
    pub trace: crate::trace::TraceContext,
    /// Whether errors are answered as gRPC statuses.
    pub grpc: bool,
    /// A `HEAD` request: answers carry no body.
    pub head: bool,
    /// The route, once the `route` phase found it.
    pub route: Option<&'a Route>,
    /// The normalized path, when normalizing changed it.
    pub normalized: Option<String>,
    /// The route was found for the method a Try Out preflight asks for.
    pub try_out_preflight: bool,
    /// The origin whose answers get CORS headers, with the portal's rule when it applies.
    pub cors: Option<CorsAnswer<'a>>,
    /// The authenticated caller, on routes that check credentials.
    pub caller: Option<Caller>,
    /// The caller's key is a sandbox key: the route's sandbox target serves it.
    pub sandbox: bool,
    /// Metrics and the access log line, completed when the response body ends.
    pub ex: Exchange,
}

/// The CORS headers a response gets (`cors` phase).
#[derive(Debug)]
pub struct CorsAnswer<'a> {
    /// The request's `Origin`.
    pub origin: HeaderValue,
    /// The developer portal's rule, when the origin is the portal's and the route a Try Out
    /// route.
    pub portal: Option<&'a crate::cors::CorsPolicy>,
}

impl<'a> Ctx<'a> {
    fn new(lr: &'a ListenerRuntime, conn: &'a Conn, req: &Request<ClientBody>) -> Self {
        let started = Instant::now();
        conn.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        conn.activity.started.fetch_add(1, Ordering::Relaxed);
        Self {
            lr,
            conn,
            request_id: headers::request_id(req.headers()),
            trace: crate::trace::TraceContext::from_headers(req.headers(), &lr.sampler),
            grpc: lr.protocol == ListenerProtocol::Grpc || is_grpc(req.headers()),
            head: req.method() == Method::HEAD,
            route: None,
            normalized: None,
            try_out_preflight: false,
            cors: None,
            caller: None,
            sandbox: false,
            ex: Exchange::new(started, Some(conn.activity.clone())),
        }
    }

    /// The route found by the `route` phase. Phases after it may rely on it.
    fn route(&self) -> Result<&'a Route, ProxyError> {
        self.route.ok_or_else(|| {
            ProxyError::new(
                crate::fault::ErrorKind::Internal,
                "a phase ran before the request was routed",
            )
        })
    }
}

/// Goes on to the next phase, or returns the phase's answer or failure.
macro_rules! phase {
    ($e:expr) => {
        match $e? {
            Step::Next => {}
            Step::Answer(r) => return Ok(r),
        }
    };
}

/// Runs a phase; on a traced request where `when` holds, its time is noted as `name`.
macro_rules! timed {
    ($cx:expr, $name:literal, $when:expr, $e:expr) => {{
        let from = if $when { $cx.ex.mark() } else { None };
        let flow = $e;
        if from.is_some() {
            $cx.ex.phase($name, from, Instant::now());
        }
        flow
    }};
}

/// Serves one request: the phases in order, then [`finish`].
pub async fn handle(
    lr: Arc<ListenerRuntime>,
    conn: &Conn,
    req: Request<ClientBody>,
) -> Response<ResponseBody> {
    let mut cx = Ctx::new(&lr, conn, &req);
    let resp = match run(&mut cx, req).await {
        Ok(r) => r,
        Err(e) => fail(&mut cx, &e),
    };
    finish(cx, resp)
}

/// The phases, in order.
async fn run(
    cx: &mut Ctx<'_>,
    mut req: Request<ClientBody>,
) -> Result<Response<ResponseBody>, ProxyError> {
    phase!(accept::accept(cx, &mut req));
    phase!(route::acme(cx, &req));
    phase!(timed!(cx, "route", true, route::route(cx, &req)));
    phase!(cors::cors(cx, &req));
    phase!(admit::limits(cx, &req));
    phase!(admit::ip(cx, &req));
    let route = cx.route;
    phase!(timed!(
        cx,
        "authenticate",
        route.is_some_and(|r| r.auth.is_some()),
        admit::authenticate(cx, &mut req)
    ));
    phase!(timed!(
        cx,
        "limit",
        route.is_some_and(|r| r.throttle.is_some()),
        admit::throttle(cx).await
    ));
    action::act(cx, req).await
}

/// The one place a failure becomes a response: the error's status, JSON body (or gRPC
/// status) and headers, the request id, the access log's `error` field; the metrics count
/// the status when the exchange completes.
pub fn fail(cx: &mut Ctx<'_>, err: &ProxyError) -> Response<ResponseBody> {
    if let Some(l) = &mut cx.ex.log {
        l.error = Some(err.kind.code());
    }
    if err.fault() == crate::fault::Fault::Internal {
        tracing::error!(request_id = ?cx.request_id, detail = %err.detail, "request failed inside the gateway");
    }
    let mut r = error_response(err, cx.grpc, Some(&cx.request_id));
    if cx.head {
        *r.body_mut() = ResponseBody::empty();
    }
    r
}

/// What every response passes on its way out, answered or failed: CORS headers for the
/// origin the `cors` phase accepted (errors included: a browser reads only answers that
/// carry them), no length on a 204, and the exchange attached to the body so the metrics
/// and the log line are written when it ends.
fn finish(mut cx: Ctx<'_>, mut resp: Response<ResponseBody>) -> Response<ResponseBody> {
    if let Some(c) = &cx.cors {
        cors::decorate(cx.route, c, resp.headers_mut());
    }
    if resp.status() == StatusCode::NO_CONTENT {
        // A 204 has no content and must not say how long it is (RFC 9110 section 8.6).
        resp.headers_mut().remove(CONTENT_LENGTH);
    }
    cx.ex.status = resp.status().as_u16();
    if cx.ex.stats.is_none() {
        cx.ex.stats = Some(cx.lr.unrouted.clone());
    }
    resp.body_mut().attach(cx.ex);
    resp
}

fn is_grpc(h: &HeaderMap) -> bool {
    h.get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The request's host: `Host`, made the one host by the `accept` phase.
fn host_of<B>(req: &Request<B>) -> &str {
    req.headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
}
