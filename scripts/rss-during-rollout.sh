#!/usr/bin/env bash
# The controller's memory through one N-host rollout: a simulated fleet, a controller
# loading the fleet file, then a fix over every host (waves 1/10/50/100%, zero bake),
# with VmRSS and VmHWM sampled every 250 ms from /proc. Prints the moments of
# submission and end, the resident set once loaded and the peak, in MiB.
#
# Usage: scripts/rss-during-rollout.sh [N=1000000]   (1M: about 90 s, 2 GB of RAM)
set -euo pipefail
N=${1:-1000000}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin=$root/target/release/rollout
w=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  pkill -f "$w/" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$w"
}
trap cleanup EXIT
"$bin" fleet generate --hosts "$N" --agent 127.0.0.1:1 -o "$w/sim.yaml" > /dev/null
"$bin" agent --simulate "$w/sim.yaml" --listen 127.0.0.1:0 > "$w/sim.out" 2> "$w/sim.log" &
until grep -q listening "$w/sim.out" 2>/dev/null; do sleep 0.1; done
addr=$(sed 's/listening on //' "$w/sim.out" | head -1)
"$bin" fleet generate --hosts "$N" --agent "$addr" -o "$w/fleet.yaml" > /dev/null
"$bin" serve --listen 127.0.0.1:0 --data "$w/data" --fleet "$w/fleet.yaml" > "$w/serve.out" 2> "$w/serve.log" &
ctl=$!
until grep -q listening "$w/serve.out" 2>/dev/null; do sleep 0.2; done
server=http://$(head -1 "$w/serve.out" | sed 's/listening on //')
until "$bin" status --server "$server" > /dev/null 2>&1; do sleep 0.2; done
mib() { awk -v k="$1" '$1 == k":" {print int($2 / 1024)}' "/proc/$ctl/status"; }
echo "loaded: resident $(mib VmRSS) MiB, high-water mark $(mib VmHWM) MiB"
( while kill -0 "$ctl" 2>/dev/null; do echo "$(date +%s.%N) $(mib VmRSS) $(mib VmHWM)"; sleep 0.25; done ) > "$w/rss.txt" 2>/dev/null &
printf 'name: all\nkind: fix\nselector:\n  region: [apac, emea, amer]\nversion: 15.20.8207.12\nwaves: [1%%, 10%%, 50%%, 100%%]\nmax_parallel: 1000\nbake: 0s\n' > "$w/plan.yaml"
t0=$(date +%s.%N)
"$bin" submit "$w/plan.yaml" --server "$server" > /dev/null
t1=$(date +%s.%N)
"$bin" watch all --server "$server" > /dev/null || true
t2=$(date +%s.%N)
echo "peak during the rollout: $(mib VmHWM) MiB"
python3 - "$t0" "$t1" "$t2" "$w/rss.txt" <<'PY'
import sys
t0, t1, t2 = map(float, sys.argv[1:4])
print(f"submitted after {t1 - t0:.1f} s, done after {t2 - t0:.1f} s; resident set (MiB) every 2 s:")
rows = [l.split() for l in open(sys.argv[4]) if len(l.split()) == 3]
last = -2.0
for t, rss, hwm in rows:
    t = float(t) - t0
    if t - last >= 2.0:
        print(f"  {t:5.1f} s  {rss:>6}  (high-water {hwm})")
        last = t
PY
