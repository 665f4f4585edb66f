#!/usr/bin/env bash
# The fleet bench, old binary against new, alternately in one run, so both
# see the same machine (shared hosts drift by more than most changes):
#
#   benches/fleet_old_vs_new.sh OLD_REV [WORKERS] [ROUNDS] [DURATION]
#
# builds OLD_REV (a git revision) and the working tree in release mode, then
# runs `edgeplane bench fleet` against each binary's coordinator in turn,
# ROUNDS times, and prints the medians of each side. The simulated fleet is
# always the new binary's (`--coordinator-bin` picks the coordinator), so
# that only the coordinator differs between the sides: the bench client is
# in the same binary, and a change to it would otherwise show up as one to
# the coordinator. Defaults: 10000 workers, 2 rounds, 60 s of keepalives.
set -euo pipefail
cd "$(dirname "$0")/.."
old_rev=${1:?usage: $0 OLD_REV [WORKERS] [ROUNDS] [DURATION]}
workers=${2:-10000}
rounds=${3:-2}
duration=${4:-60s}
out=${FLEET_BENCH_OUT:-target/fleet-old-vs-new}
mkdir -p "$out"

# FLEET_BENCH_OLD_BIN: an already built old binary (skips building OLD_REV).
old_bin=${FLEET_BENCH_OLD_BIN:-}
if [ -z "$old_bin" ]; then
  old_src="$out/src-$old_rev"
  [ -d "$old_src" ] || git worktree add --detach "$old_src" "$old_rev" >/dev/null
  ( cd "$old_src" && cargo build --release --bin edgeplane --target-dir "$PWD/../target-old" ) >&2
  old_bin="$out/target-old/release/edgeplane"
fi
cargo build --release --bin edgeplane >&2
new_bin=target/release/edgeplane

for r in $(seq 1 "$rounds"); do
  for side in old new; do
    bin=$old_bin; [ "$side" = new ] && bin=$new_bin
    echo "round $r: $side ($bin), $workers workers" >&2
    "$new_bin" bench fleet --coordinator-bin "$bin" --workers "$workers" --keepalive 1s --duration "$duration" \
      --json "$out/$side-$r.json" >"$out/$side-$r.txt" 2>&1 \
      || { echo "the $side bench failed; see $out/$side-$r.txt" >&2; exit 1; }
  done
done

python3 - "$out" "$rounds" "$old_rev" "$(git rev-parse --short HEAD)" <<'PY'
import json, statistics, sys
out, rounds, old_rev, new_rev = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(side):
    return [json.load(open(f"{out}/{side}-{r}.json")) for r in range(1, rounds + 1)]
def get(rep, path):
    for k in path.split("."):
        if rep is None:
            return None
        rep = rep.get(k) if isinstance(rep, dict) else None
    return rep
rows = [
    ("connected", "connected", "{:.0f}"),
    ("all connected after (s)", "connect_all_s", "{:.2f}"),
    ("Welcome p99 (ms)", "welcome.p99_ms", "{:.1f}"),
    ("coordinator cores, keepalives", "keepalive.target.cores", "{:.3f}"),
    ("coordinator RSS per worker (KiB)", "keepalive_per_worker_kib", "{:.1f}"),
    ("keepalive round trip p99 (ms)", "rtt.p99_ms", "{:.2f}"),
    ("kill detected p99 (ms)", "kill.latency.p99_ms", "{:.0f}"),
    ("silence: lag over the timeout p99 (ms)", "degraded.lag_over_timeout.p99_ms", "{:.0f}"),
    ("restart: fleet back after (s)", "restart.reconverge_s", "{:.2f}"),
    ("false degraded reports", "false_positives.reports", "{:.0f}"),
]
old, new = load("old"), load("new")
print(f"| median of {rounds} rounds | old `{old_rev}` | new `{new_rev}` | new / old |")
print("| --- | ---: | ---: | ---: |")
for label, path, fmt in rows:
    o = [v for v in (get(r, path) for r in old) if isinstance(v, (int, float))]
    n = [v for v in (get(r, path) for r in new) if isinstance(v, (int, float))]
    if not o or not n:
        print(f"| {label} | {'-' if not o else fmt.format(statistics.median(o))} | {'-' if not n else fmt.format(statistics.median(n))} | |")
        continue
    mo, mn = statistics.median(o), statistics.median(n)
    ratio = f"{mn / mo:.2f}x" if mo else ""
    print(f"| {label} | {fmt.format(mo)} | {fmt.format(mn)} | {ratio} |")
PY
