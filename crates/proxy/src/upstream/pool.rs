//! Upstream connection pools, one per worker thread: a worker's connections are registered
//! with its own event loop, so a request never waits on another thread. HTTP/1.1
//! connections are checked out exclusively (most recently used first); one HTTP/2
//! connection per endpoint is shared by every request of the worker.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::client::conn::http2;

use super::h1::Conn;
use crate::body::RequestBody;

/// A pool: an endpoint's address and the id of the TLS settings its connections were made
/// with (0 for cleartext), so services with different TLS never share a connection.
pub type PoolKey = (SocketAddr, u32);

type Map<V> = HashMap<PoolKey, V, BuildHasherDefault<AddrHasher>>;

thread_local! {
    static H1: RefCell<Map<Vec<Conn>>> = RefCell::new(Map::default());
    static H2: RefCell<Map<http2::SendRequest<RequestBody>>> = RefCell::new(Map::default());
}

/// A cheap multiplicative hash for socket addresses: the pools are per worker and keyed by
/// addresses from our own config, so there is no untrusted input to defend against.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64);
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(i as u64);
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

/// Where a connection goes back to, and under which limits.
#[derive(Debug, Clone, Copy)]
pub struct PoolSlot {
    /// The endpoint's pool.
    pub key: PoolKey,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint and worker.
    pub max_idle: usize,
}

/// Returns an HTTP/1.1 connection whose response has been read completely.
pub fn put_h1(mut conn: Conn, slot: PoolSlot) {
    if slot.max_idle == 0 {
        return;
    }
    conn.idle_since = Instant::now();
    conn.idle_timeout = slot.idle_timeout;
    conn.reused = true;
    H1.with(|m| {
        let mut m = m.borrow_mut();
        let v = m.entry(slot.key).or_default();
        if v.len() < slot.max_idle {
            v.push(conn);
        }
    });
}

/// Takes a usable idle HTTP/1.1 connection of pool `key`, most recently used first.
pub fn checkout_h1(key: PoolKey, idle_timeout: Duration) -> Option<Conn> {
    H1.with(|m| {
        let mut m = m.borrow_mut();
        let v = m.get_mut(&key)?;
        while let Some(mut conn) = v.pop() {
            if conn.idle_since.elapsed() <= idle_timeout && conn.is_usable() {
                return Some(conn);
            }
        }
        None
    })
}

/// The worker's HTTP/2 connection of pool `key`, if it is open.
pub fn h2(key: PoolKey) -> Option<http2::SendRequest<RequestBody>> {
    H2.with(|m| {
        let mut m = m.borrow_mut();
        match m.get(&key) {
            Some(tx) if !tx.is_closed() => Some(tx.clone()),
            Some(_) => {
                m.remove(&key);
                None
            }
            None => None,
        }
    })
}

/// Stores the worker's HTTP/2 connection of pool `key`.
pub fn put_h2(key: PoolKey, tx: http2::SendRequest<RequestBody>) {
    H2.with(|m| {
        m.borrow_mut().insert(key, tx);
    });
}

/// Forgets a broken HTTP/2 connection.
pub fn remove_h2(key: PoolKey) {
    H2.with(|m| {
        m.borrow_mut().remove(&key);
    });
}

/// Closes idle connections past their idle timeout or closed by the upstream; run
/// periodically on each worker.
pub fn sweep() {
    H1.with(|m| {
        let mut m = m.borrow_mut();
        for v in m.values_mut() {
            v.retain_mut(|c| c.idle_since.elapsed() <= c.idle_timeout && c.is_usable());
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
