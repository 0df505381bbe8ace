#!/usr/bin/env bash
# A gateway node with a million consumers' API keys and 50,000 routes against a real control
# plane (issue 18):
# `portico server` (SQLite, a fresh data directory) and one `portico gateway run` node.
# One consumer is made through the CLI (subscribed, with a key); KEYS-1 more (default
# 999,999), each subscribed with a key of its own, are copied into the database with
# sqlite3 while the control plane is stopped (made one by one through the API they would
# take an hour). Then, timed:
#   0. the control plane's start, which compiles every gateway whole;
#   1. a revision deployed (compiled from the snapshot the control plane holds);
#   2. the node's first start, fetching the whole snapshot, until it serves the key;
#   3. the node restarted from its cache, until it serves again;
#   4. one change (a revision of the API with another backend) from the deploy call to the node
#      serving it, with requests sent all along: every one must be answered 200;
#   5. one key added for a new consumer, from the call to the node serving it;
#   6. one of the routes changed, from the call to the node serving it;
# and the resident memory of both processes (VmRSS, VmHWM) after each step.
#   bench/scale-node.sh            # KEYS=1000000
#   KEYS=100000 ROUTES=1000 bench/scale-node.sh
# ROUTES (default 50,000) raw routes on the gateway besides the API's, copied in the same way
# from one made through the API.
# Needs sqlite3, curl and python3 (a backend); uses target/release/portico (PORTICO_BIN).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${PORTICO_BIN:-$HERE/../target/release/portico}"
KEYS="${KEYS:-1000000}"
ROUTES="${ROUTES:-50000}"
[ -x "$BIN" ] || { echo "scale-node.sh: build first: cargo build --release -p portico" >&2; exit 1; }
for t in sqlite3 curl python3 wrk; do
    command -v "$t" >/dev/null || { echo "scale-node.sh: needs $t" >&2; exit 1; }
done
RUN="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$RUN"
}
trap cleanup EXIT
CP=19400; GW=19480; CPI=19401; NODE_ADMIN=19420; NODE=19481; NODEI=19402; B1=19001; B2=19002
export PORTICO_URL="http://127.0.0.1:$CP"
ms() { date +%s%3N; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu_per_request() { # node pid -> "N requests, X us of the node's CPU each" (wrk, 10 s)
    local before after n
    before=$(ticks "$1")
    n=$(wrk -t1 -c8 -d10s -H "apikey: $KEY" "http://127.0.0.1:$NODE/pets/v1/" | awk '/requests in/ {print $1}')
    after=$(ticks "$1")
    echo "$n requests, $(awk -v t=$((after - before)) -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}') us of the node's CPU each"
}
mem() { # pid -> "RSS MiB (peak MiB)"
    awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "%.0f MiB (peak %.0f MiB)", r/1024, h/1024}' "/proc/$1/status"
}
wait_for() { # what, command...
    local what="$1"; shift
    for _ in $(seq 1200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "scale-node.sh: $what never happened" >&2; exit 1
}
for b in 1 2; do
    mkdir -p "$RUN/b$b" && echo "backend $b" >"$RUN/b$b/index.html"
done
python3 -m http.server "$B1" --bind 127.0.0.1 --directory "$RUN/b1" >/dev/null 2>&1 & PIDS+=($!)
python3 -m http.server "$B2" --bind 127.0.0.1 --directory "$RUN/b2" >/dev/null 2>&1 & PIDS+=($!)

start_cp() {
    "$BIN" server --data-dir "$RUN/cp" --listen "127.0.0.1:$CP" --gateway-port "$GW" \
        --internal "127.0.0.1:$CPI" >>"$RUN/cp.log" 2>&1 &
    CP_PID=$!
    PIDS+=("$CP_PID")
    wait_for "the control plane's start" curl -sf "$PORTICO_URL/healthz"
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
# PERF=DIR records the control plane's CPU (perf record -g) over each timed change.
perf_start() {
    [ -n "${PERF:-}" ] || return 0
    mkdir -p "$PERF"
    perf record -g -o "$PERF/$1.data" -p "$CP_PID" >/dev/null 2>&1 &
    PERF_PID=$!
    sleep 0.5
}
perf_stop() {
    [ -n "${PERF:-}" ] || return 0
    kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true
}
start_cp
PORTICO_TOKEN="$(grep -o 'pat_[A-Za-z0-9_-]*' "$RUN/cp.log" | head -1)"
export PORTICO_TOKEN
cli() { "$BIN" "$@" >>"$RUN/cli.log" 2>&1 || { echo "scale-node.sh: portico $* failed:" >&2; tail -5 "$RUN/cli.log" >&2; exit 1; }; }

# The node, and the gateway it serves.
"$BIN" gateway init --config "$RUN/edge.toml" --admin-listen "127.0.0.1:$NODE_ADMIN" >"$RUN/init.txt"
TOKEN="$(grep -o 'pgt_[A-Za-z0-9_-]*' "$RUN/init.txt" | head -1)"
SECRET="$(grep -o 'pjs_[A-Za-z0-9_-]*' "$RUN/init.txt" | head -1)"
sed -i -e "s|http://127.0.0.1:9400|$PORTICO_URL|" -e "s|127.0.0.1:9401|127.0.0.1:$NODEI|" \
    -e '/\[node.access_log\]/,/^$/ s/enabled = true/enabled = false/' "$RUN/edge.toml"
STARTS=0
start_node() { # each start logs to a file of its own: $NODE_LOG
    STARTS=$((STARTS + 1))
    NODE_LOG="$RUN/node-$STARTS.log"
    "$BIN" gateway run --config "$RUN/edge.toml" >"$NODE_LOG" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
}
applied() { grep -q 'snapshot applied' "$NODE_LOG"; }
start_node
wait_for "the node's admin port" curl -s -o /dev/null "http://127.0.0.1:$NODE_ADMIN/"
cli gateways link edge --type production --url "http://127.0.0.1:$NODE_ADMIN" --listen "$NODE" \
    --api-token "$TOKEN" --jwt-secret "$SECRET"
cat >"$RUN/api.toml" <<TOML
name = "Pets"
version = "v1"
context = "/pets/v1"
production_endpoints = ["http://127.0.0.1:$B1"]
auth = "api_key"
TOML
cli apis create -f "$RUN/api.toml"
cli revisions create pets-v1 --note one
cli consumers create acme
cli subscriptions add acme --api pets-v1
"$BIN" keys create acme --type production >"$RUN/key.txt"
KEY="$(tail -1 "$RUN/key.txt" | tr -d ' ')"
cli deploy pets-v1 --revision 1 --gateway edge
serves() { # body wanted
    [ "$(curl -s -H "apikey: $KEY" "http://127.0.0.1:$NODE/pets/v1/")" = "$1" ]
}
wait_for "the node serving the key" serves "backend 1"
ONE_KEY="$(cpu_per_request "$NODE_PID")"
stop "$NODE_PID"

# One raw route through the API, copied ROUTES-1 times below.
curl -sf -o /dev/null -H "Authorization: Bearer $PORTICO_TOKEN" -H 'Content-Type: application/json' \
    -d '{"name": "bulk-0", "gateways": ["edge"], "route": {"match": {"path": {"exact": "/bulk/0"}}, "fixed_response": {"status": 200, "body": "bulk"}}}' \
    "$PORTICO_URL/api/v1/routes" || { echo "scale-node.sh: cannot create a route" >&2; exit 1; }

# KEYS-1 more consumers, each subscribed with a key, and ROUTES-1 more routes, copied in
# while nothing runs.
stop "$CP_PID"
t=$(ms)
sqlite3 "$RUN/cp/portico.db" <<SQL
PRAGMA foreign_keys = OFF;
CREATE TEMP TABLE n(i INTEGER PRIMARY KEY);
WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $KEYS - 1)
INSERT INTO n SELECT i FROM s;
INSERT INTO consumers (name_key, spec, version, created_at, updated_at, owner_user)
SELECT 'bulk-' || n.i, replace(c.spec, '"acme"', '"bulk-' || n.i || '"'), 1, c.created_at,
       c.updated_at, c.owner_user
FROM n, consumers c WHERE c.name_key = 'acme';
INSERT INTO subscriptions (consumer_id, api_id, tier, created_at)
SELECT c.id, s.api_id, s.tier, s.created_at
FROM consumers c, subscriptions s JOIN consumers a ON a.id = s.consumer_id AND a.name_key = 'acme'
WHERE c.name_key LIKE 'bulk-%';
INSERT INTO credentials (id, consumer_id, kind, key_type, secret_hash, hint, created_at)
SELECT 'bulk-' || c.id, c.id, 'api_key', 'production', lower(hex(randomblob(32))), 'pk_bulk', c.created_at
FROM consumers c WHERE c.name_key LIKE 'bulk-%';
DELETE FROM n;
WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $ROUTES - 1)
INSERT INTO n SELECT i FROM s;
INSERT INTO routes (name_key, spec, version, created_at, updated_at)
SELECT 'bulk-' || n.i, replace(replace(r.spec, '"bulk-0"', '"bulk-' || n.i || '"'), '/bulk/0"', '/bulk/' || n.i || '"'),
       1, r.created_at, r.updated_at
FROM n, routes r WHERE r.name_key = 'bulk-0';
INSERT INTO route_gateways (route_id, gateway_key)
SELECT id, 'edge' FROM routes WHERE name_key LIKE 'bulk-%' AND name_key != 'bulk-0';
SQL
echo "scale-node.sh: $((KEYS - 1)) consumers and keys, $((ROUTES - 1)) routes copied into the database in $(( $(ms) - t )) ms" >&2
t=$(ms)
start_cp
STARTED=$(( $(ms) - t ))

echo "# bench/scale-node.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) CPUs"
echo "# a node with $KEYS consumers' API keys (each subscribed to the API) and $ROUTES raw routes besides the API's against portico server on SQLite"
echo "0. the control plane's start, compiling every gateway whole (every key read from the database): $STARTED ms; control plane $(mem "$CP_PID")"
cli revisions create pets-v1 --note "the same, compiled with every key"
t=$(ms)
cli deploy pets-v1 --revision 2 --gateway edge
echo "1. a revision deployed (the control plane compiles from the snapshot it holds): $(( $(ms) - t )) ms; control plane $(mem "$CP_PID")"

# A first start: no cache, the whole snapshot fetched.
rm -rf "$RUN/edge-cache"
t=$(ms)
start_node
wait_for "the node applying the snapshot" applied
wait_for "the node serving the key" serves "backend 1"
echo "2. node's first start (no cache: the whole snapshot fetched) to serving: $(( $(ms) - t )) ms; node $(mem "$NODE_PID")"
CACHE="$RUN/edge-cache/snapshot.json"
wait_for "the cache written" test -s "$CACHE"
sleep 1
stop "$NODE_PID"
echo "   the cache: $(( $(stat -c %s "$CACHE") / 1048576 )) MiB"
t=$(ms)
start_node
wait_for "the node serving from its cache" serves "backend 1"
grep -q 'starting from the cached snapshot' "$NODE_LOG" || { echo "scale-node.sh: the node did not start from its cache" >&2; exit 1; }
echo "3. node restarted from its cache to serving: $(( $(ms) - t )) ms; node $(mem "$NODE_PID")"
echo "   per request through the node (wrk, 10 s, the key in a header, a Python backend): with 1 key $ONE_KEY; with $KEYS keys $(cpu_per_request "$NODE_PID")"

# Requests all along the change; each answer's status is written down.
( while :; do curl -s -o /dev/null -w '%{http_code}\n' -H "apikey: $KEY" "http://127.0.0.1:$NODE/pets/v1/"; done ) >"$RUN/codes.txt" &
LOAD=$!
PIDS+=("$LOAD")
sleep 1
sed -i "s|127.0.0.1:$B1|127.0.0.1:$B2|" "$RUN/api.toml"
cli apply -f "$RUN/api.toml"
cli revisions create pets-v1 --note "another backend"
perf_start 4-deploy
t=$(ms)
cli deploy pets-v1 --revision 3 --gateway edge
deployed=$(( $(ms) - t ))
perf_stop
wait_for "the node serving the change" serves "backend 2"
echo "4. one change (a revision with another backend): deploy call $deployed ms, serving it $(( $(ms) - t )) ms after the call began; node $(mem "$NODE_PID"); control plane $(mem "$CP_PID")"
sleep 1
kill "$LOAD"; wait "$LOAD" 2>/dev/null || true
total=$(wc -l <"$RUN/codes.txt"); bad=$(grep -vc '^200$' "$RUN/codes.txt" || true)
echo "   requests during the change: $total, not 200: $bad"
echo "   how the node took it: $(grep 'snapshot applied' "$NODE_LOG" | tail -1 | sed -e 's/\x1b\[[0-9;]*m//g' | grep -o 'version=.*')"
[ "$bad" = 0 ] || { echo "scale-node.sh: $bad requests failed during the change" >&2; exit 1; }

# One key added for a new consumer: the control plane's call, and the node serving it.
cli consumers create late
cli subscriptions add late --api pets-v1
perf_start 5-key
t=$(ms)
"$BIN" keys create late --type production >"$RUN/late.txt"
created=$(( $(ms) - t ))
perf_stop
LATE="$(tail -1 "$RUN/late.txt" | tr -d ' ')"
late_serves() { [ "$(curl -s -o /dev/null -w '%{http_code}' -H "apikey: $LATE" "http://127.0.0.1:$NODE/pets/v1/")" = 200 ]; }
wait_for "the node serving the new key" late_serves
echo "5. one key added (a new consumer's): the call $created ms, the node serving it $(( $(ms) - t )) ms after the call began; node $(mem "$NODE_PID"); control plane $(mem "$CP_PID")"
echo "   how the node took it: $(grep 'snapshot applied' "$NODE_LOG" | tail -1 | sed -e 's/\x1b\[[0-9;]*m//g' | grep -o 'version=.*')"

# One of the routes changed.
if [ "$ROUTES" -gt 7 ]; then
    perf_start 6-route
    t=$(ms)
    curl -sf -o /dev/null -X PUT -H "Authorization: Bearer $PORTICO_TOKEN" -H 'Content-Type: application/json' \
        -d '{"name": "bulk-7", "gateways": ["edge"], "route": {"match": {"path": {"exact": "/bulk/7"}}, "fixed_response": {"status": 200, "body": "changed"}}}' \
        "$PORTICO_URL/api/v1/routes/bulk-7?version=1" || { echo "scale-node.sh: cannot change a route" >&2; exit 1; }
    changed=$(( $(ms) - t ))
    perf_stop
    route_serves() { [ "$(curl -s "http://127.0.0.1:$NODE/bulk/7")" = changed ]; }
    wait_for "the node serving the changed route" route_serves
    echo "6. one route changed: the call $changed ms, the node serving it $(( $(ms) - t )) ms after the call began; node $(mem "$NODE_PID"); control plane $(mem "$CP_PID")"
    echo "   how the node took it: $(grep 'snapshot applied' "$NODE_LOG" | tail -1 | sed -e 's/\x1b\[[0-9;]*m//g' | grep -o 'version=.*')"
fi
