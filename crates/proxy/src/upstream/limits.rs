//! A service's connection pool limits on one node: requests in flight at once (HTTP/1.1
//! connections in use, HTTP/2 streams) and requests waiting for one, both bounded. A
//! request over them is refused at once with the limit's name: nothing queues without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::fault::{ErrorKind, ProxyError};

/// The limits of one service, kept across Snapshots while they stay the same.
#[derive(Debug)]
pub struct PoolLimits {
    slots: Arc<Semaphore>,
    /// What the slots count: `max_connections` or `max_requests`.
    slot_limit: &'static str,
    capacity: u32,
    max_pending: u32,
    pending: AtomicU32,
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every slot was in use and no request may wait.
    Slots(&'static str),
    /// Every slot was in use and the waiting room was full.
    Pending,
    /// The request waited its whole timeout for a slot.
    Waited,
}

impl PoolLimits {
    /// Limits from a service's settings, or none when it sets none. `http2`: the service
    /// multiplexes, so `max_connections` does not apply.
    pub fn new(pool: &portico_model::ConnectionPool, http2: bool) -> Option<Self> {
        let connections = pool.max_connections.filter(|_| !http2);
        let (capacity, slot_limit) = match (connections, pool.max_requests) {
            (Some(c), Some(r)) if r < c => (r, "max_requests"),
            (Some(c), _) => (c, "max_connections"),
            (None, Some(r)) => (r, "max_requests"),
            (None, None) => return None,
        };
        Some(Self {
            slots: Arc::new(Semaphore::new(capacity as usize)),
            slot_limit,
            capacity,
            max_pending: pool.max_pending_requests.unwrap_or(0),
            pending: AtomicU32::new(0),
        })
    }

    /// True when `other` has the same limits (so a reload keeps these, and what is in use).
    pub fn same(&self, other: &Self) -> bool {
        self.capacity == other.capacity
            && self.slot_limit == other.slot_limit
            && self.max_pending == other.max_pending
    }

    /// A slot, at once when one is free, else after waiting (at most `wait`) when the
    /// waiting room has space.
    pub async fn admit(&self, wait: Duration) -> Result<OwnedSemaphorePermit, Refused> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.max_pending == 0 {
            return Err(Refused::Slots(self.slot_limit));
        }
        // Take a place in the waiting room, if there is one.
        let mut n = self.pending.load(Ordering::Relaxed);
        loop {
            if n >= self.max_pending {
                return Err(Refused::Pending);
            }
            match self
                .pending
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        let got = tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await;
        self.pending.fetch_sub(1, Ordering::AcqRel);
        match got {
            Ok(Ok(p)) => Ok(p),
            _ => Err(Refused::Waited),
        }
    }

    /// The error a refusal answers with (503, naming the limit).
    pub fn error(&self, service: &str, refused: Refused, wait: Duration) -> ProxyError {
        let detail = match refused {
            Refused::Slots(limit) => format!(
                "service `{service}` is at its connection pool limit: {limit} = {} in use and max_pending_requests = 0",
                self.capacity
            ),
            Refused::Pending => format!(
                "service `{service}` is at its connection pool limit: {} = {} in use and max_pending_requests = {} already waiting",
                self.slot_limit, self.capacity, self.max_pending
            ),
            Refused::Waited => format!(
                "service `{service}` is at its connection pool limit: no slot of {} = {} freed within {wait:?}",
                self.slot_limit, self.capacity
            ),
        };
        ProxyError::new(ErrorKind::Overflow, detail)
    }

    /// The limit a refusal counts under in metrics.
    pub fn metric_limit(&self, refused: Refused) -> &'static str {
        match refused {
            Refused::Slots(l) => l,
            Refused::Pending => "max_pending_requests",
            Refused::Waited => "pending_timeout",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_model::ConnectionPool;

    fn pool(c: Option<u32>, p: Option<u32>, r: Option<u32>) -> ConnectionPool {
        ConnectionPool {
            max_connections: c,
            max_pending_requests: p,
            max_requests: r,
        }
    }

    #[tokio::test]
    async fn slots_then_the_waiting_room_then_refusal_naming_the_limit() {
        assert!(PoolLimits::new(&pool(None, None, None), false).is_none());
        assert!(
            PoolLimits::new(&pool(Some(1), None, None), true).is_none(),
            "max_connections is HTTP/1.1's"
        );
        let l = Arc::new(PoolLimits::new(&pool(Some(2), Some(1), None), false).unwrap());
        let a = l.admit(Duration::from_secs(1)).await.unwrap();
        let _b = l.admit(Duration::from_secs(1)).await.unwrap();
        let waiting = {
            let l = l.clone();
            tokio::spawn(async move { l.admit(Duration::from_secs(5)).await.is_ok() })
        };
        while l.pending.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        let refused = l.admit(Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(refused, Refused::Pending);
        let e = l.error("orders", refused, Duration::from_secs(1));
        assert_eq!(e.kind.status(), 503);
        assert!(
            e.detail.contains("max_pending_requests = 1"),
            "{}",
            e.detail
        );
        drop(a);
        assert!(
            waiting.await.unwrap(),
            "the waiting request gets the freed slot"
        );

        let none_wait = PoolLimits::new(&pool(None, None, Some(1)), true).unwrap();
        let _x = none_wait.admit(Duration::from_secs(1)).await.unwrap();
        let refused = none_wait.admit(Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(refused, Refused::Slots("max_requests"));
        assert!(
            none_wait
                .error("s", refused, Duration::ZERO)
                .detail
                .contains("max_requests = 1 in use")
        );
        let timed = PoolLimits::new(&pool(Some(1), Some(5), None), false).unwrap();
        let _y = timed.admit(Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            timed.admit(Duration::from_millis(20)).await.unwrap_err(),
            Refused::Waited
        );
        assert_eq!(timed.pending.load(Ordering::Relaxed), 0);
    }
}
