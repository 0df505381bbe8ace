//! Endpoints and the state that outlives a Snapshot: in-flight counts and passive outlier
//! ejection, keyed by (service, address) so a reload keeps them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use http::HeaderValue;

use crate::clock;

/// One resolved endpoint of a service.
#[derive(Debug)]
pub struct Endpoint {
    /// Socket address connected to.
    pub addr: SocketAddr,
    /// `host:port` as configured (the DNS name for resolved endpoints), for logs and Host rewrites.
    pub authority: HeaderValue,
    /// `addr` as text, for logs and metrics.
    pub label: Arc<str>,
    /// Relative weight.
    pub weight: u32,
    /// Failover group (lowest first).
    pub priority: u32,
    /// Live state shared across Snapshots.
    pub state: Arc<EndpointState>,
}

/// Live state of an endpoint.
#[derive(Debug, Default)]
pub struct EndpointState {
    /// Requests in flight (least-request balancing).
    pub in_flight: AtomicU32,
    failures: AtomicU32,
    /// Milliseconds on the process clock until which the endpoint is ejected; 0 when never.
    ejected_until: AtomicU64,
    /// Ejections in a row, for the growing back-off.
    ejections: AtomicU32,
    /// Active health: 1 while the endpoint has failed its health checks.
    unhealthy: AtomicU32,
    /// Probes passed in a row while unhealthy, failed in a row while healthy.
    probe_streak: AtomicU32,
    /// 1 once a health check has probed it (it is then watched).
    probed: AtomicU32,
}

/// Passive outlier ejection settings, compiled.
#[derive(Clone, Copy, Debug)]
pub struct OutlierPolicy {
    /// Consecutive failures that eject; 0 disables.
    pub consecutive_failures: u32,
    /// First ejection, in ms.
    pub base_ms: u64,
    /// Longest ejection, in ms.
    pub max_ms: u64,
    /// Largest share of endpoints ejected at once, in percent.
    pub max_percent: u8,
}

impl EndpointState {
    /// True unless ejected or marked unhealthy.
    #[inline]
    pub fn available(&self, now_ms: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        (until == 0 || until <= now_ms) && self.unhealthy.load(Ordering::Relaxed) == 0
    }

    /// True unless ejected (active health ignored: a service failing open).
    #[inline]
    pub fn not_ejected(&self, now_ms: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || until <= now_ms
    }

    /// True while active health checks hold the endpoint out.
    pub fn unhealthy(&self) -> bool {
        self.unhealthy.load(Ordering::Relaxed) != 0
    }

    /// True once a health check has probed the endpoint.
    pub fn probed(&self) -> bool {
        self.probed.load(Ordering::Relaxed) != 0
    }

    /// Records a health probe: `rise` passes in a row bring an unhealthy endpoint back,
    /// `fall` failures in a row take a healthy one out. Returns the new health on a change.
    pub fn on_probe(&self, passed: bool, rise: u32, fall: u32) -> Option<bool> {
        self.probed.store(1, Ordering::Relaxed);
        let unhealthy = self.unhealthy();
        // The streak counts probes that disagree with the current state.
        if passed != unhealthy {
            self.probe_streak.store(0, Ordering::Relaxed);
            return None;
        }
        let n = self.probe_streak.fetch_add(1, Ordering::Relaxed) + 1;
        if n < if unhealthy { rise } else { fall } {
            return None;
        }
        self.probe_streak.store(0, Ordering::Relaxed);
        self.set_healthy(unhealthy);
        Some(unhealthy)
    }

    /// Forgets active health (the service no longer has a health check).
    pub fn clear_health(&self) {
        self.unhealthy.store(0, Ordering::Relaxed);
        self.probe_streak.store(0, Ordering::Relaxed);
        self.probed.store(0, Ordering::Relaxed);
    }

    /// True while an ejection is running.
    pub fn ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms
    }

    /// Marks the endpoint healthy or unhealthy (for active health checks).
    pub fn set_healthy(&self, healthy: bool) {
        self.unhealthy.store(u32::from(!healthy), Ordering::Relaxed);
    }

    /// Records a success: the failure streak ends. A success after an ejection has run out
    /// also starts the back-off over once the endpoint has stayed clean for a max ejection.
    #[inline]
    pub fn on_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure; returns true when this failure ejected the endpoint.
    /// `ejected_now` counts the set's endpoints currently ejected, for the percentage cap.
    pub fn on_failure(
        &self,
        policy: &OutlierPolicy,
        set_size: usize,
        ejected_now: impl FnOnce() -> usize,
    ) -> bool {
        if policy.consecutive_failures == 0 {
            return false;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < policy.consecutive_failures {
            return false;
        }
        let now = clock::now_ms();
        if self.ejected(now) {
            return false;
        }
        let cap = set_size * policy.max_percent as usize / 100;
        if ejected_now() + 1 > cap {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        // The streak of ejections resets once the endpoint stayed in for a max ejection time.
        let streak = if until != 0 && now.saturating_sub(until) > policy.max_ms {
            1
        } else {
            self.ejections.load(Ordering::Relaxed).saturating_add(1)
        };
        self.ejections.store(streak, Ordering::Relaxed);
        let duration = policy
            .base_ms
            .saturating_mul(streak as u64)
            .min(policy.max_ms);
        self.ejected_until
            .store(now + duration.max(1), Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        true
    }
}

impl Endpoint {
    /// True unless ejected or unhealthy.
    #[inline]
    pub fn available(&self, now_ms: u64) -> bool {
        self.state.available(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: OutlierPolicy = OutlierPolicy {
        consecutive_failures: 3,
        base_ms: 1000,
        max_ms: 2500,
        max_percent: 100,
    };

    #[test]
    fn consecutive_failures_eject_with_growing_backoff() {
        let s = EndpointState::default();
        let now = clock::now_ms();
        assert!(!s.on_failure(&POLICY, 2, || 0));
        s.on_success();
        assert!(!s.on_failure(&POLICY, 2, || 0));
        assert!(!s.on_failure(&POLICY, 2, || 0));
        assert!(
            s.on_failure(&POLICY, 2, || 0),
            "third failure in a row ejects"
        );
        assert!(!s.available(now));
        let until = s.ejected_until.load(Ordering::Relaxed);
        assert!(
            until >= now + 1000 && until <= now + 1000 + 1000,
            "first ejection lasts the base time"
        );
        // Pretend the ejection ran out, then fail again: the second ejection is longer.
        s.ejected_until.store(1, Ordering::Relaxed);
        for _ in 0..3 {
            s.on_failure(&POLICY, 2, || 0);
        }
        let until2 = s.ejected_until.load(Ordering::Relaxed);
        let now2 = clock::now_ms();
        assert!(
            until2 >= now2 + 1900,
            "second ejection is twice the base: {until2} vs {now2}"
        );
        // Capped at the maximum.
        s.ejected_until.store(1, Ordering::Relaxed);
        for _ in 0..3 {
            s.on_failure(&POLICY, 2, || 0);
        }
        assert!(s.ejected_until.load(Ordering::Relaxed) <= clock::now_ms() + 2500);
    }

    #[test]
    fn probes_take_an_endpoint_out_and_bring_it_back_at_the_thresholds() {
        let s = EndpointState::default();
        assert_eq!(s.on_probe(false, 2, 3), None);
        assert_eq!(
            s.on_probe(true, 2, 3),
            None,
            "a pass breaks the failure streak"
        );
        assert_eq!(s.on_probe(false, 2, 3), None);
        assert_eq!(s.on_probe(false, 2, 3), None);
        assert!(s.available(0));
        assert_eq!(
            s.on_probe(false, 2, 3),
            Some(false),
            "third failure in a row"
        );
        assert!(!s.available(0) && s.not_ejected(0));
        assert_eq!(s.on_probe(false, 2, 3), None);
        assert_eq!(s.on_probe(true, 2, 3), None);
        assert_eq!(
            s.on_probe(false, 2, 3),
            None,
            "a failure breaks the pass streak"
        );
        assert_eq!(s.on_probe(true, 2, 3), None);
        assert_eq!(s.on_probe(true, 2, 3), Some(true), "second pass in a row");
        assert!(s.available(0) && s.probed());
        s.clear_health();
        assert!(!s.probed());
    }

    #[test]
    fn the_percentage_cap_holds() {
        let s = EndpointState::default();
        let p = OutlierPolicy {
            max_percent: 50,
            consecutive_failures: 1,
            ..POLICY
        };
        assert!(
            !s.on_failure(&p, 2, || 1),
            "one of two is already out: 50 % cap reached"
        );
        assert!(s.on_failure(&p, 2, || 0));
        let single = EndpointState::default();
        assert!(
            !single.on_failure(&p, 1, || 0),
            "50 % of one endpoint is none"
        );
    }
}
