#!/usr/bin/env bash
# A 10,000-host fix plan with zero bake and zero agent latency, end to end through a
# real controller, a real simulated fleet and the real CLI, in release mode.
# Prints the controller's own duration (submission to success) and the wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=$PWD/target/release/rollout
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"

"$bin" fleet generate --hosts 10000 --agent 127.0.0.1:0 --seed 1 -o sim.yaml 2>/dev/null
"$bin" agent --simulate sim.yaml --listen 127.0.0.1:0 > agent.out 2> agent.log &
until grep -q listening agent.out; do sleep 0.05; done
agent=$(sed 's/listening on //' agent.out)
"$bin" fleet generate --hosts 10000 --agent "$agent" --seed 1 -o fleet.yaml 2>/dev/null
"$bin" serve --listen 127.0.0.1:0 --data data --fleet fleet.yaml > serve.out 2> serve.log &
until grep -q listening serve.out; do sleep 0.05; done
server=http://$(sed 's/listening on //' serve.out)

cat > all.yaml <<'PLAN'
name: all-10k
kind: fix
selector:
  region: [apac, emea, amer]
version: 15.20.8207.12
waves: [1%, 10%, 50%, 100%]
max_parallel: 200
bake: 0s
PLAN
start=$(date +%s.%N)
"$bin" submit all.yaml --server "$server" > /dev/null
"$bin" watch all-10k --server "$server" > /dev/null
end=$(date +%s.%N)
"$bin" status all-10k --server "$server" --output json | python3 -c '
import json, sys
r = json.load(sys.stdin)
ms = r["finished_at_unix_ms"] - r["created_at_unix_ms"]
print("%s: %s, %d/%d hosts, %d ms from submission to success" % (r["name"], r["state"], r["hosts_succeeded"], r["hosts_selected"], ms))'
echo "wall time of submit + watch: $(python3 -c "print(round($end - $start, 2))") s"
