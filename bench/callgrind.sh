#!/usr/bin/env bash
# Counts the gateway's instructions per proxied request under valgrind's callgrind: a
# repeatable figure (unlike time on a shared machine) for work on the request path.
#   bench/callgrind.sh [seconds] [path]     (default 10, /)
# Prints instructions per request and the top functions (inclusive).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECS="${1:-10}"; REQ_PATH="${2:-/}"
BIN="${PORTICO_BIN:-$HERE/../target/release/portico}"
RUN="$(mktemp -d)"; chmod 755 "$RUN"
cleanup() { kill "$GW" "$NG" 2>/dev/null || true; sleep 0.3; [ -n "${CG_KEEP:-}" ] || rm -rf "$RUN"; }
trap cleanup EXIT
head -c 16384 /dev/zero | tr '\0' 'x' >"$RUN/16k.bin"
mkdir -p "$RUN/tmp" "$RUN/gw"
cat >"$RUN/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $RUN/nginx.pid; error_log $RUN/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $RUN/tmp/b; proxy_temp_path $RUN/tmp/p;
  fastcgi_temp_path $RUN/tmp/f; uwsgi_temp_path $RUN/tmp/u; scgi_temp_path $RUN/tmp/s;
  server { listen 127.0.0.1:18600; location = /16k { alias $RUN/16k.bin; } location / { return 200 "Hello, World!\n"; } } }
CONF
nginx -p "$RUN/" -c "$RUN/nginx.conf" & NG=$!
cat >"$RUN/gw/gateway.toml" <<CONF
[node]
workers = 1
internal = { enabled = false }
access_log = { enabled = false }
watch = false
[[listeners]]
name = "bench"
address = "127.0.0.1"
port = 18601
[[services]]
name = "backend"
endpoints = ["127.0.0.1:18600"]
[[routes]]
name = "all"
forward = { service = "backend" }
CONF
valgrind --tool=callgrind --callgrind-out-file="$RUN/cg.out" "$BIN" gateway run --config "$RUN/gw/gateway.toml" 2>"$RUN/vg.log" & GW=$!
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:18601/" && break; sleep 0.2; done
wrk -t1 -c8 -d"${SECS}s" "http://127.0.0.1:18601$REQ_PATH" > "$RUN/wrk.txt"
REQS=$(awk '/requests in/ {print $1}' "$RUN/wrk.txt")
kill -TERM "$GW"; wait "$GW" 2>/dev/null || true
TOTAL=$(callgrind_annotate "$RUN/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
echo "requests: $REQS  instructions: $TOTAL  per request: $((TOTAL / REQS))"
callgrind_annotate --inclusive=yes "$RUN/cg.out" 2>/dev/null | sed -n '/^--.*Ir/,$p' | head -"${CG_LINES:-40}"
[ -z "${CG_KEEP:-}" ] || echo "kept: $RUN/cg.out"
