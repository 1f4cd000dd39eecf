#!/usr/bin/env bash
# The retry budget when an agent endpoint restarts under load: HOSTS operations in
# flight on one simulated agent endpoint (deploys of 5 minutes, so every one still
# runs), the agent killed with SIGKILL and started again on its address, then the
# controller's metrics once the rollout ends. In release mode, through the real
# binaries.
#
#   scripts/endpoint-restart.sh [HOSTS]      (default 100000)
#
# ROLLOUT_BIN=path runs that binary instead of building this checkout.
set -euo pipefail
hosts=${1:-100000}
cd "$(dirname "$0")/.."
# shellcheck source=scripts/release-bin.sh
. scripts/release-bin.sh
listening() { until grep -q "listening on" "$1" 2>/dev/null; do sleep 0.05; done; grep -m1 "listening on" "$1" | sed 's/listening on //'; }

"$bin" fleet generate --hosts "$hosts" --agent 127.0.0.1:1 --seed 1 -o sim.yaml 2>/dev/null
"$bin" agent --simulate sim.yaml --listen 127.0.0.1:0 --latency-ms 300000 > agent.out 2> agent.log &
agent_pid=$!
agent=$(listening agent.out)
"$bin" fleet generate --hosts "$hosts" --agent "$agent" --seed 1 -o fleet.yaml 2>/dev/null
"$bin" serve --listen 127.0.0.1:0 --data data --fleet fleet.yaml --max-in-flight "$hosts" \
    --metrics-listen 127.0.0.1:0 > serve.out 2> serve.log &
server=http://$(listening serve.out)
until grep -q "metrics on" serve.log; do sleep 0.05; done
metrics=$(grep -m1 -o 'metrics on http://[0-9.:]*' serve.log | sed 's/metrics on //')
metric() { curl -s "$metrics/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
cat > plan.yaml <<PLAN
name: endpoint-restart
kind: fix
selector:
  region: [apac, emea, amer]
version: 15.20.8207.12
waves: [100%]
max_parallel: 100%
bake: 0s
PLAN
"$bin" submit plan.yaml --server "$server" > /dev/null
until [ "$(metric rollout_agent_operations_awaited)" = "$hosts" ]; do sleep 0.2; done
kill -9 "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
restarted=$(date +%s.%N)
"$bin" agent --simulate sim.yaml --listen "$agent" --latency-ms 1000 > agent2.out 2> agent2.log &
until "$bin" status endpoint-restart --server "$server" --output json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit(0 if r["hosts_in_flight"] == 0 and r["state"] != "running" else 1)'; do
    sleep 0.2
done
ended=$(date +%s.%N)
state=$("$bin" status endpoint-restart --server "$server" --output json | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["state"], r["hosts_succeeded"])')
echo "$hosts operations in flight on one agent endpoint, the agent killed and started again:"
echo "  rollout: $state (succeeded hosts), $(python3 -c "print(round($ended - $restarted, 1))") s after the restart"
for m in first_attempts_total retries_total retry_budget_exhausted_total operations_reasked_total result_polls_total breaker_opened_total; do
    echo "  rollout_agent_$m $(metric rollout_agent_$m)"
done
