#!/usr/bin/env bash
# Profiles the release gateway under wrk load with perf (cpu-clock samples), forwarding to
# an nginx backend; prints the hottest symbols. For finding where CPU per request goes.
#   bench/profile.sh [seconds] [path]      (default 5, /)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECS="${1:-5}"; REQ_PATH="${2:-/}"
BIN="${PORTICO_BIN:-$HERE/../target/release/portico}"
RUN="$(mktemp -d)"; chmod 755 "$RUN"
cleanup() { kill "$GW" "$NG" 2>/dev/null || true; sleep 0.3; rm -rf "$RUN"; }
trap cleanup EXIT
head -c 16384 /dev/zero | tr '\0' 'x' >"$RUN/16k.bin"
mkdir -p "$RUN/tmp"
cat >"$RUN/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $RUN/nginx.pid; error_log $RUN/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $RUN/tmp/b; proxy_temp_path $RUN/tmp/p;
  fastcgi_temp_path $RUN/tmp/f; uwsgi_temp_path $RUN/tmp/u; scgi_temp_path $RUN/tmp/s;
  server { listen 127.0.0.1:18500; location = /16k { alias $RUN/16k.bin; } location / { return 200 "Hello, World!\n"; } } }
CONF
taskset -c 1 nginx -p "$RUN/" -c "$RUN/nginx.conf" & NG=$!
mkdir -p "$RUN/gw"
BENCH_LISTEN=127.0.0.1:18501 BENCH_UPSTREAM=127.0.0.1:18500 BENCH_RUN_DIR="$RUN/gw" PORTICO_BIN="$BIN" \
    taskset -c 0 "$HERE/run-portico.sh" 2>"$RUN/gw.log" & GW=$!
sleep 1
taskset -c 1 wrk -t1 -c64 -d2s "http://127.0.0.1:18501$REQ_PATH" >/dev/null
taskset -c 1 wrk -t1 -c64 -d"$((SECS + 2))s" "http://127.0.0.1:18501$REQ_PATH" > "$RUN/wrk.txt" &
sleep 1
perf record -e cpu-clock -F ${PERF_FREQ:-4999} ${PERF_CALLGRAPH:--g} -p "$GW" -o "$RUN/perf.data" -- sleep "$SECS" 2>/dev/null
wait %3 2>/dev/null || true
grep -E "Requests/sec" "$RUN/wrk.txt" || true
perf report -i "$RUN/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v "^#" | grep -v "^$" | head -8
perf report -i "$RUN/perf.data" --no-children --percent-limit ${PERF_LIMIT:-0.7} --stdio -g none 2>/dev/null | grep -v "^#" | grep -v "^$" | head -${PERF_LINES:-60}
[ -z "${PERF_KEEP:-}" ] || cp "$RUN/perf.data" "$PERF_KEEP"
