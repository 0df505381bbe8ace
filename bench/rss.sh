#!/usr/bin/env bash
# Resident memory of a gateway forwarding to an nginx backend, as ../shared/bench runs it
# (one worker on CPU 0, the bench's config): at start, then its peak (VmHWM) after small
# HTTP/1.1 requests on 64 keep-alive connections and after h2c on 16 connections x 16
# streams, with the anonymous and file-backed parts. Memory, not time: the figures hold
# on a busy machine.
#   bench/rss.sh [seconds]     (default 3)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECS="${1:-3}"
BIN="${PORTICO_BIN:-$HERE/../target/release/portico}"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
RUN="$WORK"; chmod 755 "$RUN"; mkdir -p "$RUN/gw"
backend_conf "$RUN/backend.conf" backend 18900
taskset -c 1 nginx -p "$RUN/" -c "$RUN/backend.conf" & PIDS+=($!)
BENCH_LISTEN=127.0.0.1:18901 BENCH_UPSTREAM=127.0.0.1:18900 BENCH_RUN_DIR="$RUN/gw" PORTICO_BIN="$BIN" \
    taskset -c 0 "$HERE/run-portico.sh" 2>"$RUN/gw.log" & PIDS+=($!)
for _ in $(seq 1 50); do curl -sf -o /dev/null http://127.0.0.1:18901/ && break; sleep 0.1; done
GW=$(pgrep -f "$RUN/gw/gateway.toml" | head -1)
show() {
    printf '%-34s %s\n' "$1" "$(awk '/^VmRSS|^VmHWM/ {printf "%s %s KiB  ", $1, $2}' "/proc/$GW/status")$(awk '/^Anonymous|^Private_Clean/ {printf "%s %s KiB  ", $1, $2}' "/proc/$GW/smaps_rollup")"
}
show "started:"
taskset -c 1 wrk -t1 -c64 -d"${SECS}s" http://127.0.0.1:18901/ >/dev/null
show "after h1, 64 connections:"
taskset -c 1 h2load -c16 -m16 -D "$SECS" http://127.0.0.1:18901/ >/dev/null 2>&1
show "after h2c, 16 x 16 streams:"
