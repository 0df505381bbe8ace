//! Spans exported over OTLP/HTTP with protobuf bodies (`POST <endpoint>`, usually
//! `http://collector:4318/v1/traces`).
//!
//! [`Exporter::record`] never waits: a span goes into a bounded queue, or is dropped and
//! counted when the queue is full. A thread of its own takes spans off the queue in
//! batches (at most [`ExportConfig::batch`], or whatever is there after
//! [`ExportConfig::interval`]) and posts them; a batch the collector refuses or does not
//! answer within the timeout is dropped and counted too. So a collector that is down or
//! slow costs the request path one failed `try_send` at most.

pub mod context;
pub mod proto;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use prost::Message as _;

/// Why the exporter cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint is not an `http://` or `https://` URL.
    #[error("the OTLP endpoint `{0}` is not an http:// or https:// URL")]
    Endpoint(String),
    /// The thread or its HTTP client could not be made.
    #[error("the OTLP exporter cannot start: {0}")]
    Start(String),
}

/// Where and how spans are sent.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// `http(s)://host:port/v1/traces`.
    pub endpoint: String,
    /// `service.name` of the resource.
    pub service_name: String,
    /// Spans queued at most; more are dropped.
    pub queue: usize,
    /// Spans per request at most.
    pub batch: usize,
    /// Longest a span waits in the queue for a batch to fill.
    pub interval: Duration,
    /// Longest a post may take.
    pub timeout: Duration,
}

impl ExportConfig {
    /// Defaults for `endpoint`: 2,048 queued, 512 a batch, every second, 10 s timeout.
    pub fn new(endpoint: impl Into<String>, service_name: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            service_name: service_name.into(),
            queue: 2048,
            batch: 512,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The kind of a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Work inside the process.
    Internal = 1,
    /// A request served.
    Server = 2,
    /// A request made.
    Client = 3,
    /// Work handed on to others, who take it later (a deploy, to the nodes).
    Producer = 4,
    /// Work taken from a producer (a node's apply of a deploy).
    Consumer = 5,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text.
    Str(String),
    /// A number.
    Int(i64),
    /// Yes or no.
    Bool(bool),
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct SpanData {
    /// The trace.
    pub trace_id: [u8; 16],
    /// This span.
    pub span_id: [u8; 8],
    /// Its parent, unless a root.
    pub parent_id: Option<[u8; 8]>,
    /// W3C `tracestate`, as received.
    pub trace_state: String,
    /// Its name (`GET pets`, `deploy`).
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Start, Unix nanoseconds.
    pub start: u64,
    /// End, Unix nanoseconds.
    pub end: u64,
    /// Attributes, following the OpenTelemetry semantic conventions.
    pub attributes: Vec<(&'static str, Value)>,
    /// Timed events: name and Unix nanoseconds.
    pub events: Vec<(&'static str, u64)>,
    /// Spans this one follows from: (trace, span).
    pub links: Vec<([u8; 16], [u8; 8])>,
    /// The steps that took time inside it, each sent as a child span of its own (made by
    /// the export thread, off the request path).
    pub phases: Vec<Phase>,
    /// An error, with what went wrong.
    pub error: Option<String>,
}

/// A step inside a span (`route`, `upstream connect`): sent as an internal child span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    /// Its name.
    pub name: &'static str,
    /// Start, Unix nanoseconds.
    pub start: u64,
    /// End, Unix nanoseconds.
    pub end: u64,
}

/// Told how many spans were dropped, each time some are (for a metric).
pub type OnDrop = Box<dyn Fn(u64) + Send + Sync>;

/// What the exporter did, for metrics.
#[derive(Default)]
pub struct Counts {
    /// Spans sent and accepted.
    pub exported: AtomicU64,
    /// Spans dropped: the queue was full, or their batch failed.
    pub dropped: AtomicU64,
    /// Posts that failed (refused, unanswered, unreachable).
    pub failed_posts: AtomicU64,
    on_drop: Option<OnDrop>,
}

impl Counts {
    fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        if let Some(f) = &self.on_drop {
            f(n);
        }
    }
}

impl std::fmt::Debug for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counts")
            .field("exported", &self.exported)
            .field("dropped", &self.dropped)
            .field("failed_posts", &self.failed_posts)
            .finish_non_exhaustive()
    }
}

/// The queue's sending side and the counts.
#[derive(Debug)]
pub struct Exporter {
    tx: SyncSender<SpanData>,
    counts: Arc<Counts>,
}

impl Exporter {
    /// Starts the export thread.
    pub fn start(config: ExportConfig) -> Result<Arc<Self>, Error> {
        Self::start_counted(config, None)
    }

    /// Starts the export thread; `on_drop` hears of every span dropped.
    pub fn start_counted(
        config: ExportConfig,
        on_drop: Option<OnDrop>,
    ) -> Result<Arc<Self>, Error> {
        if !(config.endpoint.starts_with("http://") || config.endpoint.starts_with("https://")) {
            return Err(Error::Endpoint(config.endpoint));
        }
        let (tx, rx) = sync_channel(config.queue.max(1));
        let counts = Arc::new(Counts {
            on_drop,
            ..Counts::default()
        });
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| Error::Start(e.to_string()))?;
        let c = counts.clone();
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || run(rx, config, client, c))
            .map_err(|e| Error::Start(e.to_string()))?;
        Ok(Arc::new(Self { tx, counts }))
    }

    /// Queues a span; when the queue is full it is dropped and counted. Never waits.
    pub fn record(&self, span: SpanData) {
        match self.tx.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts.dropped(1);
            }
        }
    }

    /// What it did so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }
}

/// The export thread: batches off the queue, posted one at a time, until the exporter is
/// dropped (what is queued then is sent first).
fn run(rx: Receiver<SpanData>, config: ExportConfig, client: reqwest::Client, counts: Arc<Counts>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "the OTLP exporter has no runtime; spans are dropped");
            return;
        }
    };
    let resource = proto::Resource {
        attributes: vec![kv("service.name", Value::Str(config.service_name.clone()))],
    };
    let mut closed = false;
    while !closed {
        let mut batch = Vec::with_capacity(config.batch);
        // Wait for the first span, then fill the batch for at most `interval`.
        match rx.recv() {
            Ok(s) => batch.push(s),
            Err(_) => break,
        }
        let deadline = Instant::now() + config.interval;
        while batch.len() < config.batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(s) => batch.push(s),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let n = batch.len() as u64;
        let body = encode(&resource, batch);
        let sent = rt.block_on(async {
            client
                .post(&config.endpoint)
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
        });
        match sent {
            Ok(_) => {
                counts.exported.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                counts.dropped(n);
                let first = counts.failed_posts.fetch_add(1, Ordering::Relaxed) == 0;
                // Said once, then counted: a collector that is down would fill the log.
                if first {
                    tracing::warn!(endpoint = %config.endpoint, error = %e, "spans could not be exported; dropping them (counted in metrics)");
                }
            }
        }
    }
}

fn kv(key: &str, v: Value) -> proto::KeyValue {
    use proto::any_value::Value as V;
    proto::KeyValue {
        key: key.to_owned(),
        value: Some(proto::AnyValue {
            value: Some(match v {
                Value::Str(s) => V::StringValue(s),
                Value::Int(i) => V::IntValue(i),
                Value::Bool(b) => V::BoolValue(b),
            }),
        }),
    }
}

/// The protobuf body for `spans`.
pub fn encode(resource: &proto::Resource, spans: Vec<SpanData>) -> Vec<u8> {
    let mut out = Vec::with_capacity(spans.len());
    for mut s in spans {
        for p in std::mem::take(&mut s.phases) {
            out.push(proto::Span {
                trace_id: s.trace_id.to_vec(),
                span_id: context::new_span_id().to_vec(),
                trace_state: String::new(),
                parent_span_id: s.span_id.to_vec(),
                name: p.name.to_owned(),
                kind: Kind::Internal as i32,
                start_time_unix_nano: p.start,
                end_time_unix_nano: p.end.max(p.start),
                attributes: Vec::new(),
                events: Vec::new(),
                links: Vec::new(),
                status: Some(proto::Status {
                    message: String::new(),
                    code: 0,
                }),
                flags: 1,
            });
        }
        out.push(proto::Span {
            trace_id: s.trace_id.to_vec(),
            span_id: s.span_id.to_vec(),
            trace_state: s.trace_state,
            parent_span_id: s.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
            name: s.name,
            kind: s.kind as i32,
            start_time_unix_nano: s.start,
            end_time_unix_nano: s.end,
            attributes: s.attributes.into_iter().map(|(k, v)| kv(k, v)).collect(),
            events: s
                .events
                .into_iter()
                .map(|(name, at)| proto::Event {
                    time_unix_nano: at,
                    name: name.to_owned(),
                    attributes: Vec::new(),
                })
                .collect(),
            links: s
                .links
                .into_iter()
                .map(|(t, sp)| proto::Link {
                    trace_id: t.to_vec(),
                    span_id: sp.to_vec(),
                })
                .collect(),
            status: Some(match s.error {
                Some(message) => proto::Status { message, code: 2 },
                None => proto::Status {
                    message: String::new(),
                    code: 0,
                },
            }),
            flags: 1,
        });
    }
    let spans = out;
    proto::ExportTraceServiceRequest {
        resource_spans: vec![proto::ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![proto::ScopeSpans {
                scope: Some(proto::InstrumentationScope {
                    name: "portico".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans,
            }],
        }],
    }
    .encode_to_vec()
}
