//! Load balancing over an endpoint set: smooth weighted round-robin, least-request (power of
//! two choices), weighted random and Maglev consistent hashing. Tables are built once per
//! endpoint set; a pick is lock-free.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use portico_model::HashOn;

use super::endpoint::Endpoint;

/// Endpoints with the balancing tables built for them.
#[derive(Debug)]
pub struct EndpointSet {
    /// The endpoints.
    pub endpoints: Vec<Arc<Endpoint>>,
    balancer: Balancer,
    /// Cumulative weights for weighted random picks.
    cumulative: Box<[u64]>,
    /// Failover groups, lowest priority first, when the endpoints have more than one
    /// priority (empty otherwise): each with its own tables and its endpoints' indices here.
    groups: Box<[Group]>,
    /// When every endpoint is out by its health checks, balance across them anyway.
    fail_open: bool,
}

/// One failover group.
#[derive(Debug)]
struct Group {
    set: EndpointSet,
    index: Box<[usize]>,
}

/// The algorithm and its tables.
#[derive(Debug)]
enum Balancer {
    RoundRobin {
        schedule: Box<[u32]>,
        next: AtomicUsize,
    },
    LeastRequest,
    Random,
    Maglev {
        table: Box<[u32]>,
    },
}

/// Which algorithm to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Smooth weighted round-robin.
    RoundRobin,
    /// Power of two choices on in-flight requests.
    LeastRequest,
    /// Weighted random.
    Random,
    /// Maglev on the given attribute.
    ConsistentHash(HashOn),
}

const SCHEDULE_MAX: u64 = 1 << 16;

impl EndpointSet {
    /// Builds the tables for `endpoints`, in failover groups when they have several
    /// priorities. `fail_open`: when none is available by its health checks, pick among
    /// them anyway.
    pub fn new(endpoints: Vec<Arc<Endpoint>>, algorithm: &Algorithm, fail_open: bool) -> Self {
        let mut priorities: Vec<u32> = endpoints.iter().map(|e| e.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let groups = if priorities.len() > 1 {
            priorities
                .iter()
                .map(|&p| {
                    let index: Box<[usize]> = (0..endpoints.len())
                        .filter(|&i| endpoints[i].priority == p)
                        .collect();
                    let members = index.iter().map(|&i| endpoints[i].clone()).collect();
                    Group {
                        set: Self::flat(members, algorithm, false),
                        index,
                    }
                })
                .collect()
        } else {
            Box::default()
        };
        let mut set = Self::flat(endpoints, algorithm, fail_open);
        set.groups = groups;
        set
    }

    fn flat(endpoints: Vec<Arc<Endpoint>>, algorithm: &Algorithm, fail_open: bool) -> Self {
        let mut acc = 0u64;
        let cumulative = endpoints
            .iter()
            .map(|e| {
                acc += e.weight as u64;
                acc
            })
            .collect();
        let balancer = match algorithm {
            Algorithm::RoundRobin => Balancer::RoundRobin {
                schedule: smooth_schedule(&endpoints),
                next: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)),
            },
            Algorithm::LeastRequest => Balancer::LeastRequest,
            Algorithm::Random => Balancer::Random,
            Algorithm::ConsistentHash(_) => Balancer::Maglev {
                table: maglev_table(&endpoints),
            },
        };
        Self {
            endpoints,
            balancer,
            cumulative,
            groups: Box::default(),
            fail_open,
        }
    }

    /// True when there are no endpoints at all.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Picks an available endpoint: from the first failover group that has one, and, when
    /// none has and the set fails open, from the endpoints out only by their health checks.
    /// `hash` feeds consistent hashing (random without one); `avoid` is an endpoint index to
    /// skip when another is available (a retry's previous pick).
    #[inline]
    pub fn pick(&self, hash: Option<u64>, avoid: Option<usize>, now_ms: u64) -> Option<usize> {
        if self.groups.is_empty() {
            return self.pick_in(hash, avoid, now_ms, false).or_else(|| {
                if self.fail_open {
                    self.pick_in(hash, avoid, now_ms, true)
                } else {
                    None
                }
            });
        }
        let in_groups = |ignore_health: bool| {
            self.groups.iter().find_map(|g| {
                let avoid = avoid.and_then(|a| g.index.iter().position(|&x| x == a));
                g.set
                    .pick_in(hash, avoid, now_ms, ignore_health)
                    .map(|i| g.index[i])
            })
        };
        in_groups(false).or_else(|| {
            if self.fail_open {
                in_groups(true)
            } else {
                None
            }
        })
    }

    /// Picks within this set's own tables; `ignore_health` counts endpoints out only by
    /// their health checks as available.
    #[inline]
    fn pick_in(
        &self,
        hash: Option<u64>,
        avoid: Option<usize>,
        now_ms: u64,
        ignore_health: bool,
    ) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let ok = |i: usize| {
            let s = &self.endpoints[i].state;
            (if ignore_health {
                s.not_ejected(now_ms)
            } else {
                s.available(now_ms)
            }) && (Some(i) != avoid || n == 1)
        };
        let first = match &self.balancer {
            Balancer::RoundRobin { schedule, next } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                (0..schedule.len().min(n * 4 + 8))
                    .map(|k| schedule[(start + k) % schedule.len()] as usize)
                    .find(|&i| ok(i))
            }
            Balancer::LeastRequest => {
                let a = self.weighted_random();
                let b = if n > 1 {
                    self.weighted_random_other(a)
                } else {
                    a
                };
                match (ok(a), ok(b)) {
                    (true, true) => Some(if self.load(a) <= self.load(b) { a } else { b }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    (false, false) => None,
                }
            }
            Balancer::Random => {
                let a = self.weighted_random();
                ok(a).then_some(a)
            }
            Balancer::Maglev { table } => {
                let h = hash.unwrap_or_else(|| fastrand::u64(..));
                let m = table.len();
                let start = (h % m as u64) as usize;
                (0..m.min(n * 8 + 8))
                    .map(|k| table[(start + k) % m] as usize)
                    .find(|&i| ok(i))
            }
        };
        // Fall back to a scan so an available endpoint is always found when one exists.
        first.or_else(|| {
            let start = fastrand::usize(..n);
            (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
        })
    }

    /// In-flight requests over weight, compared by cross-multiplication.
    fn load(&self, i: usize) -> u64 {
        let e = &self.endpoints[i];
        let total: u64 = self.cumulative.last().copied().unwrap_or(1);
        e.state.in_flight.load(Ordering::Relaxed) as u64 * total / e.weight.max(1) as u64
    }

    fn weighted_random(&self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return 0;
        }
        let r = fastrand::u64(..total);
        self.cumulative.partition_point(|&c| c <= r)
    }

    fn weighted_random_other(&self, not: usize) -> usize {
        for _ in 0..4 {
            let b = self.weighted_random();
            if b != not {
                return b;
            }
        }
        (not + 1) % self.endpoints.len()
    }
}

/// nginx's smooth weighted round-robin, unrolled into a schedule: with weights 5, 1, 1 it
/// yields a a b a c a a, never a burst of five in a row.
fn smooth_schedule(endpoints: &[Arc<Endpoint>]) -> Box<[u32]> {
    let g = endpoints
        .iter()
        .fold(0u64, |g, e| gcd(g, e.weight as u64))
        .max(1);
    let mut weights: Vec<u64> = endpoints.iter().map(|e| e.weight as u64 / g).collect();
    let mut total: u64 = weights.iter().sum();
    if total > SCHEDULE_MAX {
        // Scale down, keeping every endpoint in the schedule.
        for w in &mut weights {
            *w = (*w * SCHEDULE_MAX / total).max(1);
        }
        total = weights.iter().sum();
    }
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(best as u32);
    }
    out.into_boxed_slice()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The Maglev lookup table (Eisenbud et al., NSDI 2016), weighted: each endpoint fills
/// entries in proportion to its weight. Positions come from a hash of the endpoint's
/// configured address, so every node builds the same table.
fn maglev_table(endpoints: &[Arc<Endpoint>]) -> Box<[u32]> {
    let n = endpoints.len();
    if n == 0 {
        return Box::new([]);
    }
    let m = [251u64, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521]
        .into_iter()
        .find(|&p| p >= 100 * n as u64)
        .unwrap_or(65521) as usize;
    let perms: Vec<(u64, u64)> = endpoints
        .iter()
        .map(|e| {
            let key = format!("{}|{}", e.authority.to_str().unwrap_or(""), e.addr);
            let offset = hash64(key.as_bytes(), 0x9e37_79b9) % m as u64;
            let skip = hash64(key.as_bytes(), 0x85eb_ca6b) % (m as u64 - 1) + 1;
            (offset, skip)
        })
        .collect();
    let max_w = endpoints.iter().map(|e| e.weight).max().unwrap_or(1).max(1) as f64;
    let mut next = vec![0u64; n];
    let mut filled_by = vec![0u64; n];
    let mut table = vec![u32::MAX; m];
    let mut filled = 0;
    let mut round = 0u64;
    while filled < m {
        round += 1;
        for i in 0..n {
            // Endpoint i takes a turn while its fills lag behind its weighted share.
            if (filled_by[i] as f64) >= round as f64 * endpoints[i].weight as f64 / max_w {
                continue;
            }
            let (offset, skip) = perms[i];
            loop {
                let c = ((offset + next[i] * skip) % m as u64) as usize;
                next[i] += 1;
                if table[c] == u32::MAX {
                    table[c] = i as u32;
                    filled_by[i] += 1;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break;
            }
        }
    }
    table.into_boxed_slice()
}

/// A small stable 64-bit hash (FNV-1a with a final avalanche): the same on every node and
/// every build, unlike `std`'s hasher.
#[inline]
pub fn hash64(bytes: &[u8], seed: u64) -> u64 {
    portico_model::packed::fnv_mix(bytes, seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::endpoint::EndpointState;

    fn set(weights: &[u32], algorithm: Algorithm) -> EndpointSet {
        let endpoints = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr: std::net::SocketAddr = format!("10.0.0.{}:80", i + 1).parse().unwrap();
                Arc::new(Endpoint {
                    addr,
                    authority: http::HeaderValue::from_str(&addr.to_string()).unwrap(),
                    label: addr.to_string().into(),
                    weight: w,
                    priority: 0,
                    state: Arc::new(EndpointState::default()),
                })
            })
            .collect();
        EndpointSet::new(endpoints, &algorithm, false)
    }

    fn counts(s: &EndpointSet, picks: usize, hash: impl Fn(usize) -> Option<u64>) -> Vec<usize> {
        let mut c = vec![0; s.endpoints.len()];
        for i in 0..picks {
            c[s.pick(hash(i), None, 0).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn smooth_round_robin_follows_weights_without_bursts() {
        let s = set(&[5, 1, 1], Algorithm::RoundRobin);
        let Balancer::RoundRobin { schedule, .. } = &s.balancer else {
            panic!()
        };
        assert_eq!(&schedule[..], &[0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&s, 700, |_| None), vec![500, 100, 100]);
    }

    #[test]
    fn weighted_random_and_least_request_follow_weights() {
        for alg in [Algorithm::Random, Algorithm::LeastRequest] {
            let s = set(&[3, 1], alg.clone());
            let c = counts(&s, 40_000, |_| None);
            let share = c[0] as f64 / 40_000.0;
            // Least-request with nothing in flight picks by weight among the two choices.
            assert!((0.6..0.9).contains(&share), "{alg:?}: {share}");
        }
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let s = set(&[1, 1], Algorithm::LeastRequest);
        s.endpoints[0].state.in_flight.store(10, Ordering::Relaxed);
        let c = counts(&s, 1000, |_| None);
        // Only when both choices land on endpoint 0 (never: the two choices differ) is it picked.
        assert_eq!(c[0], 0);
    }

    #[test]
    fn maglev_is_consistent_and_weighted() {
        let s = set(&[1, 1, 1, 1], Algorithm::ConsistentHash(HashOn::ClientIp));
        for key in 0..100u64 {
            let h = hash64(&key.to_le_bytes(), 0);
            let a = s.pick(Some(h), None, 0);
            assert_eq!(a, s.pick(Some(h), None, 0));
        }
        // Removing one endpoint moves only the keys that were on it (within a few percent).
        let s3 = set(&[1, 1, 1], Algorithm::ConsistentHash(HashOn::ClientIp));
        let mut moved = 0;
        for key in 0..10_000u64 {
            let h = hash64(&key.to_le_bytes(), 0);
            let before = s.pick(Some(h), None, 0).unwrap();
            let after = s3.pick(Some(h), None, 0).unwrap();
            if before != 3 && before != after {
                moved += 1;
            }
        }
        assert!(moved < 1500, "{moved} keys moved that should have stayed");
        let w = set(&[3, 1], Algorithm::ConsistentHash(HashOn::ClientIp));
        let c = counts(&w, 20_000, |i| Some(hash64(&(i as u64).to_le_bytes(), 1)));
        let share = c[0] as f64 / 20_000.0;
        assert!((0.68..0.82).contains(&share), "{share}");
    }

    #[test]
    fn unavailable_endpoints_are_skipped_and_avoid_is_honoured() {
        for alg in [
            Algorithm::RoundRobin,
            Algorithm::LeastRequest,
            Algorithm::Random,
            Algorithm::ConsistentHash(HashOn::ClientIp),
        ] {
            let s = set(&[1, 1, 1], alg.clone());
            s.endpoints[0].state.set_healthy(false);
            s.endpoints[1].state.set_healthy(false);
            for i in 0..50 {
                assert_eq!(s.pick(Some(i), None, 0), Some(2), "{alg:?}");
            }
            s.endpoints[2].state.set_healthy(false);
            assert_eq!(s.pick(None, None, 0), None, "{alg:?}");
            // Failing open: all out by health checks, all in the running again.
            let open = EndpointSet::new(s.endpoints.clone(), &alg, true);
            assert!(open.pick(None, None, 0).is_some(), "{alg:?}");
            let s = set(&[1, 1], alg.clone());
            for i in 0..50 {
                assert_eq!(s.pick(Some(i), Some(0), 0), Some(1), "{alg:?}");
            }
        }
    }

    #[test]
    fn failover_groups_take_traffic_in_priority_order() {
        let endpoints: Vec<Arc<Endpoint>> = [(1, 0), (2, 0), (3, 1), (4, 2)]
            .iter()
            .map(|&(n, priority)| {
                let addr: std::net::SocketAddr = format!("10.0.0.{n}:80").parse().unwrap();
                Arc::new(Endpoint {
                    addr,
                    authority: http::HeaderValue::from_str(&addr.to_string()).unwrap(),
                    label: addr.to_string().into(),
                    weight: 1,
                    priority,
                    state: Arc::new(EndpointState::default()),
                })
            })
            .collect();
        let s = EndpointSet::new(endpoints, &Algorithm::RoundRobin, false);
        let picks: std::collections::BTreeSet<usize> =
            (0..20).map(|_| s.pick(None, None, 0).unwrap()).collect();
        assert_eq!(picks, [0, 1].into(), "the first group takes everything");
        assert_eq!(
            s.pick(None, Some(0), 0),
            Some(1),
            "a retry stays in the group"
        );
        s.endpoints[0].state.set_healthy(false);
        assert_eq!(s.pick(None, Some(1), 0), Some(2), "then the next group");
        s.endpoints[1].state.set_healthy(false);
        assert_eq!(s.pick(None, None, 0), Some(2));
        s.endpoints[2].state.set_healthy(false);
        assert_eq!(s.pick(None, None, 0), Some(3), "and the last");
        s.endpoints[3].state.set_healthy(false);
        assert_eq!(s.pick(None, None, 0), None, "closed: nothing");
        s.endpoints[1].state.set_healthy(true);
        assert_eq!(s.pick(None, None, 0), Some(1), "the first group back first");
    }
}
