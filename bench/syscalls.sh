#!/usr/bin/env bash
# Counts the system calls a proxy makes per request, Portico beside nginx, with `strace -c
# -f` attached while wrk sends requests: on keep-alive connections (per request) and on
# `Connection: close` ones (per connection). Counts, not times: strace slows both proxies
# alike, and the counts do not depend on how busy the machine is.
#   bench/syscalls.sh [seconds] [path]      (default 3, /)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECS="${1:-3}"; REQ_PATH="${2:-/}"
BIN="${PORTICO_BIN:-$HERE/../target/release/portico}"
command -v strace >/dev/null || { echo "strace is missing: apt-get install strace" >&2; exit 1; }
# shellcheck source=lib.sh
. "$HERE/lib.sh"
RUN="$WORK"; chmod 755 "$RUN"; mkdir -p "$RUN/gw"
backend_conf "$RUN/backend.conf" backend 18700
common="access_log off; keepalive_requests 1000000; client_body_temp_path $RUN/tmp/b; proxy_temp_path $RUN/tmp/p;
  fastcgi_temp_path $RUN/tmp/f; uwsgi_temp_path $RUN/tmp/u; scgi_temp_path $RUN/tmp/s;"
cat >"$RUN/proxy.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $RUN/proxy.pid; error_log $RUN/proxy.log warn;
events { worker_connections 4096; }
http { $common
  upstream backend { server 127.0.0.1:18700; keepalive 256; keepalive_requests 1000000; }
  server { listen 127.0.0.1:18701; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
taskset -c 1 nginx -p "$RUN/" -c "$RUN/backend.conf" & PIDS+=($!)
taskset -c 0 nginx -p "$RUN/" -c "$RUN/proxy.conf" & NGINX=$!; PIDS+=($NGINX)
BENCH_LISTEN=127.0.0.1:18702 BENCH_UPSTREAM=127.0.0.1:18700 BENCH_RUN_DIR="$RUN/gw" PORTICO_BIN="$BIN" \
    taskset -c 0 "$HERE/run-portico.sh" 2>"$RUN/gw.log" & PORTICO=$!; PIDS+=($PORTICO)
sleep 1

# count NAME PID PORT [wrk args...]: syscalls per request of process PID under load.
count() {
    local name="$1" pid="$2" port="$3"; shift 3
    taskset -c 1 wrk -t1 -c64 -d1s "$@" "http://127.0.0.1:$port$REQ_PATH" >/dev/null
    strace -c -f -q -p "$pid" -o "$RUN/$name.strace" &
    local st=$!
    sleep 0.5
    taskset -c 1 wrk -t1 -c64 -d"${SECS}s" "$@" "http://127.0.0.1:$port$REQ_PATH" >"$RUN/$name.wrk"
    sleep 0.3
    kill -INT "$st"; wait "$st" 2>/dev/null || true
    local reqs
    reqs=$(awk '/requests in/ {print $1}' "$RUN/$name.wrk")
    awk '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" { print $NF, $4 }' \
        "$RUN/$name.strace" >"$RUN/$name.calls"
    awk -v n="$name" -v r="$reqs" '{ t += $2 } END { printf "%-14s %6.2f syscalls per request (%d requests)\n", n, t / r, r }' \
        "$RUN/$name.calls"
    awk -v r="$reqs" '$2 / r >= 0.01 { printf "    %-18s %6.3f\n", $1, $2 / r }' "$RUN/$name.calls" | sort -k2 -n -r
}
echo "keep-alive, 64 connections, $REQ_PATH:"
count nginx "$NGINX" 18701
count portico "$PORTICO" 18702
echo
echo "Connection: close (a connection per request), $REQ_PATH:"
count nginx-close "$NGINX" 18701 -H "Connection: close"
count portico-close "$PORTICO" 18702 -H "Connection: close"
