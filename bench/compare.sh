#!/usr/bin/env bash
# Portico side by side with nginx, HAProxy, Caddy and h2o through ../shared/bench:
# req/s, p50, p99, CPU time per request and the ratios, in one run.
#   bench/compare.sh                 # 3 rounds x 10 s (about 15 minutes)
#   BENCH_ROUNDS=1 bench/compare.sh  # a quick look
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/.."
SHARED="${PORTICO_SHARED_BENCH:-$ROOT/../shared/bench}"
[ -x "$SHARED/proxy-bench.sh" ] || { echo "compare.sh: $SHARED/proxy-bench.sh not found (set PORTICO_SHARED_BENCH)" >&2; exit 1; }
"$SHARED/setup.sh"
(cd "$ROOT" && cargo build --release -p portico)
mkdir -p "$HERE/results"
OUT="$HERE/results/$(date -u +%Y%m%dT%H%M%SZ).jsonl"
"$SHARED/proxy-bench.sh" --out "$OUT" --candidate portico="exec $HERE/run-portico.sh" "$@"
echo "results: $OUT"
