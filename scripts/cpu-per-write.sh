#!/usr/bin/env bash
# CPU, syscalls and context switches per acknowledged write, summed over the three servers
# of `understudy bench throughput --clients 64 --seconds 20`: `perf stat -p` over the
# servers for 10 s in the middle of the run, and the writes committed over the same 10 s
# (the highest commit index any server reports, before and after).
#
#   scripts/cpu-per-write.sh target/release/understudy after
#   EXTRA="--worker-threads 1" scripts/cpu-per-write.sh target/release/understudy one-thread
#
# Needs perf, curl and python3. Every server is the benchmark's child and stops with it.
set -u
BIN=$1
LABEL=$2
OUT=$(mktemp -d)
"$BIN" bench throughput --clients 64 --seconds 20 ${EXTRA:-} > "$OUT/bench" 2>&1 &
BENCH=$!
for _ in $(seq 1 100); do
    PIDS=$(pgrep -P $BENCH -f "understudy server" | tr '\n' ',' | sed 's/,$//')
    [ "$(echo "$PIDS" | tr ',' '\n' | grep -c .)" = 3 ] && break
    sleep 0.2
done
sleep 7
ADDRS=$(for p in $(echo "$PIDS" | tr ',' ' '); do
    tr '\0' ' ' < /proc/$p/cmdline | sed -E 's/.*--listen ([^ ]+).*/\1/'; echo
done)
commit() {
    for a in $ADDRS; do curl -s --max-time 1 "$a/status"; echo; done | python3 -c '
import sys, json
best = 0
for line in sys.stdin:
    line = line.strip()
    if line:
        try:
            best = max(best, json.loads(line)["commit_index"])
        except Exception:
            pass
print(best)'
}
C0=$(commit)
perf stat -e raw_syscalls:sys_enter,task-clock,context-switches -p "$PIDS" -- sleep 10 > "$OUT/perf" 2>&1
C1=$(commit)
wait $BENCH
field() { grep "$1" "$OUT/perf" | awk '{gsub(",","",$1); print $1}'; }
python3 -c "
w = $C1 - $C0
print(f'$LABEL: writes={w} cpu_ms_per_write={$(field task-clock)/w:.4f} '
      f'syscalls_per_write={$(field raw_syscalls)/w:.2f} ctxsw_per_write={$(field context-switches)/w:.2f}')"
echo "$LABEL: $(grep -E 'ops/s' "$OUT/bench" | head -1)"
rm -rf "$OUT"
