//! Phase `throttle`: local rate limits with GCRA (the generic cell rate algorithm): each key
//! has a theoretical arrival time; a request passes when that time is within the tier's
//! burst tolerance of now, and moves it one emission interval on. Exact at the boundary:
//! with `limit` 5 and no burst setting, 5 requests pass back to back and the 6th waits.
//! Every key's time is an atomic cell found when the Snapshot is compiled, so a request
//! takes no lock and looks nothing up: one compare-and-swap per tier. Limiters and their
//! cells are kept across Snapshots by tier definition and key, so windows survive reloads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use portico_model::Tier;
use prometheus_client::metrics::counter::Counter;

use crate::fault::{ErrorKind, ProxyError, RateInfo};

/// One tier's limiter over many keys.
#[derive(Debug)]
pub struct Gcra {
    /// Names the tier's definition in shared keys.
    id: String,
    interval_ns: u64,
    tolerance_ns: u64,
    limit: u32,
    window: u64,
    /// `RateLimit-Policy` of its 429s.
    policy: http::HeaderValue,
    /// Every key's cell, while a Snapshot uses it (taken when Snapshots compile only).
    cells: Mutex<HashMap<Arc<str>, Weak<Cell>>>,
}

/// One key's theoretical arrival time in one tier (0: never seen).
#[derive(Debug)]
pub struct Cell {
    /// The key (consumer, subscription, API or route), as Redis names it too.
    pub key: Arc<str>,
    tat: AtomicU64,
}

/// A tier and one key's cell in it: what a compiled route or consumer holds.
#[derive(Debug, Clone)]
pub struct Limit {
    /// The tier's limiter.
    pub gcra: Arc<Gcra>,
    /// The key's cell.
    pub cell: Arc<Cell>,
}

impl Gcra {
    /// A limiter for `tier`.
    pub fn new(tier: &Tier) -> Self {
        let limit = tier.limit.max(1);
        let window = tier.per.seconds();
        let interval_ns = (window * 1_000_000_000 / u64::from(limit)).max(1);
        let burst = u64::from(tier.burst.unwrap_or(limit).max(1));
        Self {
            id: format!(
                "{}:{}:{}:{}",
                tier.name.to_ascii_lowercase(),
                limit,
                window,
                burst
            ),
            interval_ns,
            tolerance_ns: interval_ns * (burst - 1),
            limit,
            window,
            // Digits and `;w=` always make a header value.
            policy: http::HeaderValue::try_from(format!("{limit};w={window}"))
                .unwrap_or_else(|_| http::HeaderValue::from_static("0")),
            cells: Mutex::new(HashMap::new()),
        }
    }

    /// The limit of `key` in this tier: its cell while one is in use (a reload keeps the
    /// window), else a new one. For compiling Snapshots, not for requests.
    pub fn limit(self: &Arc<Self>, key: &str) -> Limit {
        let mut cells = self
            .cells
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cell) = cells.get(key).and_then(Weak::upgrade) {
            return Limit {
                gcra: self.clone(),
                cell,
            };
        }
        // Cells no Snapshot holds any more are forgotten now and then.
        if cells.len() >= 64 && cells.len().is_power_of_two() {
            cells.retain(|_, w| w.strong_count() > 0);
        }
        let key: Arc<str> = key.into();
        let cell = Arc::new(Cell {
            key: key.clone(),
            tat: AtomicU64::new(0),
        });
        cells.insert(key, Arc::downgrade(&cell));
        Limit {
            gcra: self.clone(),
            cell,
        }
    }

    /// Takes one request of `cell` at `now_ns`, or says how long until one would pass.
    /// Lock-free: one compare-and-swap, retried only when another request moved the cell.
    #[inline]
    pub fn check(&self, cell: &Cell, now_ns: u64) -> Result<(), u64> {
        let mut seen = cell.tat.load(Ordering::Acquire);
        loop {
            let tat = seen.max(now_ns);
            if tat - now_ns > self.tolerance_ns {
                return Err(tat - self.tolerance_ns - now_ns);
            }
            match cell.tat.compare_exchange_weak(
                seen,
                tat + self.interval_ns,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(now_seen) => seen = now_seen,
            }
        }
    }

    /// The 429 for a refused request.
    pub fn refuse(&self, wait_ns: u64, what: &'static str) -> ProxyError {
        let mut e = ProxyError::new(ErrorKind::RateLimited, what);
        e.rate = Some(RateInfo {
            limit: self.limit,
            window: self.window,
            retry_after: wait_ns.div_ceil(1_000_000_000).max(1),
            policy: self.policy.clone(),
        });
        e
    }
}

/// One limit to check for a request, and what its 429 says.
pub type Check<'a> = (&'a Limit, &'static str);

/// The limits one request meets (the consumer's, the subscription's, the API's and the
/// operation's), without allocating: unused places are `None`.
pub type Checks<'a> = [Option<Check<'a>>; 4];

/// Checks every limit locally; the first one reached refuses. Earlier ones are not given
/// back (a refused request still counted for the consumer's broader tiers).
pub fn check_local(checks: &Checks<'_>, now_ns: u64) -> Result<(), ProxyError> {
    for (l, what) in checks.iter().flatten() {
        l.gcra
            .check(&l.cell, now_ns)
            .map_err(|w| l.gcra.refuse(w, what))?;
    }
    Ok(())
}

/// GCRA over several keys in one round trip, all or nothing, on Redis's clock.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  if tat - now > tolerance then
    return {i, tat - tolerance - now}
  end
  tats[i] = tat + interval
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, tats[i], 'PX', math.ceil((tats[i] - now) / 1000) + 1000)
end
return {0, 0}
"#;

/// Rate limits shared by every node through Redis, with local limits as the fallback.
pub struct SharedLimits {
    url: String,
    conn: Arc<ArcSwapOption<redis::aio::ConnectionManager>>,
    script: redis::Script,
    timeout: Duration,
    /// Requests limited locally because Redis did not answer in time.
    pub fallbacks: Counter,
    last_warning_ms: AtomicU64,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("connected", &self.conn.load().is_some())
            .finish()
    }
}

impl SharedLimits {
    /// Connects in the background (and keeps reconnecting); until then, limits are local.
    pub fn start(url: &str, fallbacks: Counter) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL: {e}"))?;
        let me = Arc::new(Self {
            url: redact(url),
            conn: Arc::new(ArcSwapOption::empty()),
            script: redis::Script::new(SCRIPT),
            timeout: Duration::from_millis(50),
            fallbacks,
            last_warning_ms: AtomicU64::new(0),
        });
        let slot = me.conn.clone();
        let shown = me.url.clone();
        tokio::spawn(async move {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)));
            loop {
                match redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone())
                    .await
                {
                    Ok(c) => {
                        tracing::info!(redis = %shown, "rate limits shared through Redis");
                        slot.store(Some(Arc::new(c)));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(redis = %shown, error = %e, "Redis unreachable: rate limits are per node until it answers");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
        });
        Ok(me)
    }

    /// Checks every limit in one Redis round trip; falls back to the local limiters when
    /// Redis is not connected or does not answer within the timeout.
    pub async fn check(&self, checks: &Checks<'_>, now_ns: u64) -> Result<(), ProxyError> {
        let Some(conn) = self.conn.load_full() else {
            return self.fallback(checks, now_ns, "not connected");
        };
        let mut inv = self.script.prepare_invoke();
        for (l, _) in checks.iter().flatten() {
            inv.key(format!("portico:rl:{}:{}", l.gcra.id, l.cell.key));
            inv.arg(l.gcra.interval_ns / 1000)
                .arg(l.gcra.tolerance_ns / 1000);
        }
        let mut conn = (*conn).clone();
        let answer: Result<Result<(i64, i64), redis::RedisError>, _> =
            tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn)).await;
        match answer {
            Ok(Ok((0, _))) => Ok(()),
            Ok(Ok((i, wait_us))) => {
                let (l, what) = usize::try_from(i - 1)
                    .ok()
                    .and_then(|i| checks.iter().flatten().nth(i))
                    .ok_or_else(|| ProxyError::new(ErrorKind::RateLimited, "rate limit reached"))?;
                Err(l
                    .gcra
                    .refuse(u64::try_from(wait_us).unwrap_or(0) * 1000, what))
            }
            Ok(Err(e)) => self.fallback(checks, now_ns, &e.to_string()),
            Err(_) => self.fallback(checks, now_ns, "timed out"),
        }
    }

    fn fallback(&self, checks: &Checks<'_>, now_ns: u64, why: &str) -> Result<(), ProxyError> {
        self.fallbacks.inc();
        let now_ms = crate::clock::now_ms();
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) > 10_000
            && self
                .last_warning_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(redis = %self.url, reason = why, "Redis did not answer: rate limits are per node for now");
        }
        check_local(checks, now_ns)
    }
}

/// A Redis URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
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

    /// Checks `key` of `g` (finding its cell, as a compiled Snapshot would have).
    fn check(g: &Arc<Gcra>, key: &str, now: u64) -> Result<(), u64> {
        g.check(&g.limit(key).cell, now)
    }

    #[test]
    fn exact_at_the_boundary() {
        let g = Arc::new(Gcra::new(&tier(5, Period::Minute, None)));
        let t0 = 1_000_000_000;
        let held = g.limit("k");
        for i in 0..5 {
            assert!(check(&g, "k", t0).is_ok(), "request {i}");
        }
        let wait = check(&g, "k", t0).err().unwrap_or(0);
        assert_eq!(wait, 12_000_000_000, "one emission interval: 60 s / 5");
        // Another key has its own window.
        assert!(check(&g, "other", t0).is_ok());
        // After one interval, exactly one more passes.
        assert!(check(&g, "k", t0 + 12_000_000_000).is_ok());
        assert!(check(&g, "k", t0 + 12_000_000_000).is_err());
        drop(held);
        let e = g.refuse(wait, "x");
        assert_eq!(
            e.rate.map(|r| (r.limit, r.window, r.retry_after, r.policy)),
            Some((5, 60, 12, http::HeaderValue::from_static("5;w=60")))
        );
    }

    #[test]
    fn burst_smaller_than_the_limit_spaces_requests() {
        let g = Arc::new(Gcra::new(&tier(10, Period::Second, Some(1))));
        let l = g.limit("k");
        assert!(g.check(&l.cell, 0).is_ok());
        assert!(g.check(&l.cell, 50_000_000).is_err());
        assert!(g.check(&l.cell, 100_000_000).is_ok());
    }

    #[test]
    fn a_reload_keeps_the_cell_and_unused_cells_are_forgotten() {
        let g = Arc::new(Gcra::new(&tier(1, Period::Minute, None)));
        let old = g.limit("k");
        assert!(g.check(&old.cell, 1).is_ok());
        let new = g.limit("k");
        assert!(Arc::ptr_eq(&old.cell, &new.cell), "the window survives");
        assert!(g.check(&new.cell, 2).is_err());
        drop((old, new));
        let fresh = g.limit("k");
        assert!(
            g.check(&fresh.cell, 3).is_ok(),
            "nobody held it: a new window"
        );
    }

    #[test]
    fn concurrent_requests_never_pass_more_than_the_limit() {
        let g = Arc::new(Gcra::new(&tier(1000, Period::Hour, None)));
        let l = g.limit("k");
        let passed = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        if g.check(&l.cell, 5).is_ok() {
                            passed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(passed.load(Ordering::Relaxed), 1000);
    }
}
