#!/usr/bin/env bash
# Two builds side by side: ROUNDS interleaved runs of scripts/cpu-per-write.sh for each,
# then the median and range of every figure and of the paired ratio (after / before, each
# pair run back to back). This machine's speed drifts within minutes; pairs cancel most of
# it, and the counts per write are steadier than the times.
#
#   scripts/compare-cpu-per-write.sh /tmp/before/understudy target/release/understudy 9
#
# Needs what cpu-per-write.sh needs. Run nothing else meanwhile.
set -u
BEFORE=$1
AFTER=$2
ROUNDS=${3:-7}
HERE=$(dirname "$0")
LINES=$(mktemp)
for _ in $(seq 1 "$ROUNDS"); do
    "$HERE/cpu-per-write.sh" "$BEFORE" before
    "$HERE/cpu-per-write.sh" "$AFTER" after
done | tee "$LINES"
python3 - "$LINES" <<'PY'
import re, statistics, sys
runs = {"before": [], "after": []}
figures = {}
for line in open(sys.argv[1]):
    label = line.split(":", 1)[0]
    if label not in runs:
        continue
    m = re.search(r"cpu_ms_per_write=([\d.]+) syscalls_per_write=([\d.]+) ctxsw_per_write=([\d.]+)", line)
    if m:
        figures = dict(zip(("CPU ms per write", "syscalls per write", "context switches per write"),
                           map(float, m.groups())))
        continue
    m = re.search(r"([\d.]+) ops/s", line)
    if m:
        figures["ops/s"] = float(m.group(1))
        runs[label].append(figures)
        figures = {}
pairs = min(len(runs["before"]), len(runs["after"]))
print(f"\n{pairs} pairs: median (range)")
for name in ("CPU ms per write", "syscalls per write", "context switches per write", "ops/s"):
    b = [r[name] for r in runs["before"][:pairs]]
    a = [r[name] for r in runs["after"][:pairs]]
    ratio = [y / x for x, y in zip(b, a)]
    show = lambda xs: f"{statistics.median(xs):.4g} ({min(xs):.4g}-{max(xs):.4g})"
    print(f"{name:28} before {show(b):28} after {show(a):28} after/before {show(ratio)}")
PY
rm -f "$LINES"
