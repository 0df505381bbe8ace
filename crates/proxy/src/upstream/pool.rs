//! Upstream connection pools, one per worker thread: a worker's connections are registered
//! with its own event loop, so a request never waits on another thread. HTTP/1.1
//! connections are checked out exclusively (most recently used first); one HTTP/2
//! connection per endpoint is shared by every request of the worker.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};

use crate::body::RequestBody;

struct Idle {
    tx: http1::SendRequest<RequestBody>,
    since: Instant,
    idle_timeout: Duration,
}

thread_local! {
    static H1: RefCell<HashMap<SocketAddr, Vec<Idle>>> = RefCell::new(HashMap::new());
    static H2: RefCell<HashMap<SocketAddr, http2::SendRequest<RequestBody>>> = RefCell::new(HashMap::new());
}

/// An HTTP/1.1 connection in use; `release` returns it to the pool once its response is done.
#[derive(Debug)]
pub struct Release {
    tx: http1::SendRequest<RequestBody>,
    addr: SocketAddr,
    idle_timeout: Duration,
    max_idle: usize,
}

impl Release {
    /// Wraps a connection whose response is being read.
    pub fn new(
        tx: http1::SendRequest<RequestBody>,
        addr: SocketAddr,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        Self {
            tx,
            addr,
            idle_timeout,
            max_idle,
        }
    }

    /// Returns the connection to the pool (or closes it when it cannot be reused).
    pub fn release(self) {
        if self.tx.is_closed() || self.max_idle == 0 {
            return;
        }
        if self.tx.is_ready() {
            put(self);
        } else {
            // The connection finishes reading the response in its own task; wait for it.
            tokio::spawn(async move {
                let mut me = self;
                if me.tx.ready().await.is_ok() {
                    put(me);
                }
            });
        }
    }
}

fn put(r: Release) {
    H1.with(|m| {
        let mut m = m.borrow_mut();
        let v = m.entry(r.addr).or_default();
        if v.len() < r.max_idle {
            v.push(Idle {
                tx: r.tx,
                since: Instant::now(),
                idle_timeout: r.idle_timeout,
            });
        }
    });
}

/// Takes an idle HTTP/1.1 connection to `addr`, if one is ready.
pub fn checkout_h1(addr: SocketAddr) -> Option<http1::SendRequest<RequestBody>> {
    H1.with(|m| {
        let mut m = m.borrow_mut();
        let v = m.get_mut(&addr)?;
        while let Some(idle) = v.pop() {
            if idle.tx.is_closed() || idle.since.elapsed() > idle.idle_timeout {
                continue;
            }
            if idle.tx.is_ready() {
                return Some(idle.tx);
            }
        }
        None
    })
}

/// The worker's HTTP/2 connection to `addr`, if it is open.
pub fn h2(addr: SocketAddr) -> Option<http2::SendRequest<RequestBody>> {
    H2.with(|m| {
        let mut m = m.borrow_mut();
        match m.get(&addr) {
            Some(tx) if !tx.is_closed() => Some(tx.clone()),
            Some(_) => {
                m.remove(&addr);
                None
            }
            None => None,
        }
    })
}

/// Stores the worker's HTTP/2 connection to `addr`.
pub fn put_h2(addr: SocketAddr, tx: http2::SendRequest<RequestBody>) {
    H2.with(|m| {
        m.borrow_mut().insert(addr, tx);
    });
}

/// Forgets a broken HTTP/2 connection.
pub fn remove_h2(addr: SocketAddr) {
    H2.with(|m| {
        m.borrow_mut().remove(&addr);
    });
}

/// Closes idle connections past their idle timeout; run periodically on each worker.
pub fn sweep() {
    H1.with(|m| {
        let mut m = m.borrow_mut();
        for v in m.values_mut() {
            v.retain(|i| !i.tx.is_closed() && i.since.elapsed() <= i.idle_timeout);
        }
        m.retain(|_, v| !v.is_empty());
    });
    H2.with(|m| m.borrow_mut().retain(|_, tx| !tx.is_closed()));
}

/// Closes every pooled connection of this worker (at shutdown).
pub fn clear() {
    H1.with(|m| m.borrow_mut().clear());
    H2.with(|m| m.borrow_mut().clear());
}
