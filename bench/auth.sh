#!/usr/bin/env bash
# What authentication costs at the gateway: the same route with no auth, with an API key,
# with a JWT access token, and with a JWT on a subscription whose throttling tier is checked
# on every request (a limit far above the load), side by side in one run (gateway on CPU 0 with one worker; wrk
# and the backend on CPU 1). Prints req/s and the gateway's CPU time per request, and each
# as a ratio of the route without auth.
#   bench/auth.sh              # 3 rounds x 8 s
#   ROUNDS=1 DURATION=3 bench/auth.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/.."
BIN="${PORTICO_BIN:-$ROOT/target/release/portico}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-8}"
command -v wrk >/dev/null || { echo "auth.sh: needs wrk (../shared/bench/setup.sh installs it)" >&2; exit 1; }
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p portico)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

cat > "$WORK/backend.toml" <<'TOML'
[node]
workers = 1
internal = { enabled = false }
access_log = { enabled = false }
[[listeners]]
address = "127.0.0.1"
port = 18500
[[routes]]
fixed_response = { status = 200, body = "ok" }
TOML
taskset -c 1 "$BIN" gateway run --config "$WORK/backend.toml" >"$WORK/backend.log" 2>&1 &
PIDS+=($!)
taskset -c 0 "$BIN" server --data-dir "$WORK/data" --listen 127.0.0.1:18400 --gateway-port 18480 \
    --internal 127.0.0.1:0 --workers 1 >"$WORK/server.log" 2>&1 &
SERVER=$!
PIDS+=($SERVER)
for _ in $(seq 100); do grep -q 'pat_' "$WORK/server.log" && break; sleep 0.1; done
TOKEN="$(grep -m1 -o 'pat_[A-Za-z0-9_-]*' "$WORK/server.log")"
api() { curl -sf -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -X "$1" "http://127.0.0.1:18400/api/v1$2" ${3:+-d "$3"}; }
api POST /tiers '{"name":"bench","limit":4000000000,"per":"minute"}' >/dev/null
for a in open:none key:api_key jwt:jwt limited:jwt; do
    name="${a%%:*}"; mode="${a##*:}"
    api POST /apis "{\"name\":\"$name\",\"version\":\"v1\",\"context\":\"/$name\",\"auth\":\"$mode\",\"production_endpoints\":[\"http://127.0.0.1:18500\"]}" >/dev/null
    api POST "/apis/$name-v1/revisions" >/dev/null
    api POST "/apis/$name-v1/deployments" "{\"revision\":1,\"gateways\":[\"default\"]}" >/dev/null
done
api POST /consumers '{"name":"bench"}' >/dev/null
api POST /consumers/bench/subscriptions '{"api":"key-v1"}' >/dev/null
api POST /consumers/bench/subscriptions '{"api":"jwt-v1"}' >/dev/null
api POST /consumers/bench/subscriptions '{"api":"limited-v1","tier":"bench"}' >/dev/null
KEY="$(api POST /consumers/bench/keys '{"type":"production"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
JWT="$(api POST /consumers/bench/token '{"type":"production"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
sleep 1
for s in open key jwt limited; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "apikey: $KEY" -H "Authorization: Bearer $JWT" "http://127.0.0.1:18480/$s/")
    [ "$code" = 200 ] || { echo "auth.sh: /$s/ answered $code" >&2; exit 1; }
done

declare -A RPS CPU
for round in $(seq "$ROUNDS"); do
    for s in open key jwt limited; do
        hdr=()
        [ "$s" = key ] && hdr=(-H "apikey: $KEY")
        [ "$s" = jwt ] || [ "$s" = limited ] && hdr=(-H "Authorization: Bearer $JWT")
        before="$(cpu_ticks "$SERVER")"
        out="$(taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" "${hdr[@]}" "http://127.0.0.1:18480/$s/")"
        after="$(cpu_ticks "$SERVER")"
        rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
        reqs="$(awk '/requests in/ {print $1}' <<<"$out")"
        us="$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')"
        echo "round $round  $s  $rps req/s  $us us/req"
        RPS[$s]="${RPS[$s]:-} $rps"; CPU[$s]="${CPU[$s]:-} $us"
    done
done
o_rps="$(median <<<"${RPS[open]}")"; o_cpu="$(median <<<"${CPU[open]}")"
printf '\n| route | req/s | x no auth | CPU us/req | x no auth CPU |\n|---|---|---|---|---|\n'
for s in open key jwt limited; do
    r="$(median <<<"${RPS[$s]}")"; c="$(median <<<"${CPU[$s]}")"
    printf '| %s | %s | %.3f | %s | %.3f |\n' "$s" "$r" "$(echo "$r / $o_rps" | bc -l)" "$c" "$(echo "$c / $o_cpu" | bc -l)"
done
