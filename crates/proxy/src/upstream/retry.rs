//! The retry budget: retries may add at most a share of a service's requests, plus a floor
//! per second, so retries cannot multiply load on a struggling upstream.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock;

/// A per-service retry budget over one-second windows (the previous window's requests
/// count too, so the budget does not reset to zero at each second).
#[derive(Debug)]
pub struct RetryBudget {
    ratio_per_mille: u64,
    min_per_second: u64,
    /// Current window: second number in the high 32 bits, retries in the low 32.
    window: AtomicU64,
    requests: AtomicU64,
    previous_requests: AtomicU64,
}

impl RetryBudget {
    /// A budget allowing `ratio` (0..=1) of requests as retries, and at least `min_per_second`.
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        Self {
            ratio_per_mille: (ratio.clamp(0.0, 1.0) * 1000.0) as u64,
            min_per_second: min_per_second as u64,
            window: AtomicU64::new(clock::now_secs() << 32),
            requests: AtomicU64::new(0),
            previous_requests: AtomicU64::new(0),
        }
    }

    /// Counts a first attempt.
    #[inline]
    pub fn on_request(&self) {
        self.rotate();
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a retry from the budget; false when the budget is spent.
    pub fn try_retry(&self) -> bool {
        self.rotate();
        let reqs =
            self.requests.load(Ordering::Relaxed) + self.previous_requests.load(Ordering::Relaxed);
        let allowed = (reqs * self.ratio_per_mille / 1000).max(self.min_per_second);
        let mut w = self.window.load(Ordering::Relaxed);
        loop {
            if (w & 0xFFFF_FFFF) >= allowed {
                return false;
            }
            match self
                .window
                .compare_exchange_weak(w, w + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(cur) => w = cur,
            }
        }
    }

    fn rotate(&self) {
        let now = clock::now_secs();
        let w = self.window.load(Ordering::Relaxed);
        let sec = w >> 32;
        if sec == now {
            return;
        }
        if self
            .window
            .compare_exchange(w, now << 32, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let last = self.requests.swap(0, Ordering::Relaxed);
            self.previous_requests
                .store(if sec + 1 == now { last } else { 0 }, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_allows_a_few_retries_and_no_more() {
        let b = RetryBudget::new(0.0, 3);
        let granted = (0..10).filter(|_| b.try_retry()).count();
        // The window may roll over mid-test, granting at most one more floor.
        assert!((3..=6).contains(&granted), "{granted}");
    }

    #[test]
    fn the_ratio_scales_with_requests() {
        let b = RetryBudget::new(0.2, 0);
        for _ in 0..1000 {
            b.on_request();
        }
        let granted = (0..1000).filter(|_| b.try_retry()).count();
        assert!((200..=400).contains(&granted), "{granted}");
    }
}
