#!/usr/bin/env bash
# Console and portal pages against the JSON calls that answer the same thing (issue 14):
# seeds a fresh control plane through its API with 1,000 APIs (each with revision 1,
# deployed to gw-1 and gw-2, published) and 100 gateways, one object of each other listed
# kind, a second revision of the middle API and a portal application of an admin user's,
# signs that user in, then times each page and its JSON call over 100 requests each,
# alternating, on keep-alive connections (pages with the session cookie, JSON with the
# same session as a bearer token). The time is the client's to the last byte on loopback,
# so the server's time plus a little of Python's. Prints p50 / p99 / max in ms side by
# side, the ratios, and whether each page meets the target p99 <= 50 ms.
#   bench/pages.sh                                  # 1,000 APIs, 100 gateways
#   SEED_APIS=50 SEED_GATEWAYS=5 bench/pages.sh     # a quick look
#   PORTICO=path/to/portico REQUESTS=200 bench/pages.sh
# Uses the binary already built (target/release/portico, else target/debug/portico: debug
# figures are not representative); it does not build one.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/.."
SEED_APIS="${SEED_APIS:-1000}"
SEED_GATEWAYS="${SEED_GATEWAYS:-100}"
REQUESTS="${REQUESTS:-100}"
WARMUP="${WARMUP:-5}"
PARALLEL="${PARALLEL:-8}"          # seeding threads
PORT="${PORT:-18820}"              # admin API; the built-in gateway gets PORT+1
for t in python3 curl openssl; do
    command -v "$t" >/dev/null || { echo "pages.sh: needs $t" >&2; exit 1; }
done
# Every API is deployed to gw-1 and gw-2, and the middle one is the detail pages' subject.
[ "$SEED_GATEWAYS" -ge 2 ] && [ "$SEED_APIS" -ge 1 ] \
    || { echo "pages.sh: needs SEED_GATEWAYS >= 2 and SEED_APIS >= 1" >&2; exit 1; }

# The binary: $PORTICO (or $PORTICO_BIN, as the other scripts take it), else the release
# build, else the debug one. No build here: compiling would compete with the measurement.
BIN="${PORTICO:-${PORTICO_BIN:-}}"
if [ -z "$BIN" ]; then
    if [ -x "$ROOT/target/release/portico" ]; then
        BIN="$ROOT/target/release/portico"
    elif [ -x "$ROOT/target/debug/portico" ]; then
        BIN="$ROOT/target/debug/portico"
    fi
fi
[ -n "$BIN" ] && [ -x "$BIN" ] \
    || { echo "pages.sh: no portico binary (cargo build --release -p portico, or set PORTICO)" >&2; exit 1; }
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
case "$BIN" in
    */debug/*) echo "pages.sh: using $BIN: a debug build, its figures are not representative" >&2 ;;
    *) echo "pages.sh: using $BIN" >&2 ;;
esac
# shellcheck source=lib.sh
. "$HERE/lib.sh"

# A fresh control plane; the built-in gateway's access log off (no traffic goes there).
URL="http://127.0.0.1:$PORT"
if curl -s -o /dev/null "$URL/healthz"; then
    echo "pages.sh: something already answers on $URL (set PORT)" >&2; exit 1
fi
"$BIN" server --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --gateway-port "$((PORT + 1))" \
    --internal 127.0.0.1:0 --access-log off >"$WORK/server.log" 2>&1 &
SERVER=$!
PIDS+=($SERVER)
for _ in $(seq 300); do
    grep -q 'control plane ready' "$WORK/server.log" && break
    kill -0 "$SERVER" 2>/dev/null || { echo "pages.sh: the server exited:" >&2; tail -20 "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
done
grep -q 'control plane ready' "$WORK/server.log" \
    || { echo "pages.sh: the server is not ready after 30 s:" >&2; tail -20 "$WORK/server.log" >&2; exit 1; }
TOKEN="$(grep -m1 -o '^    pat_[A-Za-z0-9_-]*' "$WORK/server.log" | tr -d ' ')"
[ -n "$TOKEN" ] || { echo "pages.sh: no admin token in the server's output" >&2; exit 1; }

echo "seeding $SEED_GATEWAYS gateways and $SEED_APIS APIs through $URL/api/v1 ($PARALLEL at a time)" >&2
# The certificate the certificates page lists (a self-signed one, made here).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=bench.example -addext subjectAltName=DNS:bench.example \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null \
    || { echo "pages.sh: openssl could not make the bench certificate" >&2; exit 1; }
python3 "$HERE/pages.py" seed "$URL" "$TOKEN" "$SEED_APIS" "$SEED_GATEWAYS" "$PARALLEL" "$WORK"
echo "measuring ($REQUESTS requests per page and per JSON call)" >&2
python3 "$HERE/pages.py" measure "$URL" "$TOKEN" "$SEED_APIS" "$REQUESTS" "$WARMUP"
echo
echo "binary: $BIN$(case "$BIN" in */debug/*) echo ' (debug build: not representative)' ;; esac)"
echo "seed: $SEED_APIS APIs (each deployed to gw-1 and gw-2, published), $SEED_GATEWAYS gateways + default"
echo "machine: $(nproc) CPUs, $(uname -sr), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
