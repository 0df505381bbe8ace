//! Upstreams: compiled services, their endpoints (resolved and re-resolved through DNS),
//! load balancing, retries, outlier ejection and the connection pools.

pub mod balance;
pub mod client;
pub mod endpoint;
pub mod h1;
pub mod health;
pub mod limits;
pub mod pool;
pub mod retry;
pub mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use portico_model::{HashOn, LoadBalancing, UpstreamProtocol};

use crate::clock;
use crate::metrics::{Metrics, ServiceStats};
use balance::{Algorithm, EndpointSet};
use endpoint::{Endpoint, EndpointState, OutlierPolicy};
use retry::RetryBudget;

/// A service compiled from a Snapshot.
#[derive(Debug)]
pub struct Service {
    /// Name, as routes refer to it.
    pub name: Arc<str>,
    /// Protocol spoken to endpoints.
    pub protocol: UpstreamProtocol,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// From the end of the request to the response headers.
    pub request_timeout: Duration,
    /// Idle pooled connections are closed after this.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint and worker.
    pub max_idle: usize,
    /// Host sent with `rewrite.host_to_target` (else the endpoint's authority).
    pub hostname: Option<HeaderValue>,
    /// TLS to the endpoints, when the service has it.
    pub tls: Option<Arc<tls::TlsClient>>,
    /// Retries after the first attempt.
    pub retry_attempts: u32,
    /// Statuses that are retried.
    pub retry_statuses: Box<[u16]>,
    /// Longest pause in a response body, when limited.
    pub body_idle_timeout: Option<Duration>,
    /// Statuses that count as an endpoint's failure for outlier ejection.
    pub failure_statuses: Box<[u16]>,
    /// Shared retry budget (kept across reloads).
    pub budget: Arc<RetryBudget>,
    /// Outlier ejection policy.
    pub outlier: OutlierPolicy,
    /// What consistent hashing hashes, if it is the algorithm.
    pub hash_on: Option<HashOn>,
    /// Active health checks, when the service has them.
    pub health: Option<Arc<health::HealthPolicy>>,
    /// Connection pool limits, when the service has them.
    pub limits: Option<Arc<limits::PoolLimits>>,
    algorithm: Algorithm,
    endpoints: ArcSwap<EndpointSet>,
    targets: Vec<Target>,
    dns_refresh: Duration,
    registry: Arc<StateRegistry>,
    /// Metric handles.
    pub stats: ServiceStats,
}

/// A configured endpoint before resolution.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    weight: u32,
    priority: u32,
    authority: HeaderValue,
    is_ip: bool,
}

/// An endpoint's stable identity: its service and address.
type EndpointKey = (Arc<str>, SocketAddr);

/// State that outlives Snapshots, keyed by stable ids: endpoint state by (service, address),
/// retry budgets by service.
#[derive(Debug, Default)]
pub struct StateRegistry {
    endpoints: Mutex<HashMap<EndpointKey, Weak<EndpointState>>>,
    budgets: Mutex<HashMap<Arc<str>, Weak<RetryBudget>>>,
    pools: Mutex<HashMap<Arc<str>, Weak<limits::PoolLimits>>>,
}

/// An endpoint's active health, as status pages show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EndpointHealth {
    /// The service.
    pub service: String,
    /// The endpoint's address.
    pub endpoint: String,
    /// Passing its health checks.
    pub healthy: bool,
}

impl StateRegistry {
    fn endpoint(&self, service: &Arc<str>, addr: SocketAddr) -> Arc<EndpointState> {
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let key = (service.clone(), addr);
        if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
            return s;
        }
        let s = Arc::new(EndpointState::default());
        map.insert(key, Arc::downgrade(&s));
        s
    }

    fn budget(&self, service: &Arc<str>, ratio: f64, min: u32) -> Arc<RetryBudget> {
        let mut map = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.get(service).and_then(Weak::upgrade) {
            return b;
        }
        let b = Arc::new(RetryBudget::new(ratio, min));
        map.insert(service.clone(), Arc::downgrade(&b));
        b
    }

    /// The limits of `service`: the ones it had when they are the same (what is in use
    /// stays counted), else `fresh`.
    fn pool(&self, service: &Arc<str>, fresh: limits::PoolLimits) -> Arc<limits::PoolLimits> {
        let mut map = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = map.get(service).and_then(Weak::upgrade)
            && p.same(&fresh)
        {
            return p;
        }
        let p = Arc::new(fresh);
        map.insert(service.clone(), Arc::downgrade(&p));
        p
    }

    /// Every endpoint that active health checks watch, sorted by service and address.
    pub fn health(&self) -> Vec<EndpointHealth> {
        let map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<EndpointHealth> = map
            .iter()
            .filter_map(|((service, addr), w)| {
                let s = w.upgrade()?;
                s.probed().then(|| EndpointHealth {
                    service: service.to_string(),
                    endpoint: addr.to_string(),
                    healthy: !s.unhealthy(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.service, &a.endpoint).cmp(&(&b.service, &b.endpoint)));
        out
    }

    /// Forgets state nobody refers to any more.
    pub fn prune(&self) {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, w| w.strong_count() > 0);
        self.budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, w| w.strong_count() > 0);
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, w| w.strong_count() > 0);
    }
}

impl Service {
    /// Compiles a service and resolves its endpoints. DNS failures leave the names
    /// unresolved (the service answers 503) until a refresh succeeds.
    pub async fn compile(
        s: &portico_model::Service,
        tls: Option<Arc<tls::TlsClient>>,
        registry: &Arc<StateRegistry>,
        metrics: &Metrics,
    ) -> Arc<Self> {
        let name: Arc<str> = s.name.as_str().into();
        let targets = s
            .endpoints
            .iter()
            .filter_map(|e| {
                let (host, port) = e.host_port().ok()?;
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                Some(Target {
                    host: bare.to_owned(),
                    port,
                    weight: e.weight.max(1),
                    priority: e.priority,
                    authority: HeaderValue::from_str(&e.address).ok()?,
                    is_ip: bare.parse::<IpAddr>().is_ok(),
                })
            })
            .collect();
        let algorithm = match &s.load_balancing {
            LoadBalancing::RoundRobin => Algorithm::RoundRobin,
            LoadBalancing::LeastRequest => Algorithm::LeastRequest,
            LoadBalancing::Random => Algorithm::Random,
            LoadBalancing::ConsistentHash(on) => Algorithm::ConsistentHash(on.clone()),
        };
        let hostname = s
            .hostname
            .as_deref()
            .and_then(|h| HeaderValue::from_str(h).ok());
        let health = s
            .health_check
            .as_ref()
            .map(|h| Arc::new(health::HealthPolicy::new(h, hostname.as_ref())));
        let service = Self {
            limits: limits::PoolLimits::new(&s.connection_pool, s.protocol.is_http2())
                .map(|l| registry.pool(&name, l)),
            health,
            budget: registry.budget(
                &name,
                s.retries.budget_ratio,
                s.retries.budget_min_per_second,
            ),
            stats: metrics.service(&name),
            name,
            protocol: s.protocol,
            connect_timeout: s.connect_timeout.get(),
            request_timeout: s.request_timeout.get(),
            idle_timeout: s.idle_timeout.get(),
            body_idle_timeout: Some(s.body_idle_timeout.get()).filter(|d| !d.is_zero()),
            max_idle: s.max_idle_per_endpoint as usize,
            hostname,
            tls,
            retry_attempts: s.retries.attempts,
            retry_statuses: s.retries.statuses.clone().into_boxed_slice(),
            failure_statuses: s
                .outlier_detection
                .failure_statuses
                .clone()
                .into_boxed_slice(),
            outlier: OutlierPolicy {
                consecutive_failures: s.outlier_detection.consecutive_failures,
                base_ms: s.outlier_detection.base_ejection_time.get().as_millis() as u64,
                max_ms: s.outlier_detection.max_ejection_time.get().as_millis() as u64,
                max_percent: s.outlier_detection.max_ejection_percent,
            },
            hash_on: match &algorithm {
                Algorithm::ConsistentHash(on) => Some(on.clone()),
                _ => None,
            },
            endpoints: ArcSwap::from_pointee(EndpointSet::new(Vec::new(), &algorithm, true)),
            algorithm,
            targets,
            dns_refresh: s.dns_refresh.get(),
            registry: registry.clone(),
        };
        let resolved = service.resolve(None).await;
        if service.health.is_none() {
            // Health a previous version of the service had checked no longer applies.
            for e in &resolved {
                e.state.clear_health();
            }
        }
        service.endpoints.store(Arc::new(EndpointSet::new(
            resolved,
            &service.algorithm,
            service.fail_open(),
        )));
        let service = Arc::new(service);
        if service.targets.iter().any(|t| !t.is_ip) {
            tokio::spawn(refresh_dns(Arc::downgrade(&service)));
        }
        if service.health.is_some() {
            tokio::spawn(health::supervise(Arc::downgrade(&service)));
        }
        service
    }

    /// Whether a set whose endpoints all fail their health checks balances across them
    /// anyway (`when_all_unhealthy = "open"`, and any service without checks).
    fn fail_open(&self) -> bool {
        self.health.as_ref().is_none_or(|h| h.fail_open)
    }

    /// Where pooled connections to `ep` are kept: its address, told apart by TLS settings
    /// and, when each endpoint's own host is its TLS name, by that host (two names behind
    /// one address never share a connection verified for the other).
    #[inline]
    pub fn pool_key(&self, ep: &Endpoint) -> pool::PoolKey {
        match &self.tls {
            None => (ep.addr, 0),
            Some(t) if t.has_server_name() => (ep.addr, t.id),
            Some(t) => {
                let mut h = t.id;
                for b in ep.authority.as_bytes() {
                    h = (h.rotate_left(5) ^ u32::from(*b)).wrapping_mul(0x9e37_79b9);
                }
                (ep.addr, h.max(1))
            }
        }
    }

    /// The current endpoint set (one atomic load).
    #[inline]
    pub fn endpoints(&self) -> arc_swap::Guard<Arc<EndpointSet>> {
        self.endpoints.load()
    }

    /// Resolves every target. Names that fail keep the addresses they had in `previous`.
    async fn resolve(&self, previous: Option<&EndpointSet>) -> Vec<Arc<Endpoint>> {
        let mut out: Vec<Arc<Endpoint>> = Vec::new();
        for t in &self.targets {
            let addrs: Vec<SocketAddr> = if t.is_ip {
                t.host
                    .parse::<IpAddr>()
                    .map(|ip| vec![SocketAddr::new(ip, t.port)])
                    .unwrap_or_default()
            } else {
                let lookup = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::net::lookup_host((t.host.as_str(), t.port)),
                );
                match lookup.await {
                    Ok(Ok(it)) => {
                        let mut v: Vec<SocketAddr> = it.collect();
                        v.sort();
                        v.dedup();
                        v
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(service = %self.name, host = %t.host, error = %e, "cannot resolve endpoint; keeping its last addresses");
                        previous_for(previous, &t.authority)
                    }
                    Err(_) => {
                        tracing::warn!(service = %self.name, host = %t.host, "resolving endpoint timed out; keeping its last addresses");
                        previous_for(previous, &t.authority)
                    }
                }
            };
            for addr in addrs {
                if out.iter().any(|e| e.addr == addr) {
                    continue;
                }
                out.push(Arc::new(Endpoint {
                    addr,
                    authority: t.authority.clone(),
                    label: addr.to_string().into(),
                    weight: t.weight,
                    priority: t.priority,
                    state: self.registry.endpoint(&self.name, addr),
                }));
            }
        }
        out
    }

    /// Records a failed attempt on endpoint `i` of `set`; ejects it when the streak is long enough.
    pub fn on_failure(&self, set: &EndpointSet, i: usize) {
        let ep = &set.endpoints[i];
        let now = clock::now_ms();
        let ejected = ep.state.on_failure(&self.outlier, set.endpoints.len(), || {
            set.endpoints
                .iter()
                .filter(|e| e.state.ejected(now))
                .count()
        });
        if ejected {
            self.stats.ejections.inc();
            tracing::warn!(service = %self.name, endpoint = %ep.label, "endpoint ejected after consecutive failures");
        }
    }
}

fn previous_for(previous: Option<&EndpointSet>, authority: &HeaderValue) -> Vec<SocketAddr> {
    previous
        .map(|p| {
            p.endpoints
                .iter()
                .filter(|e| e.authority == authority)
                .map(|e| e.addr)
                .collect()
        })
        .unwrap_or_default()
}

/// Re-resolves a service's DNS names until the service is dropped (replaced by a reload).
async fn refresh_dns(service: Weak<Service>) {
    loop {
        let Some(every) = service.upgrade().map(|s| s.dns_refresh) else {
            return;
        };
        tokio::time::sleep(every).await;
        let Some(s) = service.upgrade() else { return };
        let current = s.endpoints.load_full();
        let fresh = s.resolve(Some(&current)).await;
        let old: Vec<SocketAddr> = current.endpoints.iter().map(|e| e.addr).collect();
        let new: Vec<SocketAddr> = fresh.iter().map(|e| e.addr).collect();
        if old != new {
            tracing::info!(service = %s.name, endpoints = ?new, "endpoint addresses changed");
            s.endpoints.store(Arc::new(EndpointSet::new(
                fresh,
                &s.algorithm,
                s.fail_open(),
            )));
        }
    }
}
