//! Prometheus metrics. Families live for the process; per-route and per-service handles are
//! resolved when a Snapshot is compiled, so the request path touches only atomics.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-request series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Listener name.
    pub listener: Arc<str>,
    /// Route name (`none` when no route matched).
    pub route: Arc<str>,
    /// Service name (empty for redirects and fixed responses).
    pub service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    listener: Arc<str>,
    route: Arc<str>,
    service: Arc<str>,
    code: u16,
}

/// Labels of per-service series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// Service name.
    pub service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    service: Arc<str>,
    kind: &'static str,
}

/// Labels of per-listener series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// Listener name.
    pub listener: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Every metric family of a gateway node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<CodeLabels, Counter>,
    durations: Family<RequestLabels, Histogram, fn() -> Histogram>,
    upstream_latency: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    upstream_connections: Family<ServiceLabels, Gauge>,
    upstream_errors: Family<ErrorLabels, Counter>,
    retries: Family<ServiceLabels, Counter>,
    ejections: Family<ServiceLabels, Counter>,
    client_connections: Family<ListenerLabels, Gauge>,
    client_connections_total: Family<ListenerLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    /// Access log lines dropped because the writer fell behind.
    pub access_log_dropped: Counter,
    /// Requests rate-limited on this node alone because Redis did not answer in time.
    pub ratelimit_redis_fallbacks: Counter,
}

/// Status codes with a pre-resolved counter per route; others go through the family.
const COMMON_CODES: [u16; 16] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 413, 429, 500, 502, 503, 504,
];

/// Handles for one (listener, route, service) combination.
#[derive(Debug)]
pub struct RouteStats {
    labels: RequestLabels,
    by_code: [OnceLock<Counter>; COMMON_CODES.len()],
    duration: Histogram,
    metrics: Arc<Metrics>,
}

/// Handles for one service.
#[derive(Debug, Clone)]
pub struct ServiceStats {
    /// Time from sending the request to the response headers.
    pub latency: Histogram,
    /// Open upstream connections.
    pub connections: Gauge,
    /// Connect failures.
    pub connect_errors: Counter,
    /// Connect or response timeouts.
    pub timeouts: Counter,
    /// Resets and protocol errors.
    pub failures: Counter,
    /// Retries sent.
    pub retries: Counter,
    /// Endpoints ejected.
    pub ejections: Counter,
}

/// Handles for one listener.
#[derive(Debug, Clone)]
pub struct ListenerStats {
    /// Open client connections.
    pub open: Gauge,
    /// Client connections accepted.
    pub accepted: Counter,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("portico");
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests answered, by listener, route, service and status code",
            requests.clone(),
        );
        let durations = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "Time from the request's arrival to the end of the response",
            durations.clone(),
        );
        let upstream_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "upstream_response_seconds",
            "Time from sending a request upstream to its response headers",
            upstream_latency.clone(),
        );
        let upstream_connections = Family::default();
        registry.register(
            "upstream_connections",
            "Open connections to upstream endpoints",
            upstream_connections.clone(),
        );
        let upstream_errors = Family::default();
        registry.register(
            "upstream_errors",
            "Upstream failures by kind: connect, timeout, reset",
            upstream_errors.clone(),
        );
        let retries = Family::default();
        registry.register(
            "upstream_retries",
            "Retries sent to a service",
            retries.clone(),
        );
        let ejections = Family::default();
        registry.register(
            "upstream_ejections",
            "Endpoints ejected by passive outlier detection",
            ejections.clone(),
        );
        let client_connections = Family::default();
        registry.register(
            "client_connections",
            "Open client connections",
            client_connections.clone(),
        );
        let client_connections_total = Family::default();
        registry.register(
            "client_connections_accepted",
            "Client connections accepted",
            client_connections_total.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "config_reloads",
            "Snapshot applications, by result",
            reloads.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let ratelimit_redis_fallbacks = Counter::default();
        registry.register(
            "ratelimit_redis_fallbacks",
            "Requests rate-limited on this node alone because Redis did not answer in time",
            ratelimit_redis_fallbacks.clone(),
        );
        Arc::new(Self {
            registry,
            requests,
            durations,
            upstream_latency,
            upstream_connections,
            upstream_errors,
            retries,
            ejections,
            client_connections,
            client_connections_total,
            reloads,
            access_log_dropped,
            ratelimit_redis_fallbacks,
        })
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Handles for a route and one of its services.
    pub fn route(
        self: &Arc<Self>,
        listener: &Arc<str>,
        route: &Arc<str>,
        service: &Arc<str>,
    ) -> RouteStats {
        let labels = RequestLabels {
            listener: listener.clone(),
            route: route.clone(),
            service: service.clone(),
        };
        RouteStats {
            duration: self.durations.get_or_create_owned(&labels),
            labels,
            by_code: Default::default(),
            metrics: self.clone(),
        }
    }

    /// Handles for a service.
    pub fn service(&self, name: &Arc<str>) -> ServiceStats {
        let l = ServiceLabels {
            service: name.clone(),
        };
        let err = |kind| {
            self.upstream_errors.get_or_create_owned(&ErrorLabels {
                service: name.clone(),
                kind,
            })
        };
        ServiceStats {
            latency: self.upstream_latency.get_or_create_owned(&l),
            connections: self.upstream_connections.get_or_create_owned(&l),
            connect_errors: err("connect"),
            timeouts: err("timeout"),
            failures: err("reset"),
            retries: self.retries.get_or_create_owned(&l),
            ejections: self.ejections.get_or_create_owned(&l),
        }
    }

    /// Handles for a listener.
    pub fn listener(&self, name: &Arc<str>) -> ListenerStats {
        let l = ListenerLabels {
            listener: name.clone(),
        };
        ListenerStats {
            open: self.client_connections.get_or_create_owned(&l),
            accepted: self.client_connections_total.get_or_create_owned(&l),
        }
    }

    /// Counts a Snapshot application.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabels {
                result: if ok { "applied" } else { "rejected" },
            })
            .inc();
    }
}

impl RouteStats {
    /// Records one answered request.
    #[inline]
    pub fn record(&self, status: u16, seconds: f64) {
        self.duration.observe(seconds);
        match COMMON_CODES.iter().position(|&c| c == status) {
            Some(i) => {
                self.by_code[i]
                    .get_or_init(|| {
                        self.metrics
                            .requests
                            .get_or_create_owned(&self.code_labels(status))
                    })
                    .inc();
            }
            None => {
                self.metrics
                    .requests
                    .get_or_create(&self.code_labels(status))
                    .inc();
            }
        }
    }

    fn code_labels(&self, code: u16) -> CodeLabels {
        CodeLabels {
            listener: self.labels.listener.clone(),
            route: self.labels.route.clone(),
            service: self.labels.service.clone(),
            code,
        }
    }
}
