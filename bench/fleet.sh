#!/usr/bin/env bash
# Fleet simulation (issue 18): N simulated gateway nodes in one process (bench/fleet,
# `portico-fleet`) against one real control plane (`portico server`, SQLite, a fresh data
# directory per size), N = 100, 1,000 and 10,000 spread over N/10 gateways. Each node
# long-polls on a connection of its own, decodes and verifies what it receives as a node
# does, reports after each apply and heartbeats every 10 s. After an idle window with every
# node parked, one change (revision 2 of an API deployed to every gateway in one request)
# is timed from the admin request's start to each node's apply (p50, p99, max), while admin
# requests are timed every 100 ms; the control plane's CPU, RSS and sockets come from /proc.
# Prints the tables and writes them to bench/results/fleet-<date>[-k].txt.
#   bench/fleet.sh                                   # 100, 1,000 and 10,000 nodes
#   NODES=100,1000 bench/fleet.sh --idle 5           # a quick look; further flags go to portico-fleet
#   NODES=1000 bench/fleet.sh --report-connections 10    # each node its own report connection, as real nodes
# Uses the binaries already built (release: cargo build --release -p portico -p portico-fleet;
# set PORTICO and FLEET, or CARGO_TARGET_DIR, to use others); it does not build them.
# Exits non-zero when any node fails to verify what it received, or when not every node
# gets the change within the deadline (--deadline, 60 s).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/.."
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
NODES="${NODES:-100,1000,10000}"
pick() {
    if [ -x "$TARGET/release/$1" ]; then echo "$TARGET/release/$1"
    elif [ -x "$TARGET/debug/$1" ]; then echo "$TARGET/debug/$1"; fi
}
BIN="${PORTICO:-$(pick portico)}"
FLEET="${FLEET:-$(pick portico-fleet)}"
[ -n "$BIN" ] && [ -n "$FLEET" ] \
    || { echo "fleet.sh: build first: cargo build --release -p portico -p portico-fleet (or set PORTICO and FLEET)" >&2; exit 1; }
case "$BIN$FLEET" in
    */debug/*) echo "fleet.sh: a debug build is in use: its figures are not representative" >&2 ;;
esac
# Two sockets per node at most on each side, plus the database: as many files as allowed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# The figures need the machine to itself (2 cores here, shared with builds): wait up to
# QUIET_WAIT seconds (600) for the 1-minute load average to fall below QUIET_LOAD (0.5); the
# load is written beside the figures either way, and the tool prints other processes' CPU.
QUIET_LOAD="${QUIET_LOAD:-0.5}"
QUIET_WAIT="${QUIET_WAIT:-600}"
for _ in $(seq "$QUIET_WAIT"); do
    awk -v max="$QUIET_LOAD" '{exit !($1 < max)}' /proc/loadavg && break
    sleep 1
done
awk -v max="$QUIET_LOAD" '{exit !($1 < max)}' /proc/loadavg \
    || echo "fleet.sh: the machine is busy (load $(cut -d' ' -f1 /proc/loadavg)); measuring anyway" >&2
mkdir -p "$HERE/results"
OUT="$HERE/results/fleet-$(date -u +%Y%m%d).txt"
k=2
while [ -e "$OUT" ]; do OUT="$HERE/results/fleet-$(date -u +%Y%m%d)-$k.txt"; k=$((k + 1)); done
{
    echo "# bench/fleet.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "# $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -sr), open files $(ulimit -n), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# control plane $BIN; simulator $FLEET; nodes $NODES; flags: $*"
} | tee "$OUT"
"$FLEET" --portico "$BIN" --nodes "$NODES" "$@" | tee -a "$OUT"
echo "# load average at the end $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
echo "fleet.sh: written to $OUT" >&2
