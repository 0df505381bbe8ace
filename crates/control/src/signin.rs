//! Back-off for the password grant: after a few failed sign-ins for one user name (known or
//! not) or from one address, every attempt is refused for a while without looking at the
//! password, and the pause doubles with each further failure. State is in memory, bounded,
//! and forgotten a while after the last failure.

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
        let over = self.count.checked_sub(threshold)?;
        let pause = FIRST_PAUSE
            .checked_mul(1u32 << over.min(16))
            .unwrap_or(LONGEST_PAUSE)
            .min(LONGEST_PAUSE);
        Some(self.last + pause)
    }
}

/// Failed sign-ins by user name and by address.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<Key, Failures>>,
}

impl Throttle {
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
        let t = Throttle::default();
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
