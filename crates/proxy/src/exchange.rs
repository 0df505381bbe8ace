//! One request/response exchange as it is logged and measured. Completed exactly once, when
//! the response body ends or is dropped.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use http::{HeaderValue, Method, Version};

use crate::access_log::{AccessLog, json_str, now_rfc3339};
use crate::metrics::RouteStats;
use crate::upstream::endpoint::Endpoint;

/// Counts a request in flight on an endpoint for as long as it lives.
#[derive(Debug)]
pub struct InFlight(pub Arc<Endpoint>);

impl InFlight {
    /// Starts counting.
    pub fn new(ep: Arc<Endpoint>) -> Self {
        ep.state.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(ep)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per-connection activity, read by the idle timer.
#[derive(Debug, Default)]
pub struct ConnActivity {
    /// Requests in flight on the connection.
    pub in_flight: AtomicU32,
    /// Requests started, so the idle timer can see that something happened.
    pub started: AtomicU64,
}

/// Interim (1xx) responses of an HTTP/1.1 upstream on their way to the client connection,
/// whose task writes them while the final response is awaited. Inline in the connection: no
/// allocation unless a 1xx arrives, and the waiting side takes no lock until one has.
#[derive(Debug, Default)]
pub struct Interim {
    heads: Mutex<VecDeque<http::response::Parts>>,
    /// Set (under the lock) while `heads` holds something.
    ready: AtomicBool,
    waker: AtomicWaker,
}

/// Interim responses held for one request at most; more are dropped (they are advisory, and
/// an upstream must not make the gateway hold unbounded memory for a slow client).
const MAX_INTERIM: usize = 8;

impl Interim {
    /// Queues an interim response for the client.
    pub fn push(&self, head: http::response::Parts) {
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        if heads.len() < MAX_INTERIM {
            heads.push_back(head);
            self.ready.store(true, Ordering::Release);
        }
        drop(heads);
        self.waker.wake();
    }

    /// The next queued interim response, without waiting.
    pub fn take(&self) -> Option<http::response::Parts> {
        if !self.ready.load(Ordering::Acquire) {
            return None;
        }
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        let head = heads.pop_front();
        if heads.is_empty() {
            self.ready.store(false, Ordering::Release);
        }
        head
    }

    /// Waits for the next interim response.
    pub fn poll_next(&self, cx: &mut std::task::Context<'_>) -> Poll<http::response::Parts> {
        // Registered before looking, so a push in between still wakes this task.
        self.waker.register(cx.waker());
        match self.take() {
            Some(head) => Poll::Ready(head),
            None => Poll::Pending,
        }
    }
}

/// What the access log records beyond the metrics.
#[derive(Debug)]
pub struct LogFields {
    /// Where lines go, when the access log is on (the fields also make a request's span).
    pub sink: Option<Arc<AccessLog>>,
    /// Client address.
    pub client: SocketAddr,
    /// Listener name.
    pub listener: Arc<str>,
    /// Method.
    pub method: Method,
    /// Host as the client sent it.
    pub host: String,
    /// Path and query as the client sent them.
    pub target: String,
    /// HTTP version.
    pub version: Version,
    /// Request id.
    pub request_id: Option<HeaderValue>,
    /// The trace and this gateway's span in it.
    pub trace: Option<([u8; 16], [u8; 8])>,
    /// Route name.
    pub route: Option<Arc<str>>,
    /// Service name.
    pub service: Option<Arc<str>>,
    /// The authenticated consumer, on routes that check credentials.
    pub consumer: Option<http::HeaderValue>,
    /// Why the gateway answered itself, when it did.
    pub error: Option<&'static str>,
    /// Upstream attempts made.
    pub attempts: u32,
}

/// An exchange being served.
#[derive(Debug)]
pub struct Exchange {
    /// When the request arrived.
    pub started: Instant,
    /// Response status.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Request body bytes read, when there is a body.
    pub bytes_in: Option<Arc<AtomicU64>>,
    /// Time from sending upstream to the response headers.
    pub upstream_time: Option<Duration>,
    /// Metrics of the route and target.
    pub stats: Option<Arc<RouteStats>>,
    /// The endpoint that answered, counted in flight until the end.
    pub endpoint: Option<InFlight>,
    /// The service's connection pool slot this request holds until the end.
    pub pool_slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The client connection's activity.
    pub conn: Option<Arc<ConnActivity>>,
    /// Access log fields, when the log is on or the request's span is recorded.
    pub log: Option<Box<LogFields>>,
    /// The request's span, when its trace is recorded and exported.
    pub span: Option<Box<SpanStart>>,
    done: bool,
}

/// What a request's span needs besides its log fields.
#[derive(Debug)]
pub struct SpanStart {
    /// Where it goes.
    pub tracer: Arc<portico_otlp::Exporter>,
    /// The caller's span.
    pub parent_id: Option<[u8; 8]>,
    /// The caller's `tracestate`.
    pub trace_state: String,
    /// When the request arrived, Unix nanoseconds.
    pub start: u64,
    /// The phases that took time, each a child span.
    pub phases: Vec<portico_otlp::Phase>,
}

/// A request span's name, attributes and error, on the export thread.
fn describe(
    d: &mut portico_otlp::SpanData,
    l: LogFields,
    status: u16,
    upstream: Option<Arc<str>>,
    upstream_time: Option<Duration>,
    complete: bool,
) {
    use portico_otlp::Value;
    d.name = match &l.route {
        Some(r) => format!("{} {r}", l.method),
        None => l.method.to_string(),
    };
    let attributes = &mut d.attributes;
    attributes.reserve(16);
    attributes.extend([
        ("http.request.method", method_value(&l.method)),
        ("url.path", Value::Str(l.target)),
        ("server.address", Value::Str(l.host)),
        ("client.address", Value::Ip(l.client.ip())),
        (
            "network.protocol.version",
            Value::Static(match l.version {
                http::Version::HTTP_10 => "1.0",
                http::Version::HTTP_2 => "2",
                http::Version::HTTP_3 => "3",
                _ => "1.1",
            }),
        ),
        ("http.response.status_code", Value::Int(i64::from(status))),
        ("portico.listener", Value::Shared(l.listener)),
    ]);
    if let Some(r) = l.route {
        attributes.push(("http.route", Value::Shared(r)));
    }
    if let Some(svc) = l.service {
        attributes.push(("portico.service", Value::Shared(svc)));
    }
    if let Some(e) = upstream {
        attributes.push(("portico.upstream.address", Value::Shared(e)));
    }
    if l.attempts > 1 {
        attributes.push((
            "http.request.resend_count",
            Value::Int(i64::from(l.attempts - 1)),
        ));
    }
    if let Some(c) = l.consumer.as_ref().and_then(|c| c.to_str().ok()) {
        attributes.push(("portico.consumer", Value::Str(c.to_owned())));
    }
    let error = match (l.error, status) {
        (Some(e), _) => Some(e.to_owned()),
        (None, s) if s >= 500 => Some(s.to_string()),
        _ if !complete => Some("response_incomplete".to_owned()),
        _ => None,
    };
    if let Some(e) = &error {
        attributes.push(("error.type", Value::Str(e.clone())));
    }
    if let Some(t) = upstream_time {
        // From sending upstream to its response headers.
        attributes.push((
            "portico.upstream.duration_us",
            Value::Int(t.as_micros() as i64),
        ));
    }
    d.error = error;
}

/// A method as an attribute: the standard ones without a copy.
fn method_value(m: &Method) -> portico_otlp::Value {
    use portico_otlp::Value;
    Value::Static(match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return Value::Str(m.as_str().to_owned()),
    })
}

/// Now, in Unix nanoseconds.
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Exchange {
    /// Now, when the request is traced: the start of a phase for [`Exchange::phase`].
    pub fn mark(&self) -> Option<Instant> {
        self.span.as_ref().map(|_| Instant::now())
    }

    /// Notes the phase `name` of a traced request, from `from` to `to`.
    pub fn phase(&mut self, name: &'static str, from: Option<Instant>, to: Instant) {
        if let (Some(s), Some(from)) = (&mut self.span, from) {
            let at =
                |t: Instant| s.start + t.saturating_duration_since(self.started).as_nanos() as u64;
            let (start, end) = (at(from), at(to));
            s.phases.push(portico_otlp::Phase { name, start, end });
        }
    }

    /// A new exchange for a request that arrived at `started`.
    pub fn new(started: Instant, conn: Option<Arc<ConnActivity>>) -> Self {
        Self {
            started,
            status: 0,
            bytes_out: 0,
            bytes_in: None,
            upstream_time: None,
            stats: None,
            endpoint: None,
            pool_slot: None,
            conn,
            log: None,
            span: None,
            done: false,
        }
    }

    /// Records metrics and writes the log line; `complete` is false when the response was cut short.
    pub fn finish(&mut self, complete: bool) {
        if self.done {
            return;
        }
        self.done = true;
        let elapsed = self.started.elapsed();
        if let Some(stats) = &self.stats {
            stats.record(self.status, elapsed.as_secs_f64());
        }
        if let Some(conn) = &self.conn {
            conn.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(log) = self.log.take() {
            if let Some(sink) = &log.sink {
                sink.write(self.line(&log, elapsed, complete));
            }
            if let Some(span) = self.span.take() {
                let tracer = span.tracer.clone();
                tracer.record(self.span(log, *span, complete));
            }
        }
        self.endpoint = None;
    }

    /// The request's span: OpenTelemetry HTTP server attributes, and the error kind when
    /// the gateway answered itself or the response was cut short. Ids, times and phases
    /// are set here; the name and attributes are made by the export thread from the log
    /// fields, which are handed over whole (the log line is written already).
    fn span(&self, l: Box<LogFields>, s: SpanStart, complete: bool) -> portico_otlp::SpanData {
        let (trace_id, span_id) = l.trace.unwrap_or_default();
        let status = self.status;
        let upstream = self.endpoint.as_ref().map(|e| e.0.label.clone());
        let upstream_time = self.upstream_time;
        let describe = move |d: &mut portico_otlp::SpanData| {
            describe(d, *l, status, upstream, upstream_time, complete);
        };
        portico_otlp::SpanData {
            trace_id,
            span_id,
            parent_id: s.parent_id,
            trace_state: s.trace_state,
            name: String::new(),
            kind: portico_otlp::Kind::Server,
            start: s.start,
            end: unix_nanos(),
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            phases: s.phases,
            error: None,
            deferred: Some(portico_otlp::Deferred(Box::new(describe))),
        }
    }

    fn line(&self, l: &LogFields, elapsed: Duration, complete: bool) -> String {
        let mut s = String::with_capacity(384);
        s.push_str("{\"time\":\"");
        s.push_str(&now_rfc3339());
        s.push_str("\",\"client\":\"");
        let _ = write!(s, "{}", l.client.ip());
        s.push_str("\",\"listener\":");
        json_str(&mut s, &l.listener);
        s.push_str(",\"method\":");
        json_str(&mut s, l.method.as_str());
        s.push_str(",\"host\":");
        json_str(&mut s, &l.host);
        s.push_str(",\"path\":");
        json_str(&mut s, &l.target);
        let _ = write!(
            s,
            ",\"protocol\":\"{:?}\",\"status\":{}",
            l.version, self.status
        );
        s.push_str(",\"route\":");
        opt(&mut s, l.route.as_deref());
        s.push_str(",\"service\":");
        opt(&mut s, l.service.as_deref());
        s.push_str(",\"consumer\":");
        opt(&mut s, l.consumer.as_ref().and_then(|v| v.to_str().ok()));
        s.push_str(",\"endpoint\":");
        opt(&mut s, self.endpoint.as_ref().map(|e| &*e.0.label));
        let bytes_in = self
            .bytes_in
            .as_ref()
            .map_or(0, |b| b.load(Ordering::Relaxed));
        let _ = write!(
            s,
            ",\"bytes_in\":{bytes_in},\"bytes_out\":{},\"duration_ms\":{:.3}",
            self.bytes_out,
            elapsed.as_secs_f64() * 1000.0
        );
        match self.upstream_time {
            Some(t) => {
                let _ = write!(s, ",\"upstream_ms\":{:.3}", t.as_secs_f64() * 1000.0);
            }
            None => s.push_str(",\"upstream_ms\":null"),
        }
        let _ = write!(s, ",\"attempts\":{},\"complete\":{complete}", l.attempts);
        s.push_str(",\"request_id\":");
        opt(&mut s, l.request_id.as_ref().and_then(|v| v.to_str().ok()));
        match &l.trace {
            Some((trace, span)) => {
                s.push_str(",\"trace_id\":\"");
                crate::trace::push_hex(&mut s, trace);
                s.push_str("\",\"span_id\":\"");
                crate::trace::push_hex(&mut s, span);
                s.push('"');
            }
            None => s.push_str(",\"trace_id\":null,\"span_id\":null"),
        }
        s.push_str(",\"error\":");
        opt(&mut s, l.error);
        s.push_str("}\n");
        s
    }
}

fn opt(s: &mut String, v: Option<&str>) {
    match v {
        Some(v) => json_str(s, v),
        None => s.push_str("null"),
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.finish(false);
    }
}
