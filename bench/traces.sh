#!/usr/bin/env bash
# What tracing costs at the gateway: the same route through three gateways run from files,
# one with tracing off, one recording every request (`sampler = "always"`) and one a tenth
# of them (`ratio = 0.1`), exporting spans over OTLP/HTTP to a local receiver, measured one
# after the other in each round (gateways on CPU 0 with one worker, GATEWAY_CPUS to
# change it; wrk, the backend nginx and the receiver on CPU 1).
# Prints req/s and each gateway's CPU time per request (its export thread included), the
# ratio of tracing on to off per round and its median, and the spans the receiver took and
# the gateways dropped.
#   bench/traces.sh              # 5 rounds x 8 s
#   ROUNDS=1 DURATION=3 bench/traces.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/.."
BIN="${PORTICO_BIN:-$ROOT/target/release/portico}"
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-8}"
command -v wrk >/dev/null || { echo "traces.sh: needs wrk (../shared/bench/setup.sh installs it)" >&2; exit 1; }
command -v nginx >/dev/null || { echo "traces.sh: needs nginx (../shared/bench/setup.sh installs it)" >&2; exit 1; }
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p portico)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

backend_conf "$WORK/backend.conf" backend 18600
taskset -c 1 nginx -c "$WORK/backend.conf" -p "$WORK" &
PIDS+=($!)

# The receiver: takes each POST, counts the bytes and answers 200 with an empty
# ExportTraceServiceResponse (as a collector does).
cat >"$WORK/receiver.py" <<'PY'
import http.server, sys
posts = 0
size = 0
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        global posts, size
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        posts += 1
        size += n
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def do_GET(self):
        body = f"{posts} {size}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
taskset -c 1 python3 "$WORK/receiver.py" 18650 &
PIDS+=($!)

gateway() { # name port internal-port tracing-table
    cat >"$WORK/$1.toml" <<TOML
[node]
workers = 1
internal = { address = "127.0.0.1:$3" }
access_log = { enabled = false }
$4
[[listeners]]
address = "127.0.0.1"
port = $2
[[services]]
name = "backend"
endpoints = ["127.0.0.1:18600"]
[[routes]]
name = "pets"
match = { path = { prefix = "/" } }
forward = { service = "backend" }
TOML
    taskset -c "${GATEWAY_CPUS:-0}" "$BIN" gateway run --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
    PIDS+=($!)
    eval "$5=$!"
}
gateway off 18610 18611 "" OFF
gateway on 18620 18621 "[node.tracing]
sampler = \"always\"
otlp_endpoint = \"http://127.0.0.1:18650/v1/traces\"
queue = 8192" ON
gateway tenth 18630 18631 "[node.tracing]
sampler = \"ratio\"
ratio = 0.1
otlp_endpoint = \"http://127.0.0.1:18650/v1/traces\"
queue = 8192" TENTH
for port in 18610 18620 18630; do
    for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/")" = 200 ] ||
        { echo "traces.sh: the gateway on $port does not answer" >&2; cat "$WORK"/*.log >&2; exit 1; }
done

declare -A RPS CPU
for round in $(seq "$ROUNDS"); do
    for s in off on tenth; do
        pid="$OFF"; port=18610
        [ "$s" = on ] && { pid="$ON"; port=18620; }
        [ "$s" = tenth ] && { pid="$TENTH"; port=18630; }
        before="$(cpu_ticks "$pid")"
        out="$(taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" "http://127.0.0.1:$port/")"
        # The export thread sends what is queued within a second: count that too.
        sleep 1.2
        after="$(cpu_ticks "$pid")"
        rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
        reqs="$(awk '/requests in/ {print $1}' <<<"$out")"
        us="$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')"
        echo "round $round  tracing $s  $rps req/s  $us us/req"
        RPS[$s]="${RPS[$s]:-} $rps"; CPU[$s]="${CPU[$s]:-} $us"
    done
done
received="$(curl -s http://127.0.0.1:18650/)"
dropped=0
for port in 18621 18631; do
    d="$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^portico_trace_spans_dropped_total/ {print $2}')"
    dropped=$((dropped + ${d:-0}))
done
printf '\n| tracing | req/s | CPU us/req | CPU x off (median of per-round ratios) |\n|---|---|---|---|\n'
for s in off on tenth; do
    printf '| %s | %s | %s | %s |\n' "$s" "$(median <<<"${RPS[$s]}")" "$(median <<<"${CPU[$s]}")" \
        "$(ratio_median "${CPU[$s]}" "${CPU[off]}")"
done
printf '\nreq/s, tracing on / off (median of per-round ratios): %s\n' \
    "$(ratio_median "${RPS[on]}" "${RPS[off]}")"
printf 'receiver: %s posts, %s bytes; spans dropped by the gateways: %s\n' \
    "${received%% *}" "${received##* }" "$dropped"
