//! Phase `throttle`: local rate limits with GCRA (the generic cell rate algorithm): each key
//! has a theoretical arrival time; a request passes when that time is within the tier's
//! burst tolerance of now, and moves it one emission interval on. Exact at the boundary:
//! with `limit` 5 and no burst setting, 5 requests pass back to back and the 6th waits.
//! Limiters are kept across Snapshots by tier definition, so windows survive reloads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use portico_model::Tier;

use crate::respond::{ErrorKind, ProxyError, RateInfo};

/// One tier's limiter over many keys.
#[derive(Debug)]
pub struct Gcra {
    interval_ns: u64,
    tolerance_ns: u64,
    limit: u32,
    window: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tat: HashMap<Box<str>, u64>,
    checks: u32,
}

impl Gcra {
    /// A limiter for `tier`.
    pub fn new(tier: &Tier) -> Self {
        let limit = tier.limit.max(1);
        let window = tier.per.seconds();
        let interval_ns = (window * 1_000_000_000 / u64::from(limit)).max(1);
        let burst = u64::from(tier.burst.unwrap_or(limit).max(1));
        Self {
            interval_ns,
            tolerance_ns: interval_ns * (burst - 1),
            limit,
            window,
            state: Mutex::new(State::default()),
        }
    }

    /// Takes one request for `key` at `now_ns`, or says how long until one would pass.
    pub fn check(&self, key: &str, now_ns: u64) -> Result<(), u64> {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.checks = st.checks.wrapping_add(1);
        if st.checks.is_multiple_of(4096) {
            // Keys whose window has passed hold no information: forget them.
            st.tat.retain(|_, t| *t > now_ns);
        }
        let tat = st.tat.get(key).copied().unwrap_or(now_ns).max(now_ns);
        if tat - now_ns > self.tolerance_ns {
            return Err(tat - self.tolerance_ns - now_ns);
        }
        let next = tat + self.interval_ns;
        match st.tat.get_mut(key) {
            Some(t) => *t = next,
            None => {
                st.tat.insert(key.into(), next);
            }
        }
        Ok(())
    }

    /// The 429 for a refused request.
    pub fn refuse(&self, wait_ns: u64, what: &'static str) -> ProxyError {
        let mut e = ProxyError::new(ErrorKind::RateLimited, what);
        e.rate = Some(RateInfo {
            limit: self.limit,
            window: self.window,
            retry_after: wait_ns.div_ceil(1_000_000_000).max(1),
        });
        e
    }
}

/// Limiters by tier definition, kept across Snapshots.
#[derive(Debug, Default)]
pub struct Limiters {
    by_tier: Mutex<HashMap<Tier, Arc<Gcra>>>,
}

impl Limiters {
    /// The limiter for `tier` (the same one while its definition does not change).
    pub fn get(&self, tier: &Tier) -> Arc<Gcra> {
        let mut m = self
            .by_tier
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.entry(tier.clone())
            .or_insert_with(|| Arc::new(Gcra::new(tier)))
            .clone()
    }

    /// Drops limiters no Snapshot uses any more.
    pub fn retain(&self, used: &[Tier]) {
        let mut m = self
            .by_tier
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.retain(|t, _| used.contains(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_model::Period;

    fn tier(limit: u32, per: Period, burst: Option<u32>) -> Tier {
        Tier {
            name: "t".into(),
            limit,
            per,
            burst,
        }
    }

    #[test]
    fn exact_at_the_boundary() {
        let g = Gcra::new(&tier(5, Period::Minute, None));
        let t0 = 1_000_000_000;
        for i in 0..5 {
            assert!(g.check("k", t0).is_ok(), "request {i}");
        }
        let wait = g.check("k", t0).err().unwrap_or(0);
        assert_eq!(wait, 12_000_000_000, "one emission interval: 60 s / 5");
        // Another key has its own window.
        assert!(g.check("other", t0).is_ok());
        // After one interval, exactly one more passes.
        assert!(g.check("k", t0 + 12_000_000_000).is_ok());
        assert!(g.check("k", t0 + 12_000_000_000).is_err());
        let e = g.refuse(wait, "x");
        assert_eq!(
            e.rate.map(|r| (r.limit, r.window, r.retry_after)),
            Some((5, 60, 12))
        );
    }

    #[test]
    fn burst_smaller_than_the_limit_spaces_requests() {
        let g = Gcra::new(&tier(10, Period::Second, Some(1)));
        assert!(g.check("k", 0).is_ok());
        assert!(g.check("k", 50_000_000).is_err());
        assert!(g.check("k", 100_000_000).is_ok());
    }
}
