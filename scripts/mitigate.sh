#!/usr/bin/env bash
# Time to mitigate: a fix plan over a simulated fleet whose deploys take time, end to
# end through a real controller, a real simulator and the real CLI, in release mode.
#
#   scripts/mitigate.sh HOSTS DEPLOY WAVES MAX_PARALLEL [MAX_IN_FLIGHT]
#   scripts/mitigate.sh 20000 5000 1,10,50,100 10000 4096
#   scripts/mitigate.sh 1000000 60000 1,10,30,60,90,100 100% 1000000
#   scripts/mitigate.sh 100000 lognormal:6s,p99=30s 1,10,50,100 100% 100000
#   AGENT_TIMEOUT=30m scripts/mitigate.sh ...   # deploys that may take longer than 10m
#
# DEPLOY is the simulator's --latency-ms: milliseconds, or a log-normal distribution.
# MAX_PARALLEL is a number or a share of the selection (100%: each wave at once).
#
# ROLLOUT_BIN=path runs that binary instead of building this checkout (to compare a
# build of an earlier commit with this one).
#
# Prints the plan's floor (the sum over its waves of ceil(new hosts / max_parallel)
# x the deploy time; bakes are 0s; with log-normal deploys, the expected slowest
# deploy of each round instead: the quantile n/(n+1) of n draws), the controller's
# time from submission to success, their ratio, the peak of hosts in flight that
# `rollout status` showed (intents out without a result, polled every 200 ms), and the
# controller's peak RSS (VmHWM, per host and per host in flight) and CPU seconds.
set -euo pipefail
hosts=${1:?hosts}; deploy_ms=${2:?deploy: ms or lognormal:MEDIAN,p99=P99}; waves=${3:?waves like 1,10,50,100}
max_parallel=${4:?max_parallel}; max_in_flight=${5:-4096}
cd "$(dirname "$0")/.."
# shellcheck source=scripts/release-bin.sh
. scripts/release-bin.sh

"$bin" fleet generate --hosts "$hosts" --agent 127.0.0.1:0 --seed 1 -o sim.yaml 2>/dev/null
"$bin" agent --simulate sim.yaml --listen 127.0.0.1:0 --latency-ms "$deploy_ms" > agent.out 2> agent.log &
until grep -q listening agent.out; do sleep 0.05; done
agent=$(sed 's/listening on //' agent.out)
"$bin" fleet generate --hosts "$hosts" --agent "$agent" --seed 1 -o fleet.yaml 2>/dev/null
"$bin" serve --listen 127.0.0.1:0 --data data --fleet fleet.yaml --max-in-flight "$max_in_flight" \
    ${AGENT_TIMEOUT:+--agent-timeout "$AGENT_TIMEOUT"} > serve.out 2> serve.log &
controller=$!
until grep -q listening serve.out; do sleep 0.2; done
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
import json, math, re, statistics, sys
r = json.load(sys.stdin)
hosts, deploy, waves, mp, mif, peak, rss, cpu = sys.argv[1:9]
hosts, mif, peak, rss = int(hosts), int(mif), int(peak), int(rss)
mp = math.ceil(float(mp[:-1]) / 100 * hosts) if mp.endswith("%") else int(mp)
def seconds(t):
    n, unit = re.fullmatch(r"([0-9.]+)(ms|s|m|h)", t).groups()
    return float(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
if deploy.startswith("lognormal:"):
    median, p99 = deploy[len("lognormal:"):].split(",p99=")
    mu, sigma = math.log(seconds(median)), math.log(seconds(p99) / seconds(median)) / 2.3263478740408408
    # The expected slowest of n draws, near enough: the quantile n/(n+1).
    slowest = lambda n: math.exp(mu + sigma * statistics.NormalDist().inv_cdf(n / (n + 1))) * 1000
    kind = "expected floor"
else:
    slowest = lambda n: float(deploy)
    kind = "floor"
floor_ms, before = 0, 0
for w in waves.split(","):
    target = math.ceil(float(w) / 100 * hosts)
    new = target - before
    rounds, last = divmod(new, mp)
    floor_ms += rounds * slowest(mp) + (slowest(last) if last else 0)
    before = target
took = r["finished_at_unix_ms"] - r["created_at_unix_ms"]
print("%d hosts, deploys %s, waves [%s], max_parallel %d, --max-in-flight %d: %s" % (hosts, deploy if deploy.startswith("lognormal:") else deploy + " ms", waves, mp, mif, r["state"]))
if r["finished_at_unix_ms"] == 0:
    print("  it stopped: %s (failures: %s)" % (r.get("halt_reason"), [(g["reason"], g["hosts"]) for g in r.get("failures", [])][:3]))
    sys.exit(1)
if floor_ms > 0:
    print("  %s %.1f s, took %.1f s: %.2fx the floor" % (kind, floor_ms / 1000, took / 1000, took / floor_ms))
else:
    print("  took %d ms (deploys answer at once): %.0f hosts/s" % (took, hosts / max(took, 1) * 1000))
print("  peak in flight (status) %d; controller peak RSS %.0f MiB (%.2f KiB per host, %.2f KiB per host in flight); CPU %s s" % (peak, rss / 1024, rss / hosts, rss / max(peak, 1), cpu))
if r.get("limits"): print("  " + r["limits"])
' "$hosts" "$deploy_ms" "$waves" "$max_parallel" "$max_in_flight" "$peak" "$rss_kib" "$cpu"
