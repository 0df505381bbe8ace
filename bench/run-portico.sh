#!/usr/bin/env bash
# The candidate wrapper that ../shared/bench/proxy-bench.sh runs: writes a gateway config
# forwarding every path from $BENCH_LISTEN to $BENCH_UPSTREAM into $BENCH_RUN_DIR, then
# execs the release binary. Access log and internal port off, as the peers run.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${PORTICO_BIN:-$HERE/../target/release/portico}"
: "${BENCH_LISTEN:?}" "${BENCH_UPSTREAM:?}" "${BENCH_RUN_DIR:?}"
cat >"$BENCH_RUN_DIR/gateway.toml" <<CONF
[node]
internal = { enabled = false }
access_log = { enabled = false }
watch = false

[[listeners]]
name = "bench"
address = "${BENCH_LISTEN%:*}"
port = ${BENCH_LISTEN##*:}

[[services]]
name = "backend"
endpoints = ["$BENCH_UPSTREAM"]

[[routes]]
name = "all"
forward = { service = "backend" }
CONF
exec "$BIN" gateway run --config "$BENCH_RUN_DIR/gateway.toml"
