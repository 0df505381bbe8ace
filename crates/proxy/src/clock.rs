//! A monotonic process clock in milliseconds and seconds, cheap to compare and store in atomics.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

fn start() -> Instant {
    *START.get_or_init(Instant::now)
}

/// Milliseconds since the process clock started (never 0, so 0 can mean "never").
#[inline]
pub fn now_ms() -> u64 {
    start().elapsed().as_millis() as u64 + 1
}

/// Whole seconds since the process clock started.
#[inline]
pub fn now_secs() -> u64 {
    start().elapsed().as_secs()
}
