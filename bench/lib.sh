# Shared by the side-by-side scripts (auth.sh, tls.sh, static.sh): a scratch directory
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
