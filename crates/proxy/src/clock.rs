//! A monotonic process clock in milliseconds and seconds, cheap to compare and store in atomics.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

fn start() -> Instant {
    *START.get_or_init(Instant::now)
}

/// Nanoseconds since the process clock started.
#[inline]
pub fn now_ns() -> u64 {
    start().elapsed().as_nanos() as u64
}

/// Milliseconds since the process clock started (never 0, so 0 can mean "never").
#[inline]
pub fn now_ms() -> u64 {
    start().elapsed().as_millis() as u64 + 1
}

/// Wall-clock Unix time in seconds (for expiry times that come from elsewhere).
#[inline]
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whole seconds since the process clock started.
#[inline]
pub fn now_secs() -> u64 {
    start().elapsed().as_secs()
}

/// The current time as an HTTP date (`Sun, 22 Nov 2026 12:07:00 GMT`), formatted at most
/// once a second per thread.
pub fn http_date() -> [u8; 29] {
    use std::cell::Cell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHE: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let (at, text) = c.get();
        if at == secs {
            return text;
        }
        let text = format_http_date(secs);
        c.set((secs, text));
        text
    })
}

fn format_http_date(secs: u64) -> [u8; 29] {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = crate::access_log::civil_from_days(days as i64);
    let s = format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let mut out = [b' '; 29];
    let n = s.len().min(29);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates() {
        assert_eq!(
            &super::format_http_date(0),
            b"Thu, 01 Jan 1970 00:00:00 GMT"
        );
        assert_eq!(
            &super::format_http_date(1_795_349_220),
            b"Sun, 22 Nov 2026 12:07:00 GMT"
        );
    }
}
