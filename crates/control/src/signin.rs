//! Back-off for the password grant: after a few failed sign-ins for one user name (known or
//! not) or from one address, every attempt is refused for a while without looking at the
//! password, and the pause doubles with each further failure. On SQLite (one node) the
//! state is in memory, bounded; on PostgreSQL it is in the database, so that it holds
//! across every control-plane node ([`Throttle::Shared`]). Either way it is forgotten a
//! while after the last failure.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures for one user name before it is paused.
pub const USER_FAILURES: u32 = 5;
/// Failures from one address (any user names) before it is paused.
pub const ADDRESS_FAILURES: u32 = 20;
/// The first pause; each further failure doubles it.
pub const FIRST_PAUSE: Duration = Duration::from_secs(30);
/// The longest pause.
pub const LONGEST_PAUSE: Duration = Duration::from_secs(15 * 60);
/// Entries kept at most (the oldest are dropped beyond it).
const MAX_ENTRIES: usize = 100_000;

/// Who failed: a user name (lower case) or an address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// Until when it is paused, if it is.
    fn paused_until(&self, threshold: u32) -> Option<Instant> {
        pause(self.count, threshold).map(|p| self.last + p)
    }
}

/// The whole pause after `count` failures, for a key paused from `threshold` on.
fn pause(count: u32, threshold: u32) -> Option<Duration> {
    let over = count.checked_sub(threshold)?;
    Some(
        FIRST_PAUSE
            .checked_mul(1u32 << over.min(16))
            .unwrap_or(LONGEST_PAUSE)
            .min(LONGEST_PAUSE),
    )
}

/// What is left of the pause after `count` failures, the last `ago` seconds ago.
fn left(count: u32, ago: u64, threshold: u32) -> Option<Duration> {
    pause(count, threshold)?
        .checked_sub(Duration::from_secs(ago))
        .filter(|d| !d.is_zero())
}

/// Where failed sign-ins are counted.
#[derive(Debug)]
pub enum Throttle {
    /// In this process (one control-plane node).
    Local(Memory),
    /// In the database, shared by every control-plane node.
    Shared,
}

impl Throttle {
    /// How long a sign-in for `user` from `addr` must wait, when it must.
    pub async fn paused(
        &self,
        store: &crate::store::Store,
        user: &str,
        addr: Option<IpAddr>,
    ) -> Result<Option<Duration>, crate::error::Error> {
        match self {
            Self::Local(m) => Ok(m.paused(user, addr)),
            Self::Shared => {
                let now = crate::store::now();
                let rows = store
                    .signin_failures(&user_key(user), addr.map(addr_key))
                    .await?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(key, count, last)| {
                        let threshold = if key.starts_with("user:") {
                            USER_FAILURES
                        } else {
                            ADDRESS_FAILURES
                        };
                        left(count, now.saturating_sub(last).max(0) as u64, threshold)
                    })
                    .max())
            }
        }
    }

    /// Counts a failed sign-in.
    pub async fn failed(
        &self,
        store: &crate::store::Store,
        user: &str,
        addr: Option<IpAddr>,
    ) -> Result<(), crate::error::Error> {
        match self {
            Self::Local(m) => {
                m.failed(user, addr);
                Ok(())
            }
            Self::Shared => {
                store
                    .signin_failed(
                        &user_key(user),
                        addr.map(addr_key),
                        LONGEST_PAUSE.as_secs() as i64,
                    )
                    .await
            }
        }
    }

    /// Forgets the user name's failures (a good sign-in).
    pub async fn succeeded(
        &self,
        store: &crate::store::Store,
        user: &str,
    ) -> Result<(), crate::error::Error> {
        match self {
            Self::Local(m) => {
                m.succeeded(user);
                Ok(())
            }
            Self::Shared => store.signin_succeeded(&user_key(user)).await,
        }
    }
}

fn user_key(user: &str) -> String {
    format!("user:{}", user.to_lowercase())
}

fn addr_key(a: IpAddr) -> String {
    format!("addr:{a}")
}

/// Failed sign-ins by user name and by address, in memory.
#[derive(Debug, Default)]
pub struct Memory {
    failures: Mutex<HashMap<Key, Failures>>,
}

impl Memory {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Failures>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long a sign-in for `user` from `addr` must wait, when it must.
    pub fn paused(&self, user: &str, addr: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let map = self.lock();
        let user = map
            .get(&Key::User(user.to_lowercase()))
            .and_then(|f| f.paused_until(USER_FAILURES));
        let addr = addr
            .and_then(|a| map.get(&Key::Address(a)))
            .and_then(|f| f.paused_until(ADDRESS_FAILURES));
        user.into_iter()
            .chain(addr)
            .max()
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// Counts a failed sign-in.
    pub fn failed(&self, user: &str, addr: Option<IpAddr>) {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, f| now.duration_since(f.last) < LONGEST_PAUSE);
        }
        if map.len() >= MAX_ENTRIES {
            return;
        }
        let keys = std::iter::once(Key::User(user.to_lowercase())).chain(addr.map(Key::Address));
        for k in keys {
            let f = map.entry(k).or_insert(Failures {
                count: 0,
                last: now,
            });
            // Failures long ago are forgotten.
            if now.duration_since(f.last) > LONGEST_PAUSE {
                f.count = 0;
            }
            f.count += 1;
            f.last = now;
        }
    }

    /// Forgets the user name's failures (a good sign-in).
    pub fn succeeded(&self, user: &str) {
        self.lock().remove(&Key::User(user.to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_addresses_pause_after_their_thresholds() {
        let t = Memory::default();
        let here: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..USER_FAILURES - 1 {
            t.failed("Alice", Some(here));
        }
        assert!(t.paused("alice", Some(here)).is_none());
        t.failed("alice", Some(here));
        let wait = t.paused("ALICE", None).unwrap_or_default();
        assert!(wait > Duration::ZERO && wait <= FIRST_PAUSE, "{wait:?}");
        // Another name from the same address is not paused until the address is.
        assert!(t.paused("bob", Some(here)).is_none());
        for i in USER_FAILURES..ADDRESS_FAILURES {
            t.failed(&format!("u{i}"), Some(here));
        }
        assert!(t.paused("bob", Some(here)).is_some());
        assert!(t.paused("bob", Some([10, 0, 0, 2].into())).is_none());
        // A good sign-in clears the name, not the address.
        t.succeeded("alice");
        assert!(t.paused("alice", None).is_none());
        assert!(t.paused("alice", Some(here)).is_some());
    }

    #[test]
    fn the_shared_pause_is_the_same_rule() {
        assert_eq!(left(4, 0, 5), None);
        assert_eq!(left(5, 10, 5), Some(FIRST_PAUSE - Duration::from_secs(10)));
        assert_eq!(left(5, 31, 5), None);
        assert_eq!(left(60, 0, 5), Some(LONGEST_PAUSE));
    }

    #[test]
    fn pauses_double_up_to_the_longest() {
        let f = |count| {
            Failures {
                count,
                last: Instant::now(),
            }
            .paused_until(5)
            .map(|u| u.duration_since(Instant::now()))
        };
        assert!(f(4).is_none());
        assert!(f(5).unwrap_or_default() <= FIRST_PAUSE);
        assert!(f(6).unwrap_or_default() > FIRST_PAUSE);
        assert!(f(60).unwrap_or_default() <= LONGEST_PAUSE);
    }
}
