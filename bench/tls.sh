#!/usr/bin/env bash
# HTTPS side by side with nginx, same certificate (ECDSA P-256) and backend: keep-alive
# requests, and a new TLS 1.3 connection (full handshake) per request. Each proxy on CPU 0
# with one worker; wrk and a fixed-response backend on CPU 1. Prints req/s and the proxy's
# CPU time per request, and Portico's ratios to nginx.
#   bench/tls.sh                 # 3 rounds x 8 s
#   ROUNDS=1 DURATION=3 bench/tls.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/.."
BIN="${PORTICO_BIN:-$ROOT/target/release/portico}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-8}"
for t in wrk nginx openssl taskset; do
    command -v "$t" >/dev/null || { echo "tls.sh: needs $t (../shared/bench/setup.sh installs wrk and nginx)" >&2; exit 1; }
done
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p portico)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=bench.local \
    -addext subjectAltName=DNS:bench.local,IP:127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

cat > "$WORK/backend.toml" <<TOML
[node]
workers = 1
internal = { enabled = false }
access_log = { enabled = false }
[[listeners]]
address = "127.0.0.1"
port = 18600
[[routes]]
fixed_response = { status = 200, body = "ok" }
TOML
taskset -c 1 "$BIN" gateway run --config "$WORK/backend.toml" >"$WORK/backend.log" 2>&1 &
PIDS+=($!)

cat > "$WORK/portico.toml" <<TOML
[node]
workers = 1
internal = { enabled = false }
access_log = { enabled = false }
[[listeners]]
address = "127.0.0.1"
port = 18643
tls = { certificates = [{ cert_file = "$WORK/cert.pem", key_file = "$WORK/key.pem" }] }
[[services]]
name = "backend"
endpoints = ["127.0.0.1:18600"]
[[routes]]
forward = { service = "backend" }
TOML
taskset -c 0 "$BIN" gateway run --config "$WORK/portico.toml" >"$WORK/portico.log" 2>&1 &
PORTICO=$!
PIDS+=($PORTICO)

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
    upstream backend { server 127.0.0.1:18600; keepalive 64; }
    server {
        listen 127.0.0.1:18644 ssl;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CONF
taskset -c 0 nginx -c "$WORK/nginx.conf"
sleep 1
for port in 18643 18644; do
    code=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/")
    [ "$code" = 200 ] || { echo "tls.sh: port $port answered $code" >&2; exit 1; }
done

declare -A RPS CPU HS
for round in $(seq "$ROUNDS"); do
    for proxy in nginx portico; do
        if [ "$proxy" = portico ]; then port=18643; pids="$PORTICO"; else port=18644; pids="$(nginx_pids)"; fi
        for mode in keepalive handshake; do
            hdr=()
            [ "$mode" = handshake ] && hdr=(-H "Connection: close")
            before="$(cpu_ticks $pids)"
            out="$(taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" "${hdr[@]}" "https://127.0.0.1:$port/")"
            after="$(cpu_ticks $pids)"
            rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
            reqs="$(awk '/requests in/ {print $1}' <<<"$out")"
            us="$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')"
            echo "round $round  $proxy  $mode  $rps req/s  $us us/req"
            RPS[$proxy.$mode]="${RPS[$proxy.$mode]:-} $rps"; CPU[$proxy.$mode]="${CPU[$proxy.$mode]:-} $us"
        done
    done
done
# Handshakes alone, one at a time from one client (openssl s_time): full and resumed, with
# TLS 1.3 and with TLS 1.2. (s_time reads nothing after a TLS 1.3 handshake, so it resumes
# only when the server's session ticket came with the handshake: OpenSSL servers send it
# there, rustls after the client's Finished, which a client reads with the response.)
for proxy in nginx portico; do
    if [ "$proxy" = portico ]; then port=18643; else port=18644; fi
    for kind in new reuse new12 reuse12; do
        case "$kind" in
            new) args=(-new) ;; reuse) args=(-reuse) ;;
            new12) args=(-new -tls1_2) ;; reuse12) args=(-reuse -tls1_2) ;;
        esac
        n="$(taskset -c 1 openssl s_time -connect "127.0.0.1:$port" "${args[@]}" -time "$DURATION" 2>/dev/null \
            | awk '/connections in/ && /real seconds/ {printf "%.0f", $1 / $4}' | tail -1)"
        echo "handshakes  $proxy  $kind  ${n:-?} per second"
        HS[$proxy.$kind]="${n:-0}"
    done
done
printf '\n| scenario | proxy | req/s | CPU us/req | x nginx req/s | x nginx CPU |\n|---|---|---|---|---|---|\n'
for mode in keepalive handshake; do
    for proxy in nginx portico; do
        r="$(median <<<"${RPS[$proxy.$mode]}")"; c="$(median <<<"${CPU[$proxy.$mode]}")"
        printf '| %s | %s | %s | %s | %.2f | %.2f |\n' "$mode" "$proxy" "$r" "$c" \
            "$(ratio_median "${RPS[$proxy.$mode]}" "${RPS[nginx.$mode]}")" "$(ratio_median "${CPU[nginx.$mode]}" "${CPU[$proxy.$mode]}")"
    done
done
printf '\n| handshakes, one client | nginx /s | Portico /s | x nginx |\n|---|---|---|---|\n'
for kind in new reuse new12 reuse12; do
    printf '| %s | %s | %s | %.2f |\n' "$kind" "${HS[nginx.$kind]}" "${HS[portico.$kind]}" "$(echo "${HS[portico.$kind]} / ${HS[nginx.$kind]}" | bc -l)"
done
