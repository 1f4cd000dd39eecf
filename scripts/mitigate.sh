#!/usr/bin/env bash
# Time to mitigate: a fix plan over a simulated fleet whose deploys take time, end to
# end through a real controller, a real simulator and the real CLI, in release mode.
#
#   scripts/mitigate.sh HOSTS DEPLOY_MS WAVES MAX_PARALLEL [MAX_IN_FLIGHT]
#   scripts/mitigate.sh 20000 5000 1,10,50,100 10000 4096
#
# ROLLOUT_BIN=path runs that binary instead of building this checkout (to compare a
# build of an earlier commit with this one).
#
# Prints the plan's floor (the sum over its waves of ceil(new hosts / max_parallel)
# x the deploy time; bakes are 0s), the controller's time from submission to
# success, their ratio, the peak of hosts in flight that `rollout status` showed
# (intents out without a result, polled every 200 ms), and the controller's peak RSS
# (VmHWM) and CPU seconds.
set -euo pipefail
hosts=${1:?hosts}; deploy_ms=${2:?deploy ms}; waves=${3:?waves like 1,10,50,100}
max_parallel=${4:?max_parallel}; max_in_flight=${5:-4096}
cd "$(dirname "$0")/.."
# shellcheck source=scripts/release-bin.sh
. scripts/release-bin.sh

"$bin" fleet generate --hosts "$hosts" --agent 127.0.0.1:0 --seed 1 -o sim.yaml 2>/dev/null
"$bin" agent --simulate sim.yaml --listen 127.0.0.1:0 --latency-ms "$deploy_ms" > agent.out 2> agent.log &
until grep -q listening agent.out; do sleep 0.05; done
agent=$(sed 's/listening on //' agent.out)
"$bin" fleet generate --hosts "$hosts" --agent "$agent" --seed 1 -o fleet.yaml 2>/dev/null
"$bin" serve --listen 127.0.0.1:0 --data data --fleet fleet.yaml --max-in-flight "$max_in_flight" > serve.out 2> serve.log &
controller=$!
until grep -q listening serve.out; do sleep 0.05; done
server=http://$(sed 's/listening on //' serve.out)

wave_list=$(echo "$waves" | sed 's/\([0-9.]*\)/\1%/g; s/,/, /g')
cat > plan.yaml <<PLAN
name: mitigate
kind: fix
selector:
  region: [apac, emea, amer]
version: 15.20.8207.12
waves: [$wave_list]
max_parallel: $max_parallel
bake: 0s
PLAN
"$bin" submit plan.yaml --server "$server" > /dev/null
peak=0
while true; do
    status=$("$bin" status mitigate --server "$server" --output json)
    read -r state in_flight < <(echo "$status" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(r["state"], r["hosts_in_flight"])')
    [ "$in_flight" -gt "$peak" ] && peak=$in_flight
    case "$state" in SUCCEEDED|FAILED|HALTED|ABORTED|COMPLETED_WITH_FAILURES|succeeded|failed|halted|aborted|completed_with_failures) break ;; esac
    sleep 0.2
done
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$controller/status")
ticks=$(getconf CLK_TCK)
cpu=$(awk -v t="$ticks" '{printf "%.1f", ($14 + $15) / t}' "/proc/$controller/stat")
echo "$status" | python3 -c '
import json, math, sys
r = json.load(sys.stdin)
hosts, deploy_ms, waves, mp, mif, peak, rss, cpu = sys.argv[1:9]
hosts, deploy_ms, mp, mif, peak, rss = int(hosts), int(deploy_ms), int(mp), int(mif), int(peak), int(rss)
floor_ms, before = 0, 0
for w in waves.split(","):
    target = math.ceil(float(w) / 100 * hosts)
    floor_ms += math.ceil((target - before) / mp) * deploy_ms
    before = target
took = r["finished_at_unix_ms"] - r["created_at_unix_ms"]
print("%d hosts, %d ms deploys, waves [%s], max_parallel %d, --max-in-flight %d: %s" % (hosts, deploy_ms, waves, mp, mif, r["state"]))
if r["finished_at_unix_ms"] == 0:
    print("  it stopped: %s (failures: %s)" % (r.get("halt_reason"), [(g["reason"], g["hosts"]) for g in r.get("failures", [])][:3]))
    sys.exit(1)
if floor_ms > 0:
    print("  floor %.1f s, took %.1f s: %.2fx the floor" % (floor_ms / 1000, took / 1000, took / floor_ms))
else:
    print("  took %d ms (deploys answer at once): %.0f hosts/s" % (took, hosts / max(took, 1) * 1000))
print("  peak in flight (status) %d; controller peak RSS %.0f MiB (%.2f KiB per host); CPU %s s" % (peak, rss / 1024, rss / hosts, cpu))
if r.get("limits"): print("  " + r["limits"])
' "$hosts" "$deploy_ms" "$waves" "$max_parallel" "$max_in_flight" "$peak" "$rss_kib" "$cpu"
