#!/usr/bin/env bash
# Memory of a large snapshot, and what is left of it once it is gone: a gateway run from a
# file with N routes (default 20000) is reloaded (SIGHUP) to a one-route file; its resident
# memory is read with the big snapshot, after the reload (and some traffic), and in a fresh
# process started with the small file.
#   bench/snapshot-memory.sh [N]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
N="${1:-20000}"
BIN="${PORTICO_BIN:-$HERE/../target/release/portico}"
[ -x "$BIN" ] || (cd "$HERE/.." && cargo build --release -p portico)
RUN="$(mktemp -d)"
GW=""
trap 'kill $GW 2>/dev/null || true; rm -rf "$RUN"' EXIT
PORT=18996
head() {
    cat <<CONF
[node]
workers = 2
watch = false
internal = { enabled = false }
access_log = { enabled = false }
[[listeners]]
name = "web"
address = "127.0.0.1"
port = $PORT
[[services]]
name = "s"
endpoints = ["127.0.0.1:9"]
CONF
}
{
    head
    for i in $(seq 1 "$N"); do
        printf '[[routes]]\nname = "r%d"\nmatch = { hosts = ["h%d.example.com"], path = { path_prefix = "/api/v%d" }, headers = [{ name = "x-tenant", regex = "t%d-[a-z]+" }] }\nforward = { service = "s" }\n' "$i" "$i" "$i" "$i"
    done
    printf '[[routes]]\nname = "hello"\nfixed_response = { status = 200, body = "hello" }\n'
} >"$RUN/big.toml"
{
    head
    printf '[[routes]]\nname = "hello"\nfixed_response = { status = 200, body = "hello" }\n'
} >"$RUN/small.toml"
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
traffic() { for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$PORT/"; done; }
wait_ready() { for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && return 0; sleep 0.1; done; return 1; }

cp "$RUN/big.toml" "$RUN/gw.toml"
"$BIN" gateway run --config "$RUN/gw.toml" 2>"$RUN/gw.log" & GW=$!
wait_ready
traffic
big=$(rss "$GW")
cp "$RUN/small.toml" "$RUN/gw.toml"
kill -HUP "$GW"
for _ in $(seq 1 100); do grep -q 'config applied' "$RUN/gw.log" && break; sleep 0.1; done
traffic
sleep 2
traffic
after=$(rss "$GW")
kill "$GW"; wait "$GW" 2>/dev/null || true
"$BIN" gateway run --config "$RUN/small.toml" 2>"$RUN/gw2.log" & GW=$!
wait_ready
traffic
fresh=$(rss "$GW")
echo "routes: $N  rss with them: $((big / 1024)) MiB  after reloading to one route: $((after / 1024)) MiB  a fresh process with one route: $((fresh / 1024)) MiB"
