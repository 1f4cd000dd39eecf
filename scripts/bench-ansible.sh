#!/usr/bin/env bash
# Peer comparison on the same per-host work: a health check before the change (the
# baseline: a host already unhealthy is not blamed on it), write the new version to a
# per-host file, then the health check again, which reads it back; over N hosts in
# waves 1%/10%/50%/100% with no failure tolerated and PARALLEL at a time. Every tool
# runs the same two scripts (health.sh, deploy.sh) per host, so each starts the same
# processes per host (sh; sh; sh + cat) and the difference is orchestration (xargs
# adds one `sh -c` per host to chain them; Ansible its own module processes).
#
#   ansible   ansible-core in a local venv (installed here from PyPI), local connection,
#             `serial: [1%, 10%, 50%, 100%]`, `max_fail_percentage: 0`, forks=PARALLEL:
#             three tasks per host (health, deploy, health)
#   rollout   a controller and N real host agents (`rollout agent --config` per host,
#             all served by one process), whose deploy command is deploy.sh and whose
#             health command is health.sh (the baseline probe before each wave, the
#             health gate after its bake of 1ms)
#   xargs     the same three commands per host by `xargs -P PARALLEL`, all hosts at
#             once: no orchestration at all, the floor
#
# Usage: scripts/bench-ansible.sh [N=200] [PARALLEL=50]
#        ANSIBLE=skip scripts/bench-ansible.sh 2000 50   # only xargs and rollout
# Each line printed: tool, N, seconds, hosts/s. Needs python3 (venv) and network access
# to PyPI for ansible-core.
set -euo pipefail
N=${1:-200}
P=${2:-50}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin=$root/target/release/rollout
work=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  pkill -f "$work/" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
hosts=$(seq -f "h%05g" 1 "$N")
for h in $hosts; do mkdir -p "$work/hosts/$h"; done
now() { date +%s.%N; }
report() { python3 -c "import sys; s=float(sys.argv[3])-float(sys.argv[2]); print('%-8s N=%-6s %8.2f s %10.1f hosts/s' % (sys.argv[1], sys.argv[4], s, int(sys.argv[4])/s))" "$@"; }

cat > "$work/deploy.sh" <<'SH'
echo "$2" > "$1/version"
SH
cat > "$work/health.sh" <<'SH'
# Reads the file back: it must hold the version the agent says it runs (none known
# before the first deploy: the baseline is one shell, for every tool alike).
[ -z "$ROLLOUT_VERSION" ] || test "$(cat "$1/version" 2>/dev/null)" = "$ROLLOUT_VERSION"
SH

# --- xargs: the floor ------------------------------------------------------------
t0=$(now)
printf '%s\n' $hosts | xargs -P "$P" -I{} sh -c 'ROLLOUT_VERSION= sh "$0/health.sh" "$0/hosts/{}" && sh "$0/deploy.sh" "$0/hosts/{}" v1 && ROLLOUT_VERSION=v1 sh "$0/health.sh" "$0/hosts/{}"' "$work"
t1=$(now)
report xargs "$t0" "$t1" "$N"

# --- rollout with real agents ------------------------------------------------------
echo "customers: [{id: bench, timezone: UTC, hours: '09:00-17:00', workdays: [mon, tue, wed, thu, fri]}]" > "$work/fleet.yaml"
echo "hosts:" >> "$work/fleet.yaml"
# shellcheck source=scripts/agents.sh
. "$root/scripts/agents.sh"
# shellcheck disable=SC2086
start_agents "$work" "$bin" $hosts
addr=$agents_addr
for h in $hosts; do
  echo "  - {id: $h, address: '$addr', labels: {service: bench}, customers: [bench], version: v1}" >> "$work/fleet.yaml"
done
"$bin" serve --listen 127.0.0.1:0 --data "$work/data" --fleet "$work/fleet.yaml" > "$work/serve.out" 2> "$work/serve.log" &
until grep -q listening "$work/serve.out" 2>/dev/null; do sleep 0.05; done
server=http://$(head -1 "$work/serve.out" | sed 's/listening on //')
cat > "$work/plan.yaml" <<PLAN
name: bench
kind: fix
selector: {service: bench}
version: v2
waves: [1%, 10%, 50%, 100%]
max_parallel: $P
bake: 1ms
on_failure: {max_failed: 0, action: halt}
PLAN
until "$bin" status --server "$server" > /dev/null 2>&1; do sleep 0.05; done
t0=$(now)
"$bin" submit "$work/plan.yaml" --server "$server" > /dev/null
"$bin" watch bench --server "$server" > /dev/null
t1=$(now)
state=$("$bin" status bench --server "$server" --output json | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["state"], r["hosts_succeeded"])')
report rollout "$t0" "$t1" "$N"
echo "         ($state)"
wrong=0
for h in $hosts; do [ "$(cat "$work/hosts/$h/version")" = v2 ] || wrong=$((wrong + 1)); done
echo "         hosts not on v2 afterwards: $wrong"

# --- ansible -------------------------------------------------------------------------
if [ "${ANSIBLE:-}" = skip ]; then exit 0; fi
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet ansible-core==2.17.7
{
  echo "[fleet]"
  for h in $hosts; do echo "$h ansible_connection=local ansible_python_interpreter=$work/venv/bin/python"; done
} > "$work/inventory.ini"
cat > "$work/play.yml" <<YAML
- hosts: fleet
  gather_facts: false
  serial: ["1%", "10%", "50%", "100%"]
  max_fail_percentage: 0
  tasks:
    - name: baseline
      command: sh $work/health.sh $work/hosts/{{ inventory_hostname }}
      environment: {ROLLOUT_VERSION: ""}
      changed_when: false
    - name: deploy
      command: sh $work/deploy.sh $work/hosts/{{ inventory_hostname }} v3
    - name: health
      command: sh $work/health.sh $work/hosts/{{ inventory_hostname }}
      environment: {ROLLOUT_VERSION: v3}
      changed_when: false
YAML
t0=$(now)
ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_RETRY_FILES_ENABLED=False \
  "$work/venv/bin/ansible-playbook" -i "$work/inventory.ini" -f "$P" "$work/play.yml" > "$work/ansible.log" 2>&1 || {
  tail -20 "$work/ansible.log"
  exit 1
}
t1=$(now)
report ansible "$t0" "$t1" "$N"
