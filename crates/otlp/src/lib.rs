//! Spans exported over OTLP/HTTP with protobuf bodies (`POST <endpoint>`, usually
//! `http://collector:4318/v1/traces`).
//!
//! [`Exporter::record`] never waits: a span goes into a bounded queue, or is dropped and
//! counted when the queue is full. A thread of its own takes spans off the queue in
//! batches (at most [`ExportConfig::batch`], or whatever is there after
//! [`ExportConfig::interval`]) and posts them; a batch the collector refuses or does not
//! answer within the timeout is dropped and counted too. So a collector that is down or
//! slow costs the request path a push onto a full queue at most.
//!
//! The queue is a vector behind a mutex, and the thread is woken once per full batch (or
//! by its interval), not once per span: a wake-up per request would cost a context switch
//! per request.

pub mod context;
pub mod proto;
pub mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

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

/// An attribute's value. Shared, static and address values are made into text by the
/// export thread, not on the request path.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text.
    Str(String),
    /// Text that is shared (a route's or a service's name).
    Shared(Arc<str>),
    /// Text known when compiled.
    Static(&'static str),
    /// An IP address.
    Ip(std::net::IpAddr),
    /// A number.
    Int(i64),
    /// Yes or no.
    Bool(bool),
}

/// Fills in a span's name, attributes and error on the export thread, from what the
/// request path handed over: the request path then formats and copies nothing.
pub struct Deferred(pub Box<dyn FnOnce(&mut SpanData) + Send>);

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deferred")
    }
}

/// One finished span.
#[derive(Debug)]
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
    /// The rest, made by the export thread before the span is written.
    pub deferred: Option<Deferred>,
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

/// The spans waiting, and whether the exporter is gone.
#[derive(Default)]
struct Queue {
    spans: Vec<SpanData>,
    closed: bool,
}

/// What the recording side and the export thread share.
struct Shared {
    queue: Mutex<Queue>,
    /// Rung when a batch is full, and when the exporter goes.
    ready: Condvar,
    /// Spans waiting at most.
    limit: usize,
    /// Spans a post carries at most.
    batch: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The queue's recording side and the counts. Dropped, the thread sends what is queued
/// and ends.
pub struct Exporter {
    shared: Arc<Shared>,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
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
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            limit: config.queue.max(1),
            batch: config.batch.max(1),
        });
        let counts = Arc::new(Counts {
            on_drop,
            ..Counts::default()
        });
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| Error::Start(e.to_string()))?;
        let (c, s) = (counts.clone(), shared.clone());
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || run(&s, &config, &client, &c))
            .map_err(|e| Error::Start(e.to_string()))?;
        Ok(Arc::new(Self { shared, counts }))
    }

    /// Queues a span; when the queue is full it is dropped and counted. Never waits.
    pub fn record(&self, span: SpanData) {
        let mut q = self.shared.lock();
        if q.spans.len() >= self.shared.limit {
            drop(q);
            self.counts.dropped(1);
            return;
        }
        if q.spans.capacity() == 0 {
            q.spans.reserve(self.shared.batch.min(self.shared.limit));
        }
        q.spans.push(span);
        let full = q.spans.len() == self.shared.batch;
        drop(q);
        if full {
            self.shared.ready.notify_one();
        }
    }

    /// What it did so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
    }
}

/// The export thread: a batch when one is full or the interval passed, posted one at a
/// time, until the exporter is dropped (what is queued then is sent first).
fn run(shared: &Shared, config: &ExportConfig, client: &reqwest::Client, counts: &Counts) {
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
    loop {
        let (batch, closed) = {
            let q = shared.lock();
            let (mut q, _) = shared
                .ready
                .wait_timeout_while(q, config.interval, |q| {
                    q.spans.len() < shared.batch && !q.closed
                })
                .unwrap_or_else(PoisonError::into_inner);
            let batch = if q.spans.len() <= shared.batch {
                std::mem::take(&mut q.spans)
            } else {
                let rest = q.spans.split_off(shared.batch);
                std::mem::replace(&mut q.spans, rest)
            };
            (batch, q.closed && q.spans.is_empty())
        };
        if !batch.is_empty() {
            post(&rt, client, config, batch, counts);
        }
        if closed {
            return;
        }
    }
}

/// Posts one batch; a failure drops it, counted.
fn post(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    config: &ExportConfig,
    batch: Vec<SpanData>,
    counts: &Counts,
) {
    let n = batch.len() as u64;
    let mut batch = batch;
    for s in &mut batch {
        if let Some(d) = s.deferred.take() {
            (d.0)(s);
        }
    }
    let body = wire::encode(&config.service_name, batch);
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
