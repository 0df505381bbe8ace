//! API keys and consumers held compactly, for gateways with a million of each.
//!
//! A table is split into shards by a hash of each entity's key (the key's SHA-256 for
//! API keys, a hash of the name for consumers). A shard keeps its rows sorted by that
//! hash in plain arrays, its long names in one byte arena and its API lists interned. A
//! key's row is one cache line with a short consumer name in it; a lookup guesses the
//! row's place from the hash, walks a few 4-byte tags and reads that row. A million keys
//! and their million consumers take about 150 MB on a node, where a `Vec<ApiKeyGrant>`
//! and a hash map took over a kilobyte each (`cargo bench -p portico-proxy --bench scale`).
//!
//! Clones share every shard's arrays; a change copies only the shards it touches (a few
//! hundred rows each), so a node applies a one-key delta in well under a millisecond
//! and the runtime still serving the previous version keeps its own view.
//!
//! Both tables serialize as the JSON arrays they replace ([`ApiKeyGrant`] and
//! [`ConsumerLimits`] objects), in a canonical order: by hash for keys, by the hash of
//! the name for consumers.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    fmt,
    sync::Arc,
};

use serde::{Deserialize, Serialize, de::SeqAccess, ser::SerializeSeq};

use crate::security::{ApiKeyGrant, ConsumerLimits, KeyType};

/// Rows per shard a table is built for; shards are split again past four times this.
const SHARD_ROWS: usize = 256;
/// At most 2^16 shards.
const MAX_BITS: u32 = 16;

/// A list of API ids, shared by every row that names the same list.
pub type Apis = Arc<[Arc<str>]>;

/// Why an entity cannot be held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// An API key's hash is not 64 hex digits.
    #[error("the API key hash `{0}` must be 64 hex digits (SHA-256)")]
    BadHash(String),
    /// Two entities share a key.
    #[error("the {kind} `{key}` is listed twice")]
    Duplicate {
        /// API key or consumer.
        kind: &'static str,
        /// The key (hash or name).
        key: String,
    },
    /// A name longer than a shard can hold (4 GiB).
    #[error("a {0} name is too long")]
    TooLong(&'static str),
}

/// The tiers of a consumer that has any: most have none, and pay nothing for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerTierNames {
    /// Tier over everything it calls.
    pub tier: Option<String>,
    /// Tier per subscribed API (API id -> tier).
    pub subscriptions: BTreeMap<String, String>,
}

/// One shard: rows sorted by (hash, key). It sits in the table's vector itself (a lookup
/// reads it there, not through one more pointer); its arrays are shared between clones.
#[derive(Debug, Clone)]
struct Shard<R> {
    /// The top 32 bits of each row's placing hash: a lookup walks these (sixteen to a
    /// cache line) and reads one row.
    tags: Arc<[u32]>,
    /// Sorted by (placing hash, key); each row carries its placing hash.
    rows: Arc<[R]>,
    names: Arc<[u8]>,
    sets: Arc<[Apis]>,
    extras: Arc<[ConsumerTierNames]>,
}

impl<R> Default for Shard<R> {
    fn default() -> Self {
        Self {
            tags: Arc::new([]),
            rows: Arc::new([]),
            names: Arc::new([]),
            sets: Arc::new([]),
            extras: Arc::new([]),
        }
    }
}

/// Builds a shard's arrays and arena.
#[derive(Default)]
struct Packer {
    names: Vec<u8>,
    sets: Vec<Apis>,
    set_index: HashMap<*const [Arc<str>], u32>,
    extras: Vec<ConsumerTierNames>,
}

/// Shares equal API lists between shards while a table is built or changed.
#[derive(Default)]
struct Interner {
    sets: HashMap<Vec<String>, Apis>,
}

impl Interner {
    fn seed(&mut self, sets: &[Apis]) {
        for s in sets {
            let k: Vec<String> = s.iter().map(|a| a.to_string()).collect();
            self.sets.entry(k).or_insert_with(|| s.clone());
        }
    }

    fn apis(&mut self, apis: &[String]) -> Apis {
        if let Some(s) = self.sets.get(apis) {
            return s.clone();
        }
        let s: Apis = apis.iter().map(|a| Arc::from(a.as_str())).collect();
        self.sets.insert(apis.to_vec(), s.clone());
        s
    }
}

impl Packer {
    fn name(&mut self, kind: &'static str, name: &str) -> Result<(u32, u32), PackError> {
        let off = u32::try_from(self.names.len()).map_err(|_| PackError::TooLong(kind))?;
        let len = u32::try_from(name.len()).map_err(|_| PackError::TooLong(kind))?;
        off.checked_add(len).ok_or(PackError::TooLong(kind))?;
        self.names.extend_from_slice(name.as_bytes());
        Ok((off, len))
    }

    fn set(&mut self, interner: &mut Interner, apis: &[String]) -> u32 {
        let s = interner.apis(apis);
        let ptr = Arc::as_ptr(&s);
        if let Some(i) = self.set_index.get(&ptr) {
            return *i;
        }
        let i = self.sets.len() as u32;
        self.set_index.insert(ptr, i);
        self.sets.push(s);
        i
    }

    fn finish<R>(self, rows: Vec<R>, hash: impl Fn(&R) -> u64) -> Shard<R> {
        Shard {
            tags: rows.iter().map(|r| (hash(r) >> 32) as u32).collect(),
            rows: rows.into(),
            names: self.names.into(),
            sets: self.sets.into(),
            extras: self.extras.into(),
        }
    }
}

impl<R> Shard<R> {
    fn name(&self, off: u32, len: u32) -> &[u8] {
        &self.names[off as usize..(off + len) as usize]
    }

    fn text(&self, off: u32, len: u32) -> &str {
        // Names enter the arena from `&str` at boundaries the rows record.
        std::str::from_utf8(self.name(off, len)).unwrap_or_default()
    }

    fn apis(&self, set: u32) -> &[Arc<str>] {
        self.sets.get(set as usize).map(|s| &s[..]).unwrap_or(&[])
    }
}

/// An entity a [`Table`] holds.
trait Packed: Sized + Clone + PartialEq {
    /// Its row.
    type Row: Copy + fmt::Debug;
    /// The word for it in errors.
    const WORD: &'static str;
    /// The bytes it is found by (the decoded hash, the name).
    fn key_bytes(&self) -> Result<Cow<'_, [u8]>, PackError>;
    /// The hash it is placed by.
    fn place(key: &[u8]) -> u64;
    /// A row's placing hash.
    fn row_hash(row: &Self::Row) -> u64;
    /// Its row in the shard `p` builds.
    fn pack(&self, key: &[u8], p: &mut Packer, i: &mut Interner) -> Result<Self::Row, PackError>;
    /// The entity back from its row.
    fn unpack(row: &Self::Row, s: &Shard<Self::Row>) -> Self;
    /// A row's key bytes.
    fn row_key<'a>(row: &'a Self::Row, s: &'a Shard<Self::Row>) -> &'a [u8];
    /// Whether two rows (with equal keys) hold the same entity.
    fn same(a: &Self::Row, sa: &Shard<Self::Row>, b: &Self::Row, sb: &Shard<Self::Row>) -> bool;
}

/// Shards of one kind of entity.
struct Table<T: Packed> {
    bits: u32,
    len: usize,
    shards: Arc<Vec<Shard<T::Row>>>,
}

impl<T: Packed> Clone for Table<T> {
    fn clone(&self) -> Self {
        Self {
            bits: self.bits,
            len: self.len,
            shards: self.shards.clone(),
        }
    }
}

impl<T: Packed> Default for Table<T> {
    fn default() -> Self {
        Self {
            bits: 0,
            len: 0,
            shards: Arc::new(vec![Shard::default()]),
        }
    }
}

/// Shard bits for `n` rows.
fn bits_for(n: usize) -> u32 {
    let shards = n.div_ceil(SHARD_ROWS).max(1);
    shards.next_power_of_two().trailing_zeros().min(MAX_BITS)
}

fn shard_of(h: u64, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        (h >> (64 - bits)) as usize
    }
}

/// Where tag `t` of hash `h` is, or would go, among a shard's tags (the first not below
/// it): guessed from the hash, since hashes spread evenly over a shard's range, then
/// walked.
fn lower_bound(tags: &[u32], h: u64, bits: u32) -> usize {
    let n = tags.len();
    if n == 0 {
        return 0;
    }
    let t = (h >> 32) as u32;
    let local = if bits == 0 { h } else { h << bits };
    let mut i = ((local as u128 * n as u128) >> 64) as usize;
    while i > 0 && tags[i - 1] >= t {
        i -= 1;
    }
    while i < n && tags[i] < t {
        i += 1;
    }
    i
}

impl<T: Packed> Table<T> {
    /// Builds a table from entities in any order; two with one key are refused.
    fn build(items: impl IntoIterator<Item = T>) -> Result<Self, PackError> {
        Self::build_fallible(items.into_iter().map(Ok))
    }

    fn build_fallible(
        items: impl Iterator<Item = Result<T, PackError>>,
    ) -> Result<Self, PackError> {
        // Packed first into one staging shard, so a million entities are never all held
        // unpacked at once.
        let mut interner = Interner::default();
        let mut p = Packer::default();
        let mut order: Vec<(u64, u32)> = Vec::new();
        let mut rows = Vec::new();
        for item in items {
            let item = item?;
            let key = item.key_bytes()?;
            let h = T::place(&key);
            rows.push(item.pack(&key, &mut p, &mut interner)?);
            order.push((h, (rows.len() - 1) as u32));
        }
        let staging = p.finish(rows, T::row_hash);
        order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                T::row_key(&staging.rows[a.1 as usize], &staging)
                    .cmp(T::row_key(&staging.rows[b.1 as usize], &staging))
            })
        });
        for w in order.windows(2) {
            let (a, b) = (
                &staging.rows[w[0].1 as usize],
                &staging.rows[w[1].1 as usize],
            );
            if w[0].0 == w[1].0 && T::row_key(a, &staging) == T::row_key(b, &staging) {
                let e = T::unpack(a, &staging);
                return Err(PackError::Duplicate {
                    kind: T::WORD,
                    key: describe_key::<T>(&e),
                });
            }
        }
        let bits = bits_for(order.len());
        let mut shards = Vec::with_capacity(1 << bits);
        let mut at = 0;
        for s in 0..(1usize << bits) {
            let end = at + order[at..].partition_point(|(h, _)| shard_of(*h, bits) == s);
            let items = order[at..end]
                .iter()
                .map(|(_, i)| T::unpack(&staging.rows[*i as usize], &staging));
            shards.push(pack_shard::<T>(items, &mut interner)?);
            at = end;
        }
        Ok(Self {
            bits,
            len: order.len(),
            shards: Arc::new(shards),
        })
    }

    fn shard(&self, h: u64) -> &Shard<T::Row> {
        &self.shards[shard_of(h, self.bits)]
    }

    /// The row with `key`, and its shard.
    fn find(&self, key: &[u8]) -> Option<(&T::Row, &Shard<T::Row>)> {
        let h = T::place(key);
        let s = self.shard(h);
        let t = (h >> 32) as u32;
        let mut i = lower_bound(&s.tags, h, self.bits);
        while i < s.tags.len() && s.tags[i] == t {
            let r = &s.rows[i];
            if T::row_hash(r) == h && T::row_key(r, s) == key {
                return Some((r, s));
            }
            i += 1;
        }
        None
    }

    /// What to put and which keys to remove to turn `old` into `new`: both are walked
    /// once, side by side in canonical order; shards they share are skipped.
    fn diff(old: &Self, new: &Self) -> (Vec<T>, Vec<T>) {
        let mut out = (Vec::new(), Vec::new());
        if old.bits == new.bits {
            for (a, b) in old.shards.iter().zip(new.shards.iter()) {
                if !Arc::ptr_eq(&a.rows, &b.rows) {
                    merge::<T>(
                        a.rows.iter().map(|r| (r, a)),
                        b.rows.iter().map(|r| (r, b)),
                        &mut out,
                    );
                }
            }
        } else {
            merge::<T>(old.iter(), new.iter(), &mut out);
        }
        out
    }

    fn iter(&self) -> impl Iterator<Item = (&T::Row, &Shard<T::Row>)> {
        self.shards
            .iter()
            .flat_map(|s| s.rows.iter().map(move |r| (r, s)))
    }

    /// Removes `remove` then puts `put` (replacing entities with the same key), calling
    /// `gone` with every entity removed or replaced. Only the shards touched are copied.
    fn update(
        &mut self,
        put: Vec<T>,
        remove: &[Vec<u8>],
        mut gone: impl FnMut(&T),
    ) -> Result<(), PackError> {
        let mut by_shard: BTreeMap<usize, (Vec<&[u8]>, Vec<T>)> = BTreeMap::new();
        for k in remove {
            let s = shard_of(T::place(k), self.bits);
            by_shard.entry(s).or_default().0.push(k);
        }
        for e in put {
            let s = shard_of(T::place(&e.key_bytes()?), self.bits);
            by_shard.entry(s).or_default().1.push(e);
        }
        if by_shard.is_empty() {
            return Ok(());
        }
        let mut len = self.len;
        let mut fresh = Vec::with_capacity(by_shard.len());
        for (s, (removes, puts)) in by_shard {
            let shard = &self.shards[s];
            let mut items: Vec<(u64, T)> = shard
                .rows
                .iter()
                .map(|r| (T::row_hash(r), T::unpack(r, shard)))
                .collect();
            let find = |items: &Vec<(u64, T)>, key: &[u8]| -> Result<usize, usize> {
                let h = T::place(key);
                items.binary_search_by(|(ih, it)| {
                    ih.cmp(&h).then_with(|| {
                        it.key_bytes()
                            .map(|k| k.into_owned())
                            .unwrap_or_default()
                            .as_slice()
                            .cmp(key)
                    })
                })
            };
            for k in removes {
                if let Ok(i) = find(&items, k) {
                    let (_, old) = items.remove(i);
                    gone(&old);
                    len -= 1;
                }
            }
            for e in puts {
                let key = e.key_bytes()?.into_owned();
                match find(&items, &key) {
                    Ok(i) => {
                        gone(&items[i].1);
                        items[i].1 = e;
                    }
                    Err(i) => {
                        items.insert(i, (T::place(&key), e));
                        len += 1;
                    }
                }
            }
            let mut interner = Interner::default();
            interner.seed(&shard.sets);
            fresh.push((
                s,
                pack_shard::<T>(items.into_iter().map(|(_, e)| e), &mut interner)?,
            ));
        }
        let shards = Arc::make_mut(&mut self.shards);
        for (s, shard) in fresh {
            shards[s] = shard;
        }
        self.len = len;
        // Grown or shrunk far past what the shards were cut for: cut them again.
        if bits_for(len) > self.bits + 1 || bits_for(len) + 2 < self.bits {
            // Streamed into the new table's staging: never all unpacked at once.
            let rebuilt = Self::build(self.iter().map(|(r, s)| T::unpack(r, s)))?;
            *self = rebuilt;
        }
        Ok(())
    }
}

/// Walks two row sequences in canonical order, collecting what `b` puts (new or
/// changed) and what it removes.
fn merge<'a, T: Packed + 'a>(
    a: impl Iterator<Item = (&'a T::Row, &'a Shard<T::Row>)>,
    b: impl Iterator<Item = (&'a T::Row, &'a Shard<T::Row>)>,
    (put, removed): &mut (Vec<T>, Vec<T>),
) {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(&(ra, sa)), Some(&(rb, sb))) => T::row_hash(ra)
                .cmp(&T::row_hash(rb))
                .then_with(|| T::row_key(ra, sa).cmp(T::row_key(rb, sb))),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some((r, s)) = a.next() {
                    removed.push(T::unpack(r, s));
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some((r, s)) = b.next() {
                    put.push(T::unpack(r, s));
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some((ra, sa)), Some((rb, sb))) = (a.next(), b.next())
                    && !T::same(ra, sa, rb, sb)
                {
                    put.push(T::unpack(rb, sb));
                }
            }
        }
    }
}

/// Packs entities already in (hash, key) order into one shard.
fn pack_shard<T: Packed>(
    items: impl Iterator<Item = T>,
    interner: &mut Interner,
) -> Result<Shard<T::Row>, PackError> {
    let mut p = Packer::default();
    let mut rows = Vec::new();
    for e in items {
        let key = e.key_bytes()?;
        rows.push(e.pack(&key, &mut p, interner)?);
    }
    rows.shrink_to_fit();
    Ok(p.finish(rows, T::row_hash))
}

fn describe_key<T: Packed>(e: &T) -> String {
    match e.key_bytes() {
        Ok(k) => String::from_utf8(k.into_owned()).unwrap_or_else(|e| hex(e.as_bytes())),
        Err(_) => String::new(),
    }
}

fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}

/// The 32 bytes of a SHA-256 written as 64 hex digits (either case).
pub fn decode_hash(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Some(out)
}

/// Consumer names this long or shorter sit in the key's row.
const INLINE_NAME: usize = 18;

/// An API key's row: one cache line, with the consumer's name in it when short (a
/// lookup then reads the row and nothing else of the shard but its tags).
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
struct KeyRow {
    hash: [u8; 32],
    expires_at: u64,
    apis: u32,
    /// Bit 0: sandbox; bit 1: it expires.
    flags: u8,
    /// The name's length when inline, else `u8::MAX` (and `name` holds its place in the
    /// shard's arena: offset and length, little-endian).
    name_len: u8,
    name: [u8; INLINE_NAME],
}

impl KeyRow {
    fn consumer<'a>(&'a self, s: &'a Shard<KeyRow>) -> &'a [u8] {
        match self.name_len {
            u8::MAX => {
                let word = |i: usize| {
                    let mut b = [0u8; 4];
                    b.copy_from_slice(&self.name[i..i + 4]);
                    u32::from_le_bytes(b)
                };
                s.name(word(0), word(4))
            }
            n => &self.name[..usize::from(n).min(INLINE_NAME)],
        }
    }
}

impl Packed for ApiKeyGrant {
    type Row = KeyRow;
    const WORD: &'static str = "API key";

    fn key_bytes(&self) -> Result<Cow<'_, [u8]>, PackError> {
        decode_hash(&self.hash)
            .map(|h| Cow::Owned(h.to_vec()))
            .ok_or_else(|| PackError::BadHash(self.hash.clone()))
    }

    fn place(key: &[u8]) -> u64 {
        let mut b = [0u8; 8];
        let n = key.len().min(8);
        b[..n].copy_from_slice(&key[..n]);
        u64::from_be_bytes(b)
    }

    fn row_hash(r: &KeyRow) -> u64 {
        Self::place(&r.hash)
    }

    fn pack(&self, key: &[u8], p: &mut Packer, i: &mut Interner) -> Result<KeyRow, PackError> {
        let mut hash = [0u8; 32];
        hash.copy_from_slice(key);
        let mut name = [0u8; INLINE_NAME];
        let name_len = if self.consumer.len() <= INLINE_NAME {
            name[..self.consumer.len()].copy_from_slice(self.consumer.as_bytes());
            self.consumer.len() as u8
        } else {
            let (off, len) = p.name("consumer", &self.consumer)?;
            name[..4].copy_from_slice(&off.to_le_bytes());
            name[4..8].copy_from_slice(&len.to_le_bytes());
            u8::MAX
        };
        Ok(KeyRow {
            hash,
            expires_at: self.expires_at.unwrap_or(0),
            apis: p.set(i, &self.apis),
            flags: u8::from(self.key_type == KeyType::Sandbox)
                | u8::from(self.expires_at.is_some()) << 1,
            name_len,
            name,
        })
    }

    fn unpack(r: &KeyRow, s: &Shard<KeyRow>) -> Self {
        ApiKeyGrant {
            hash: hex(&r.hash),
            consumer: String::from_utf8_lossy(r.consumer(s)).into_owned(),
            key_type: if r.flags & 1 == 1 {
                KeyType::Sandbox
            } else {
                KeyType::Production
            },
            apis: s.apis(r.apis).iter().map(|a| a.to_string()).collect(),
            expires_at: (r.flags & 2 == 2).then_some(r.expires_at),
        }
    }

    fn row_key<'a>(r: &'a KeyRow, _: &'a Shard<KeyRow>) -> &'a [u8] {
        &r.hash
    }

    fn same(a: &KeyRow, sa: &Shard<KeyRow>, b: &KeyRow, sb: &Shard<KeyRow>) -> bool {
        a.hash == b.hash
            && a.flags == b.flags
            && a.expires_at == b.expires_at
            && a.consumer(sa) == b.consumer(sb)
            && sa.apis(a.apis) == sb.apis(b.apis)
    }
}

/// A consumer's row: 24 bytes.
#[derive(Debug, Clone, Copy)]
struct ConsumerRow {
    /// Its placing hash (of the name).
    hash: u64,
    name: (u32, u32),
    apis: u32,
    /// Index of its tiers in the shard's extras, or `u32::MAX`.
    extra: u32,
}

/// FNV-1a seeded, with a final mix (murmur3's): the same on every node and build, spread
/// evenly. Also what consistent hashing places requests by.
pub fn fnv_mix(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for x in bytes {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A consumer name's placing hash.
fn name_hash(b: &[u8]) -> u64 {
    fnv_mix(b, 0)
}

impl Packed for ConsumerLimits {
    type Row = ConsumerRow;
    const WORD: &'static str = "consumer";

    fn key_bytes(&self) -> Result<Cow<'_, [u8]>, PackError> {
        Ok(Cow::Borrowed(self.name.as_bytes()))
    }

    fn place(key: &[u8]) -> u64 {
        name_hash(key)
    }

    fn row_hash(r: &ConsumerRow) -> u64 {
        r.hash
    }

    fn pack(&self, key: &[u8], p: &mut Packer, i: &mut Interner) -> Result<ConsumerRow, PackError> {
        let extra = if self.tier.is_none() && self.subscriptions.is_empty() {
            u32::MAX
        } else {
            p.extras.push(ConsumerTierNames {
                tier: self.tier.clone(),
                subscriptions: self.subscriptions.clone(),
            });
            (p.extras.len() - 1) as u32
        };
        Ok(ConsumerRow {
            hash: name_hash(key),
            name: p.name("consumer", &self.name)?,
            apis: p.set(i, &self.apis),
            extra,
        })
    }

    fn unpack(r: &ConsumerRow, s: &Shard<ConsumerRow>) -> Self {
        let extra = s.extras.get(r.extra as usize);
        ConsumerLimits {
            name: s.text(r.name.0, r.name.1).to_owned(),
            tier: extra.and_then(|e| e.tier.clone()),
            subscriptions: extra.map(|e| e.subscriptions.clone()).unwrap_or_default(),
            apis: s.apis(r.apis).iter().map(|a| a.to_string()).collect(),
        }
    }

    fn row_key<'a>(r: &'a ConsumerRow, s: &'a Shard<ConsumerRow>) -> &'a [u8] {
        s.name(r.name.0, r.name.1)
    }

    fn same(
        a: &ConsumerRow,
        sa: &Shard<ConsumerRow>,
        b: &ConsumerRow,
        sb: &Shard<ConsumerRow>,
    ) -> bool {
        sa.name(a.name.0, a.name.1) == sb.name(b.name.0, b.name.1)
            && sa.apis(a.apis) == sb.apis(b.apis)
            && sa.extras.get(a.extra as usize) == sb.extras.get(b.extra as usize)
    }
}

macro_rules! table_type {
    ($name:ident, $entity:ty, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Default)]
        pub struct $name(Table<$entity>);

        impl $name {
            /// Builds it from entities in any order; two with one key are refused.
            pub fn try_from_iter(
                items: impl IntoIterator<Item = $entity>,
            ) -> Result<Self, PackError> {
                Table::build(items).map(Self)
            }

            /// How many it holds.
            pub fn len(&self) -> usize {
                self.0.len
            }

            /// Whether it holds none.
            pub fn is_empty(&self) -> bool {
                self.0.len == 0
            }

            /// Every entity, unpacked, in canonical order.
            pub fn iter(&self) -> impl Iterator<Item = $entity> + '_ {
                self.0
                    .iter()
                    .map(|(r, s)| <$entity as Packed>::unpack(r, s))
            }

            /// Removes the entities with keys `remove`, then puts `put`, calling `gone`
            /// with each entity removed or replaced (nothing changes on an error).
            pub fn update(
                &mut self,
                put: Vec<$entity>,
                remove: &[String],
                gone: impl FnMut(&$entity),
            ) -> Result<(), PackError> {
                let remove = remove
                    .iter()
                    .filter_map(|k| Self::key_of(k))
                    .collect::<Vec<_>>();
                let mut next = self.clone();
                next.0.update(put, &remove, gone)?;
                *self = next;
                Ok(())
            }

            /// What to put and what to remove (whole, for their keys) to turn `old`
            /// into `new`.
            pub fn diff(old: &Self, new: &Self) -> (Vec<$entity>, Vec<$entity>) {
                Table::diff(&old.0, &new.0)
            }

            /// The entity with key `key` (as written in deltas), unpacked.
            pub fn get(&self, key: &str) -> Option<$entity> {
                let k = Self::key_of(key)?;
                self.0
                    .find(&k)
                    .map(|(r, s)| <$entity as Packed>::unpack(r, s))
            }
        }

        impl From<Vec<$entity>> for $name {
            /// Builds it, keeping the last of entities with one key and leaving out keys
            /// that are not hashes (validation of a written list reports those).
            fn from(items: Vec<$entity>) -> Self {
                let mut seen = HashMap::new();
                let mut keep = Vec::with_capacity(items.len());
                for e in items.into_iter().rev() {
                    if let Ok(k) = e.key_bytes().map(Cow::into_owned) {
                        if seen.insert(k, ()).is_none() {
                            keep.push(e);
                        }
                    }
                }
                Table::build(keep).map(Self).unwrap_or_default()
            }
        }

        impl FromIterator<$entity> for $name {
            fn from_iter<I: IntoIterator<Item = $entity>>(iter: I) -> Self {
                Self::from(iter.into_iter().collect::<Vec<_>>())
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0.shards, &other.0.shards)
                    || (self.len() == other.len() && self.iter().eq(other.iter()))
            }
        }

        impl Eq for $name {}

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("len", &self.len())
                    .finish_non_exhaustive()
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.len()))?;
                for e in self.iter() {
                    seq.serialize_element(&e)?;
                }
                seq.end()
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visit;
                impl<'de> serde::de::Visitor<'de> for Visit {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a list of {}s", <$entity as Packed>::WORD)
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$name, A::Error> {
                        // Each element is packed as it is read: a million are never
                        // held unpacked at once.
                        let mut failed = None;
                        let items = std::iter::from_fn(|| {
                            if failed.is_some() {
                                return None;
                            }
                            match seq.next_element::<$entity>() {
                                Ok(Some(e)) => Some(Ok(e)),
                                Ok(None) => None,
                                Err(e) => {
                                    failed = Some(e);
                                    None
                                }
                            }
                        });
                        let built = Table::build_fallible(items);
                        if let Some(e) = failed {
                            return Err(e);
                        }
                        built
                            .map($name)
                            .map_err(|e| serde::de::Error::custom(e.to_string()))
                    }
                }
                d.deserialize_seq(Visit)
            }
        }
    };
}

table_type!(
    ApiKeys,
    ApiKeyGrant,
    "API keys a gateway accepts, held compactly (see the module's documentation)."
);
table_type!(
    Consumers,
    ConsumerLimits,
    "Consumers' subscriptions and tiers, held compactly (see the module's documentation)."
);

impl ApiKeys {
    fn key_of(k: &str) -> Option<Vec<u8>> {
        decode_hash(k).map(|h| h.to_vec())
    }

    /// The key whose SHA-256 is `hash`: what a gateway looks up per request.
    pub fn find(&self, hash: &[u8; 32]) -> Option<KeyView<'_>> {
        self.0.find(hash).map(|(row, shard)| KeyView { row, shard })
    }

    /// The hashes (as written in deltas) of the keys held for the consumers `of` picks
    /// (by name, as held): one pass over the rows, reading each name in place.
    pub fn hashes_where(&self, mut of: impl FnMut(&[u8]) -> bool) -> Vec<String> {
        self.0
            .iter()
            .filter(|(r, s)| of(r.consumer(s)))
            .map(|(r, _)| hex(&r.hash))
            .collect()
    }
}

impl Consumers {
    fn key_of(k: &str) -> Option<Vec<u8>> {
        Some(k.as_bytes().to_vec())
    }

    /// The names of the consumers `of` picks: one pass over the rows.
    pub fn names_where(&self, mut of: impl FnMut(&[u8]) -> bool) -> Vec<String> {
        self.0
            .iter()
            .map(|(r, s)| s.name(r.name.0, r.name.1))
            .filter(|n| of(n))
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect()
    }

    /// The APIs consumer `name` is subscribed to, when it is here.
    pub fn apis(&self, name: &str) -> Option<&[Arc<str>]> {
        self.0.find(name.as_bytes()).map(|(r, s)| s.apis(r.apis))
    }

    /// Consumers with a tier or a subscription tier, and those tiers.
    pub fn tiered(&self) -> impl Iterator<Item = (&str, &ConsumerTierNames)> {
        self.0.iter().filter_map(|(r, s)| {
            s.extras
                .get(r.extra as usize)
                .map(|e| (s.text(r.name.0, r.name.1), e))
        })
    }

    /// Consumer `name`'s tiers, when it has any.
    pub fn tiers(&self, name: &str) -> Option<&ConsumerTierNames> {
        self.0
            .find(name.as_bytes())
            .and_then(|(r, s)| s.extras.get(r.extra as usize))
    }
}

/// One API key, as held.
#[derive(Clone, Copy)]
pub struct KeyView<'a> {
    row: &'a KeyRow,
    shard: &'a Shard<KeyRow>,
}

impl<'a> KeyView<'a> {
    /// The consumer's name, as held.
    pub fn consumer(&self) -> &'a [u8] {
        self.row.consumer(self.shard)
    }

    /// Its environment.
    pub fn key_type(&self) -> KeyType {
        if self.row.flags & 1 == 1 {
            KeyType::Sandbox
        } else {
            KeyType::Production
        }
    }

    /// Unix seconds after which it no longer works.
    pub fn expires_at(&self) -> Option<u64> {
        (self.row.flags & 2 == 2).then_some(self.row.expires_at)
    }

    /// APIs the consumer is subscribed to.
    pub fn apis(&self) -> &'a [Arc<str>] {
        self.shard.apis(self.row.apis)
    }
}

impl fmt::Debug for KeyView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyView")
            .field("key_type", &self.key_type())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> ApiKeyGrant {
        use sha2::Digest as _;
        ApiKeyGrant {
            hash: hex(&sha2::Sha256::digest(format!("k{i}"))),
            // Short names sit in the row, long ones in the shard's arena: both kinds.
            consumer: if i.is_multiple_of(2) {
                format!("c{i}")
            } else {
                format!("a-consumer-with-a-longer-name-{i}")
            },
            key_type: if i.is_multiple_of(3) {
                KeyType::Sandbox
            } else {
                KeyType::Production
            },
            apis: vec![format!("api-{}", i % 4)],
            expires_at: (i.is_multiple_of(5)).then_some(i as u64),
        }
    }

    fn consumer(i: usize) -> ConsumerLimits {
        ConsumerLimits {
            name: format!("c{i}"),
            tier: (i.is_multiple_of(7)).then(|| "gold".to_owned()),
            subscriptions: if i.is_multiple_of(11) {
                [("api-1".to_owned(), "silver".to_owned())].into()
            } else {
                BTreeMap::new()
            },
            apis: vec![format!("api-{}", i % 4), "all".into()],
        }
    }

    #[test]
    fn every_key_is_found_and_comes_back_whole() {
        for n in [0, 1, 5, 300, 5000] {
            let keys: Vec<ApiKeyGrant> = (0..n).map(key).collect();
            let t = ApiKeys::try_from_iter(keys.clone()).unwrap();
            assert_eq!(t.len(), n);
            for k in &keys {
                let h = decode_hash(&k.hash).unwrap();
                let v = t.find(&h).expect("found");
                assert_eq!(v.consumer(), k.consumer.as_bytes());
                assert_eq!(v.key_type(), k.key_type);
                assert_eq!(v.expires_at(), k.expires_at);
                assert_eq!(v.apis().len(), 1);
                assert_eq!(t.get(&k.hash).as_ref(), Some(k));
            }
            assert!(t.find(&[7u8; 32]).is_none());
            let mut sorted = keys.clone();
            sorted.sort_by(|a, b| a.hash.cmp(&b.hash));
            assert_eq!(
                t.iter().collect::<Vec<_>>(),
                sorted,
                "canonical order: by hash"
            );
        }
    }

    #[test]
    fn updates_copy_what_they_touch_and_leave_clones_alone() {
        let mut t = ApiKeys::try_from_iter((0..2000).map(key)).unwrap();
        let before = t.clone();
        let mut gone = Vec::new();
        let mut changed = key(5);
        changed.apis = vec!["other".into()];
        t.update(
            vec![changed.clone(), key(9999)],
            &[key(7).hash, "not a hash".into(), key(123_456).hash],
            |e| gone.push(e.clone()),
        )
        .unwrap();
        assert_eq!(t.len(), 2000);
        gone.sort_by(|a, b| a.consumer.cmp(&b.consumer));
        assert_eq!(gone, vec![key(5), key(7)], "the changed and the removed");
        assert_eq!(t.get(&key(5).hash), Some(changed));
        assert!(t.get(&key(7).hash).is_none());
        assert!(t.get(&key(9999).hash).is_some());
        // The clone still has what it had.
        assert_eq!(before.len(), 2000);
        assert_eq!(before.get(&key(5).hash), Some(key(5)));
        assert!(before.get(&key(7).hash).is_some());
        assert_ne!(before, t);
        // Growing past what the shards were cut for re-cuts them; nothing is lost.
        let mut small = ApiKeys::try_from_iter((0..10).map(key)).unwrap();
        small
            .update((10..3000).map(key).collect(), &[], |_| {})
            .unwrap();
        assert_eq!(small, ApiKeys::try_from_iter((0..3000).map(key)).unwrap());
        small
            .update(
                Vec::new(),
                &(5..3000).map(|i| key(i).hash).collect::<Vec<_>>(),
                |_| {},
            )
            .unwrap();
        assert_eq!(small, ApiKeys::try_from_iter((0..5).map(key)).unwrap());
    }

    #[test]
    fn the_json_form_is_the_list_it_replaces() {
        let keys: Vec<ApiKeyGrant> = (0..50).map(key).collect();
        let t = ApiKeys::try_from_iter(keys.clone()).unwrap();
        let json = serde_json::to_string(&t).unwrap();
        let back: Vec<ApiKeyGrant> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.len(), 50);
        let again: ApiKeys = serde_json::from_str(&serde_json::to_string(&keys).unwrap()).unwrap();
        assert_eq!(again, t);

        let mut twice = keys.clone();
        twice.push(key(3));
        let err = serde_json::from_str::<ApiKeys>(&serde_json::to_string(&twice).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("listed twice"), "{err}");
        let mut bad = keys;
        bad[2].hash = "xyz".into();
        let err = serde_json::from_str::<ApiKeys>(&serde_json::to_string(&bad).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("64 hex digits"), "{err}");
    }

    #[test]
    fn consumers_keep_their_tiers_and_subscriptions() {
        let all: Vec<ConsumerLimits> = (0..1000).map(consumer).collect();
        let t = Consumers::try_from_iter(all.clone()).unwrap();
        for c in &all {
            assert_eq!(t.get(&c.name).as_ref(), Some(c));
            let apis: Vec<&str> = t.apis(&c.name).unwrap().iter().map(|a| &**a).collect();
            assert_eq!(apis, c.apis.iter().map(String::as_str).collect::<Vec<_>>());
        }
        let tiered: Vec<&str> = t.tiered().map(|(n, _)| n).collect();
        let want = all
            .iter()
            .filter(|c| c.tier.is_some() || !c.subscriptions.is_empty())
            .count();
        assert_eq!(tiered.len(), want);
        assert_eq!(t.tiers("c7").unwrap().tier.as_deref(), Some("gold"));
        assert!(t.tiers("c1").is_none());
        assert!(t.apis("nobody").is_none());
        let back: Consumers = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn a_diff_names_what_changed_and_skips_what_is_shared() {
        let old = ApiKeys::try_from_iter((0..3000).map(key)).unwrap();
        let mut new = old.clone();
        let mut changed = key(10);
        changed.expires_at = Some(99);
        new.update(vec![changed.clone(), key(5000)], &[key(20).hash], |_| {})
            .unwrap();
        let (put, removed) = ApiKeys::diff(&old, &new);
        let mut put_names: Vec<_> = put.iter().map(|k| k.consumer.clone()).collect();
        put_names.sort();
        assert_eq!(
            put_names,
            vec![changed.consumer.clone(), key(5000).consumer]
        );
        assert_eq!(removed, vec![key(20)]);
        assert!(put.contains(&changed));
        // Built apart (nothing shared), the same content has no difference.
        let again = ApiKeys::try_from_iter((0..3000).map(key)).unwrap();
        assert_eq!(ApiKeys::diff(&old, &again), (vec![], vec![]));
        // Shard counts that differ are walked whole.
        let small = ApiKeys::try_from_iter((0..3).map(key)).unwrap();
        let (put, removed) = ApiKeys::diff(&small, &old);
        assert_eq!((put.len(), removed.len()), (2997, 0));
    }

    #[test]
    fn a_guess_lands_on_the_right_place() {
        let tags: Vec<u32> = vec![1, 5, 5, 9, u32::MAX];
        for (t, want) in [(0, 0), (1, 0), (2, 1), (5, 1), (6, 3), (u32::MAX, 4)] {
            assert_eq!(lower_bound(&tags, u64::from(t) << 32, 0), want, "{t}");
        }
        assert_eq!(lower_bound(&[], 3, 0), 0);
    }
}
