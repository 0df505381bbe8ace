//! The control plane's traces, sent over OTLP when `portico server --otlp-endpoint` is set:
//!
//! - a server span per request to the admin API, the console and the portal
//!   ([`traced`]), continuing the caller's W3C `traceparent`;
//! - a `deploy` span for every write that moves gateways' snapshots, a child of the
//!   request that made it. Its context is stored with the snapshot versions it made
//!   (`snapshots.trace`) and sent to the nodes with them ([`DEPLOY_TRACE`]), so that each
//!   node's apply is recorded as its child, in the same trace.
//!
//! Gateway nodes' sync long-polls, reports and app-file fetches are not traced: ten
//! thousand nodes would fill a trace store with spans that say "waited".

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use portico_otlp::context::{Sampler, TraceContext, new_span_id, push_hex};
use portico_otlp::{Exporter, Kind, SpanData, Value};

use crate::ControlPlane;

pub use portico_otlp::context::DEPLOY_TRACE;

/// Where the control plane's spans go, and which requests' traces it records.
#[derive(Clone, Debug)]
pub struct Tracing {
    /// The exporter (a bounded queue; never waits).
    pub exporter: Arc<Exporter>,
    /// Which traces are recorded.
    pub sampler: Sampler,
}

/// The traced request a task runs for: its trace, its span, where spans go.
#[derive(Clone, Debug)]
pub(crate) struct Current {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    pub(crate) exporter: Arc<Exporter>,
}

tokio::task_local! {
    /// Set by [`traced`] for the whole of a sampled request.
    static CURRENT: Current;
}

/// The traced request this task runs for, if any.
pub(crate) fn current() -> Option<Current> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Now, in Unix nanoseconds.
pub(crate) fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A `traceparent` value: version 00, sampled.
pub(crate) fn traceparent(trace_id: &[u8; 16], span_id: &[u8; 8]) -> String {
    let mut s = String::with_capacity(55);
    s.push_str("00-");
    push_hex(&mut s, trace_id);
    s.push('-');
    push_hex(&mut s, span_id);
    s.push_str("-01");
    s
}

/// Whether requests to `path` are left untraced: nodes' sync traffic, health checks and
/// the pages' style sheet and script.
fn untraced(path: &str) -> bool {
    path.starts_with("/api/v1/sync/") || path.starts_with("/static/") || path == "/healthz"
}

/// Middleware: one server span per sampled request, named by its method and route
/// template (`POST /api/v1/apis/{id}/deployments`); what it writes runs inside it.
pub(crate) async fn traced(
    State(st): State<Arc<ControlPlane>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(t) = &st.config.tracing else {
        return next.run(req).await;
    };
    if untraced(req.uri().path()) {
        return next.run(req).await;
    }
    let cx = TraceContext::from_headers(req.headers(), &t.sampler);
    if !cx.sampled {
        return next.run(req).await;
    }
    let start = unix_nanos();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let current = Current {
        trace_id: cx.trace_id,
        span_id: cx.span_id,
        exporter: t.exporter.clone(),
    };
    let resp = CURRENT.scope(current, next.run(req)).await;
    let status = resp.status().as_u16();
    let mut attributes = vec![
        ("http.request.method", Value::Str(method.to_string())),
        ("url.path", Value::Str(path)),
        ("http.response.status_code", Value::Int(i64::from(status))),
    ];
    let error = (status >= 500).then(|| status.to_string());
    if let Some(e) = &error {
        attributes.push(("error.type", Value::Str(e.clone())));
    }
    let name = match &route {
        Some(r) => format!("{method} {r}"),
        None => method.to_string(),
    };
    if let Some(r) = route {
        attributes.push(("http.route", Value::Str(r)));
    }
    t.exporter.record(SpanData {
        trace_id: cx.trace_id,
        span_id: cx.span_id,
        parent_id: cx.parent_id,
        trace_state: cx
            .tracestate
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        name,
        kind: Kind::Server,
        start,
        end: unix_nanos(),
        attributes,
        events: Vec::new(),
        links: Vec::new(),
        phases: Vec::new(),
        error,
        deferred: None,
    });
    resp
}

/// A deploy about to commit inside a traced request: its span id, made now so that the
/// snapshots can name it before the commit.
#[derive(Debug)]
pub(crate) struct Deploy {
    pub(crate) current: Current,
    pub(crate) span_id: [u8; 8],
    pub(crate) start: u64,
}

impl Deploy {
    /// A deploy span for the current traced request, if there is one.
    pub(crate) fn begin(start: u64) -> Option<Self> {
        current().map(|current| Self {
            current,
            span_id: new_span_id(),
            start,
        })
    }

    /// The `traceparent` its nodes are told.
    pub(crate) fn traceparent(&self) -> String {
        traceparent(&self.current.trace_id, &self.span_id)
    }

    /// Records the span, once committed: `gateways` are the snapshots it moved (name and
    /// new version), `changes` what the write did.
    pub(crate) fn end(self, gateways: &[(String, u64)], changes: Vec<String>, actor: &str) {
        let mut attributes = vec![
            (
                "portico.gateways",
                Value::Str(
                    gateways
                        .iter()
                        .map(|(g, v)| format!("{g}@{v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            ),
            ("portico.changes", Value::Str(changes.join("; "))),
            ("portico.actor", Value::Str(actor.to_owned())),
        ];
        if let [(_, v)] = gateways {
            attributes.push(("portico.snapshot.version", Value::Int(*v as i64)));
        }
        self.current.exporter.record(SpanData {
            trace_id: self.current.trace_id,
            span_id: self.span_id,
            parent_id: Some(self.current.span_id),
            trace_state: String::new(),
            name: "deploy".into(),
            kind: Kind::Producer,
            start: self.start,
            end: unix_nanos(),
            attributes,
            events: Vec::new(),
            links: Vec::new(),
            phases: Vec::new(),
            error: None,
            deferred: None,
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nodes_sync_traffic_is_not_traced() {
        assert!(super::untraced("/api/v1/sync/snapshot"));
        assert!(super::untraced("/healthz"));
        assert!(super::untraced("/static/portico.css"));
        assert!(!super::untraced("/api/v1/apis/pets/deployments"));
    }

    #[test]
    fn a_traceparent_is_version_00_and_sampled() {
        assert_eq!(
            super::traceparent(&[0xab; 16], &[1; 8]),
            format!("00-{}-0101010101010101-01", "ab".repeat(16))
        );
    }
}
