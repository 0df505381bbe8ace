#!/usr/bin/env bash
# Static files side by side with nginx: the same small file (1 KiB of HTML) and a 64 KiB
# asset served by Portico's app hosting (an app deployed to the built-in gateway of
# `portico server`, files served from its store) and by nginx from disk. Each server on
# CPU 0 with one worker, wrk on CPU 1, keep-alive, 32 connections. Prints req/s and the
# server's CPU time per request, and Portico's ratios to nginx. Then redeploys a 1,000-file
# app with one file changed and prints how many files and bytes travelled.
#   bench/static.sh                 # 3 rounds x 8 s
#   ROUNDS=1 DURATION=3 bench/static.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/.."
BIN="${PORTICO_BIN:-$ROOT/target/release/portico}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-8}"
for t in wrk nginx taskset curl; do
    command -v "$t" >/dev/null || { echo "static.sh: needs $t (../shared/bench/setup.sh installs wrk and nginx)" >&2; exit 1; }
done
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p portico)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

chmod 755 "$WORK"  # nginx workers run as another user
mkdir -p "$WORK/site/assets"
head -c 1024 /dev/zero | tr '\0' 'a' | sed 's/^/<!doctype html><title>bench<\/title>/' | head -c 1024 > "$WORK/site/index.html"
head -c 65536 /dev/urandom > "$WORK/site/assets/data.bin"

taskset -c 0 "$BIN" server --data-dir "$WORK/data" --listen 127.0.0.1:18700 --gateway-port 18701 \
    --internal 127.0.0.1:18702 --workers 1 --access-log off >"$WORK/server.out" 2>"$WORK/server.log" &
PORTICO=$!
PIDS+=($PORTICO)
for _ in $(seq 50); do grep -q 'pat_' "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
export PORTICO_URL=http://127.0.0.1:18700 PORTICO_CLI_CONFIG="$WORK/cli.json"
PORTICO_TOKEN="$(grep -o 'pat_[A-Za-z0-9_-]*' "$WORK/server.out" | head -1)"
export PORTICO_TOKEN
"$BIN" apps create site >/dev/null
"$BIN" apps upload "$WORK/site" --app site --gateway default --wait >/dev/null

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on; tcp_nopush on;
    client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
    types { text/html html; application/octet-stream bin; }
    server {
        listen 127.0.0.1:18703;
        location /site/ { alias $WORK/site/; etag on; }
    }
}
CONF
taskset -c 0 nginx -c "$WORK/nginx.conf"
sleep 1
for url in http://127.0.0.1:18701/site/index.html http://127.0.0.1:18703/site/index.html; do
    a="$(curl -s "$url" | md5sum)"; b="$(md5sum < "$WORK/site/index.html")"
    [ "$a" = "$b" ] || { echo "static.sh: $url does not serve the file" >&2; exit 1; }
done

declare -A RPS CPU
for round in $(seq "$ROUNDS"); do
    for server in nginx portico; do
        if [ "$server" = portico ]; then port=18701; pids="$PORTICO"; else port=18703; pids="$(nginx_pids)"; fi
        for file in index.html assets/data.bin; do
            before="$(cpu_ticks $pids)"
            out="$(taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" "http://127.0.0.1:$port/site/$file")"
            after="$(cpu_ticks $pids)"
            rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
            reqs="$(awk '/requests in/ {print $1}' <<<"$out")"
            us="$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')"
            echo "round $round  $server  $file  $rps req/s  $us us/req"
            RPS[$server.$file]="${RPS[$server.$file]:-} $rps"; CPU[$server.$file]="${CPU[$server.$file]:-} $us"
        done
    done
done
printf '\n| file | server | req/s | CPU us/req | x nginx req/s | x nginx CPU |\n|---|---|---|---|---|---|\n'
for file in index.html assets/data.bin; do
    for server in nginx portico; do
        r="$(median <<<"${RPS[$server.$file]}")"; c="$(median <<<"${CPU[$server.$file]}")"
        printf '| %s | %s | %s | %s | %.2f | %.2f |\n' "$file" "$server" "$r" "$c" \
            "$(ratio_median "${RPS[$server.$file]}" "${RPS[nginx.$file]}")" "$(ratio_median "${CPU[nginx.$file]}" "${CPU[$server.$file]}")"
    done
done

# Redeploying a 1,000-file app with one file changed.
mkdir -p "$WORK/big"
for i in $(seq 1000); do printf 'file %s %s\n' "$i" "$(head -c 600 /dev/urandom | base64 -w0)" > "$WORK/big/f$i.txt"; done
cp "$WORK/site/index.html" "$WORK/big/index.html"
"$BIN" apps create big >/dev/null
first="$("$BIN" apps upload "$WORK/big" --app big)"
echo "changed" >> "$WORK/big/f500.txt"
start=$(date +%s.%N)
second="$("$BIN" apps upload "$WORK/big" --app big)"
end=$(date +%s.%N)
printf '\nfirst upload:  %s\nredeploy:      %s (%.2f s)\n' "$first" "$second" "$(echo "$end - $start" | bc -l)"
