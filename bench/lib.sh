# Shared by the bench scripts (auth.sh, tls.sh, static.sh, rss.sh, syscalls.sh): a scratch directory
# removed on exit with every process in PIDS and the nginx of $WORK/nginx.pid, CPU ticks of
# processes, nginx's master and workers, and the median of a list.
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -f "$WORK/nginx.pid" ]; then kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
HZ="$(getconf CLK_TCK)"
# user+system ticks of the processes given
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
nginx_pids() { echo "$(cat "$WORK/nginx.pid") $(pgrep -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' ')"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# The median of per-round ratios a_i / b_i of two space-separated lists of the same rounds
# (robust to the machine speeding up or slowing down between rounds).
ratio_median() {
    paste <(tr ' ' '\n' <<<"$1" | grep -v '^$') <(tr ' ' '\n' <<<"$2" | grep -v '^$') \
        | awk '{printf "%.4f\n", $1 / $2}' | median
}
# The backend nginx every proxy is measured against, as ../shared/bench runs it: one worker,
# `/` a 14-byte body from memory, `/16k` a 16,384-byte file. Writes its config to $1 with
# $2 as its name (pid and log files) listening on 127.0.0.1:$3.
backend_conf() {
    local conf="$1" name="$2" port="$3"
    mkdir -p "$WORK/tmp"
    [ -f "$WORK/16k.bin" ] || head -c 16384 /dev/zero | tr '\0' 'x' >"$WORK/16k.bin"
    cat >"$conf" <<CONF
daemon off; worker_processes 1; pid $WORK/$name.pid; error_log $WORK/$name.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $WORK/tmp/b; proxy_temp_path $WORK/tmp/p;
  fastcgi_temp_path $WORK/tmp/f; uwsgi_temp_path $WORK/tmp/u; scgi_temp_path $WORK/tmp/s;
  server { listen 127.0.0.1:$port; location = /16k { alias $WORK/16k.bin; } location / { return 200 "Hello, World!\n"; } } }
CONF
}
