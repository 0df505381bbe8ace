//! The cache of verified tokens: bounded, sharded by the token's hash, each shard evicting
//! with a clock (second chance). A full shard gives up one entry not used since the hand
//! last passed it, never the whole shard: many distinct tokens cost no cliff of
//! re-verifications.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Shards of the cache.
const SHARDS: usize = 16;
/// Entries kept by default: 16,384 tokens.
pub const DEFAULT_CAPACITY: usize = 16 * 1024;

/// A bounded map from a token's SHA-256 to what verifying it said.
#[derive(Debug)]
pub struct TokenCache<V> {
    shards: [Mutex<Shard<V>>; SHARDS],
    per_shard: usize,
}

#[derive(Debug)]
struct Shard<V> {
    index: HashMap<[u8; 32], usize>,
    slots: Vec<Slot<V>>,
    hand: usize,
}

#[derive(Debug)]
struct Slot<V> {
    hash: [u8; 32],
    value: Arc<V>,
    used: bool,
}

impl<V> Default for TokenCache<V> {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl<V> TokenCache<V> {
    /// A cache of at most `capacity` entries (rounded up to a multiple of the shards).
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: std::array::from_fn(|_| {
                Mutex::new(Shard {
                    index: HashMap::new(),
                    slots: Vec::new(),
                    hand: 0,
                })
            }),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, hash: &[u8; 32]) -> std::sync::MutexGuard<'_, Shard<V>> {
        self.shards[usize::from(hash[0]) % SHARDS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entry of `hash`, marked as used.
    pub fn get(&self, hash: &[u8; 32]) -> Option<Arc<V>> {
        let mut s = self.shard(hash);
        let i = *s.index.get(hash)?;
        let slot = &mut s.slots[i];
        slot.used = true;
        Some(slot.value.clone())
    }

    /// Keeps `value` for `hash`, evicting one entry of a full shard.
    pub fn insert(&self, hash: [u8; 32], value: Arc<V>) {
        let per_shard = self.per_shard;
        let mut guard = self.shard(&hash);
        let s = &mut *guard;
        if let Some(&i) = s.index.get(&hash) {
            s.slots[i].value = value;
            return;
        }
        if s.slots.len() < per_shard {
            s.index.insert(hash, s.slots.len());
            s.slots.push(Slot {
                hash,
                value,
                used: false,
            });
            return;
        }
        // The clock: pass over used entries (clearing their mark), take the first unused.
        // At most one full turn clears every mark, so the second turn finds one.
        loop {
            let i = s.hand;
            s.hand = (s.hand + 1) % s.slots.len();
            let slot = &mut s.slots[i];
            if slot.used {
                slot.used = false;
                continue;
            }
            s.index.remove(&slot.hash);
            *slot = Slot {
                hash,
                value,
                used: false,
            };
            s.index.insert(hash, i);
            return;
        }
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .slots
                    .len()
            })
            .sum()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hash in shard 0 numbered `n`.
    fn h(n: u32) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[1..5].copy_from_slice(&n.to_le_bytes());
        b
    }

    #[test]
    fn a_full_shard_evicts_one_unused_entry_not_everything() {
        let c = TokenCache::new(4 * SHARDS);
        for n in 0..4 {
            c.insert(h(n), Arc::new(n));
        }
        // 0 and 2 are in use; inserting two more evicts 1 and 3, the unused ones.
        assert!(c.get(&h(0)).is_some() && c.get(&h(2)).is_some());
        c.insert(h(10), Arc::new(10));
        c.insert(h(11), Arc::new(11));
        assert_eq!(c.get(&h(0)).as_deref(), Some(&0));
        assert_eq!(c.get(&h(2)).as_deref(), Some(&2));
        assert!(c.get(&h(1)).is_none() && c.get(&h(3)).is_none());
        assert_eq!(c.get(&h(11)).as_deref(), Some(&11));
        assert_eq!(c.len(), 4, "the shard stays full, never cleared");
        // Many distinct tokens: the cache stays bounded and keeps the busy one.
        for n in 100..10_000 {
            c.insert(h(n), Arc::new(n));
            assert!(c.get(&h(0)).is_some(), "a token in use stays at {n}");
        }
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn an_entry_is_replaced_in_place() {
        let c = TokenCache::new(SHARDS);
        c.insert(h(1), Arc::new("a"));
        c.insert(h(1), Arc::new("b"));
        assert_eq!(c.get(&h(1)).as_deref(), Some(&"b"));
        assert_eq!(c.len(), 1);
    }
}
