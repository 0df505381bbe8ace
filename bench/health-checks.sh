#!/usr/bin/env bash
# The cost of active health checks on an idle gateway node: N endpoints (10 services of
# N/10, each endpoint its own loopback address 127.0.x.y on one nginx port, so one server
# answers them all) probed over HTTP every INTERVAL; the gateway's CPU time is read from
# /proc over SECONDS with no traffic, after one interval of warm-up.
#   bench/health-checks.sh [N] [INTERVAL] [SECONDS]   (default 1000 5s 60)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"
N="${1:-1000}"
INTERVAL="${2:-5s}"
SECONDS_MEASURED="${3:-60}"
BIN="${PORTICO_BIN:-$HERE/../target/release/portico}"
[ -x "$BIN" ] || (cd "$HERE/.." && cargo build --release -p portico)
PORT=18990
GW_PORT=18991
INTERNAL=18992

cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server { listen $PORT reuseport; location / { return 200 "ok"; } }
}
CONF
nginx -c "$WORK/nginx.conf" -e "$WORK/nginx.err"

services=$(( (N + 99) / 100 ))
{
    printf '[node]\nworkers = 1\ninternal = { address = "127.0.0.1:%s" }\naccess_log = { enabled = false }\n\n' "$INTERNAL"
    printf '[[listeners]]\nname = "web"\naddress = "127.0.0.1"\nport = %s\n\n' "$GW_PORT"
    i=0
    for s in $(seq 1 "$services"); do
        printf '[[services]]\nname = "s%s"\nhealth_check = { path = "/healthz", interval = "%s" }\nendpoints = [' "$s" "$INTERVAL"
        for _ in $(seq 1 100); do
            [ "$i" -ge "$N" ] && break
            i=$((i + 1))
            printf '"127.0.%s.%s:%s",' $((i / 250)) $((i % 250 + 1)) "$PORT"
        done
        printf ']\n\n[[routes]]\nname = "r%s"\nmatch = { path = { prefix = "/s%s/" } }\nforward = { service = "s%s" }\n\n' "$s" "$s" "$s"
    done
} >"$WORK/gw.toml"

"$BIN" gateway run --config "$WORK/gw.toml" 2>"$WORK/gw.log" & GW=$!
PIDS+=("$GW")
# One interval (and a second) for every endpoint's first probes and connections.
sleep "$(( ${INTERVAL%s} + 2 ))"
checks() {
    curl -s "http://127.0.0.1:$INTERNAL/metrics" \
        | awk '/^portico_upstream_health_checks_total/ {n += $2} END {printf "%d", n}'
}
healthy() {
    curl -s "http://127.0.0.1:$INTERNAL/metrics" \
        | awk '/^portico_upstream_endpoint_healthy\{/ {n += $2} END {printf "%d", n}'
}
c0=$(checks); g0=$(cpu_ticks "$GW"); n0=$(cpu_ticks $(nginx_pids))
sleep "$SECONDS_MEASURED"
c1=$(checks); g1=$(cpu_ticks "$GW"); n1=$(cpu_ticks $(nginx_pids))
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$GW/status")
probes=$((c1 - c0))
awk -v n="$N" -v iv="$INTERVAL" -v s="$SECONDS_MEASURED" -v p="$probes" -v h="$(healthy)" \
    -v g=$((g1 - g0)) -v ng=$((n1 - n0)) -v hz="$HZ" -v rss="$rss" 'BEGIN {
    printf "endpoints: %d  interval: %s  measured: %d s  probes: %d (%.0f/s)  healthy: %d\n", n, iv, s, p, p / s, h
    printf "gateway CPU: %.2f %% of one core (%.1f us per probe)  rss: %d KiB\n", 100 * g / hz / s, (p > 0 ? 1e6 * g / hz / p : 0), rss
    printf "nginx answering them: %.2f %% of one core\n", 100 * ng / hz / s
}'
