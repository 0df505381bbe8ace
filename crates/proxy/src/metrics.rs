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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    service: Arc<str>,
    limit: &'static str,
}

/// Labels of per-endpoint series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// Service name.
    pub service: Arc<str>,
    /// The endpoint's address.
    pub endpoint: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    service: Arc<str>,
    result: &'static str,
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
    overflows: Family<LimitLabels, Counter>,
    endpoint_healthy: Family<EndpointLabels, Gauge>,
    health_checks: Family<CheckLabels, Counter>,
    client_connections: Family<ListenerLabels, Gauge>,
    client_connections_total: Family<ListenerLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    /// Access log lines dropped because the writer fell behind.
    pub access_log_dropped: Counter,
    /// Spans dropped: the export queue was full or the collector failed.
    pub trace_spans_dropped: Counter,
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
    name: Arc<str>,
    health_checks: Family<CheckLabels, Counter>,
    overflows: Family<LimitLabels, Counter>,
    endpoint_healthy: Family<EndpointLabels, Gauge>,
}

impl ServiceStats {
    /// Counts a request refused by the connection pool's `limit`.
    pub fn overflow(&self, limit: &'static str) {
        self.overflows
            .get_or_create(&LimitLabels {
                service: self.name.clone(),
                limit,
            })
            .inc();
    }

    /// The counters of health probes passed and failed (made when a service has checks).
    pub fn health_checks(&self) -> (Counter, Counter) {
        let c = |result| {
            self.health_checks.get_or_create_owned(&CheckLabels {
                service: self.name.clone(),
                result,
            })
        };
        (c("passed"), c("failed"))
    }

    /// The gauge of an endpoint's health (1 healthy, 0 not).
    pub fn endpoint_health(&self, endpoint: &Arc<str>) -> Gauge {
        self.endpoint_healthy.get_or_create_owned(&EndpointLabels {
            service: self.name.clone(),
            endpoint: endpoint.clone(),
        })
    }

    /// Forgets an endpoint's health gauge (it left the service).
    pub fn forget_endpoint(&self, endpoint: &Arc<str>) {
        self.endpoint_healthy.remove(&EndpointLabels {
            service: self.name.clone(),
            endpoint: endpoint.clone(),
        });
    }
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
        let overflows = Family::default();
        registry.register(
            "upstream_overflow",
            "Requests refused by a service's connection pool limit (max_connections, max_requests, max_pending_requests, pending_timeout)",
            overflows.clone(),
        );
        let endpoint_healthy = Family::default();
        registry.register(
            "upstream_endpoint_healthy",
            "Active health of an endpoint: 1 healthy, 0 taken out by its health checks",
            endpoint_healthy.clone(),
        );
        let health_checks = Family::default();
        registry.register(
            "upstream_health_checks",
            "Health probes sent to a service's endpoints, by result: passed, failed",
            health_checks.clone(),
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
        let trace_spans_dropped = Counter::default();
        registry.register(
            "trace_spans_dropped",
            "Spans dropped because the export queue was full or the collector failed",
            trace_spans_dropped.clone(),
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
            overflows,
            endpoint_healthy,
            health_checks,
            client_connections,
            client_connections_total,
            reloads,
            access_log_dropped,
            trace_spans_dropped,
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
            name: name.clone(),
            health_checks: self.health_checks.clone(),
            overflows: self.overflows.clone(),
            endpoint_healthy: self.endpoint_healthy.clone(),
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
