#!/usr/bin/env bash
# Idle memory per open client connection: opens N idle keep-alive connections (each after
# one request) to a gateway and divides the growth of its resident memory by N.
#   bench/idle-memory.sh [N]   (default 10000)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
N="${1:-10000}"
BIN="${PORTICO_BIN:-$HERE/../target/release/portico}"
[ -x "$BIN" ] || (cd "$HERE/.." && cargo build --release -p portico)
RUN="$(mktemp -d)"
GW=""; UP=""
trap 'kill $GW $UP 2>/dev/null || true; rm -rf "$RUN"' EXIT
# Each connection needs a descriptor in the gateway and one here.
limit=$(ulimit -Hn)
if [ "$limit" != unlimited ] && [ "$limit" -lt $((N + 200)) ]; then
    N=$((limit - 200))
    echo "idle-memory.sh: the open-file limit is $limit; measuring $N connections" >&2
fi
ulimit -n "$(ulimit -Hn)"
python3 -m http.server 18998 --bind 127.0.0.1 --directory "$RUN" >/dev/null 2>&1 & UP=$!
cat >"$RUN/gw.toml" <<CONF
[node]
workers = 1
internal = { enabled = false }
access_log = { enabled = false }
[[listeners]]
name = "web"
address = "127.0.0.1"
port = 18997
idle_timeout = "10m"
[[routes]]
name = "hello"
fixed_response = { status = 200, body = "hello" }
CONF
"$BIN" gateway run --config "$RUN/gw.toml" 2>"$RUN/gw.log" & GW=$!
sleep 1
python3 - "$GW" "$N" <<'PY'
import socket, sys, time
pid, n = int(sys.argv[1]), int(sys.argv[2])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])
def open_conns(k):
    out = []
    for _ in range(k):
        s = socket.create_connection(("127.0.0.1", 18997))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(4096)
        out.append(s)
    return out
warm = open_conns(100)      # let allocator and runtime reach steady state
time.sleep(0.5)
before = rss()
conns = open_conns(n)
time.sleep(1)
after = rss()
print(f"connections: {n}  rss before: {before} KiB  after: {after} KiB  per connection: {(after - before) * 1024 / n:.0f} bytes")
PY
