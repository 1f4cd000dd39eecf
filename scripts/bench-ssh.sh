#!/usr/bin/env bash
# Reaching hosts over SSH, in one run on the same sshd hosts and the same per-host
# commands: a health check, the deploy, the health check again.
#
# The hosts: N hosts, each with its own loopback port (so its own address, and its own
# connections for every tool) and its own directory; real OpenSSH servers (Debian's
# openssh-server, /usr/sbin/sshd), 16 ports each, host keys and a client key made
# here, known_hosts written here and checked strictly by every tool. A real host's sshd
# sees one tool's connection at a time; here 16 hosts share one sshd, so its
# MaxStartups is 64:30:128 rather than 10:30:100 (which refuses handshakes at random
# past 10 at once, for every tool alike). The commands:
# health.sh (the host's directory exists and its version file, if any, reads back)
# and deploy.sh (writes the version), the same two scripts for every tool.
#
#   xargs    the floor, no orchestration: `xargs -P PARALLEL` running one OpenSSH
#            `ssh` per host that runs the three commands over its one connection
#   rollout  `rollout serve --ssh`: a fix to every host in one wave (100%),
#            max_parallel PARALLEL: the baseline probe (health), the deploy, the
#            health gate, each a channel on the host's one connection; then the
#            same in four waves (1%/10%/50%/100%) as plans usually go
#   agents   the same plans through N real host agents over gRPC (`rollout agent
#            --config` per host, all served by one process): what SSH costs
#   ansible  ansible-core (in a venv made here, from PyPI) over SSH: forks PARALLEL,
#            its default ControlPersist (60s), gather_facts off, three `command`
#            tasks per host; the targets' Python is /usr/bin/python3
#
# Usage: scripts/bench-ssh.sh [N=200] [PARALLEL=50]
#        ANSIBLE=skip scripts/bench-ssh.sh 200 50   # without Ansible
#        KEEP=1 scripts/bench-ssh.sh 32 8             # keeps the work directory (logs)
#        HELD=20 ANSIBLE=skip scripts/bench-ssh.sh 200 200
#            every deploy takes 20 s; halfway through the rollouts' deploys, what the
#            operations in flight cost: the controller's RSS over its RSS before the
#            submission, and the processes of the hosts' user (sshd sessions,
#            the host program's runner, the command), per operation in flight
# Each line printed: tool, N, seconds, hosts/s, SSH connections opened per host
# (sshd's "Accepted publickey" lines during that tool's run, over N).
set -euo pipefail
N=${1:-200}
P=${2:-50}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin=$root/target/release/rollout
[ -x /usr/sbin/sshd ] || { echo "bench-ssh: no /usr/sbin/sshd: install Debian's openssh-server" >&2; exit 1; }
work=$(mktemp -d)
made_user=
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  for p in "$work"/sshd-*/sshd.pid; do [ -e "$p" ] && kill "$(cat "$p")" 2>/dev/null; done
  pkill -f "$work/" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
  if [ -n "$made_user" ]; then userdel --remove "$made_user" 2>/dev/null || true; fi
}
trap cleanup EXIT
# The hosts' user: a login shell of /bin/sh and nothing in its rc files, as on a
# server. (Debian's bash reads ~/.bashrc for every SSH session, and a developer's
# ~/.bashrc can cost more than the session: here root's runs `pyenv init`, about
# 150 ms of processes per session, which would be measured for every tool.) As root,
# a user made for the run (and removed after it); otherwise the caller, said so.
user=$(id -un)
if [ "$(id -u)" = 0 ]; then
  if ! id rollout-bench > /dev/null 2>&1; then
    # "*": no password, and not locked (sshd without PAM refuses a locked account).
    useradd --create-home --shell /bin/sh --password "*" rollout-bench
    made_user=rollout-bench
  fi
  user=rollout-bench
else
  echo "bench-ssh: not root: the sessions run as $user with its own login shell and rc files" >&2
fi
mkdir -p /run/sshd
now() { date +%s.%N; }
accepted() { cat "$work"/sshd-*/sshd.log 2>/dev/null | grep -c "Accepted publickey" || true; }
# report TOOL T0 T1 CONNECTIONS_BEFORE [NOTE]
report() {
  local after
  after=$(accepted)
  python3 -c "import sys; s=float(sys.argv[3])-float(sys.argv[2]); n=int(sys.argv[4]); print('%-14s N=%-5s %8.2f s %8.1f hosts/s %6.2f connections/host %s' % (sys.argv[1], n, s, n/s, (int(sys.argv[6])-int(sys.argv[5]))/n, sys.argv[7]))" \
    "$1" "$2" "$3" "$N" "$4" "$after" "${5:-}"
}

# --- the hosts ----------------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C bench -f "$work/id_ed25519"
: > "$work/known_hosts"
mapfile -t ports < <(python3 -c "
import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(('127.0.0.1', 0))
print('\n'.join(str(x.getsockname()[1]) for x in s))" "$N")
hosts=()
for i in $(seq 1 "$N"); do hosts+=("$(printf 'h%05d' "$i")"); mkdir -p "$work/hosts/${hosts[-1]}"; done
servers=$(( (N + 15) / 16 ))
for s in $(seq 0 $((servers - 1))); do
  d=$work/sshd-$s
  mkdir -p "$d"
  ssh-keygen -q -t ed25519 -N '' -f "$d/host_ed25519"
  cp "$work/id_ed25519.pub" "$d/authorized_keys"
  {
    # Host i is on server i % servers: neighbours in the list are on different servers.
    for i in $(seq "$s" "$servers" $((N - 1))); do
      echo "Port ${ports[$i]}"
      echo "[127.0.0.1]:${ports[$i]} $(cut -d' ' -f1,2 "$d/host_ed25519.pub")" >> "$work/known_hosts"
    done
    printf '%s\n' "ListenAddress 127.0.0.1" "HostKey $d/host_ed25519" "PidFile $d/sshd.pid" \
      "AuthorizedKeysFile $d/authorized_keys" "StrictModes no" "UsePAM no" \
      "PasswordAuthentication no" "KbdInteractiveAuthentication no" "LogLevel INFO" \
      "MaxStartups 64:30:128"
  } > "$d/sshd_config"
  /usr/sbin/sshd -f "$d/sshd_config" -E "$d/sshd.log"
done
for p in "${ports[@]}"; do
  until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$p" 2>/dev/null; do sleep 0.05; done
done
cat > "$work/deploy.sh" <<SH
${HELD:+sleep $HELD}
echo "\$2" > "\$1/version"
SH
cat > "$work/health.sh" <<'SH'
test -d "$1" && { [ ! -e "$1/version" ] || cat "$1/version" > /dev/null; }
SH
# The hosts' user owns their directories and reads the scripts and keys' public halves.
chmod 755 "$work"
mkdir -p "$work/state"
chown -R "$user" "$work/hosts" "$work/state"
# (temporary paths hold no spaces: the options go into the shell words as they are)
ssh_opts="-i $work/id_ed25519 -o UserKnownHostsFile=$work/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes -o ControlMaster=no"
check() {
  local wrong=0 h
  for h in "${hosts[@]}"; do [ "$(cat "$work/hosts/$h/version" 2>/dev/null)" = "$2" ] || wrong=$((wrong + 1)); done
  [ "$wrong" = 0 ] || { echo "$1: $wrong hosts not on $2" >&2; exit 1; }
}

# --- xargs: the floor ---------------------------------------------------------------
before=$(accepted)
t0=$(now)
for i in "${!hosts[@]}"; do echo "${hosts[$i]} ${ports[$i]}"; done |
  xargs -P "$P" -L 1 sh -c 'h=$0/hosts/$1; ssh '"$ssh_opts"' -p "$2" '"$user"'@127.0.0.1 "sh $0/health.sh $h && sh $0/deploy.sh $h v1 && sh $0/health.sh $h"' "$work"
t1=$(now)
report xargs "$t0" "$t1" "$before" "(the floor)"
check xargs v1

# --- rollout: SSH hosts, and the same work through agents ---------------------------
{
  echo "customers: [{id: bench, timezone: UTC, hours: '09:00-17:00', workdays: [mon, tue, wed, thu, fri]}]"
  echo "hosts:"
  for i in "${!hosts[@]}"; do
    echo "  - {id: ${hosts[$i]}, address: 'ssh://$user@127.0.0.1:${ports[$i]}', labels: {reach: ssh}, customers: [bench], version: v1}"
  done
} > "$work/fleet.yaml"
# shellcheck source=scripts/agents.sh
. "$root/scripts/agents.sh"
start_agents "$work" "$bin" "${hosts[@]/#h/a}"
addr=$agents_addr
for h in "${hosts[@]}"; do
  echo "  - {id: a${h#h}, address: '$addr', labels: {reach: agent}, customers: [bench], version: v1}" >> "$work/fleet.yaml"
done
cat > "$work/ssh.yaml" <<YAML
identity_file: $work/id_ed25519
known_hosts: $work/known_hosts
connect_timeout: 10s
max_connections: 1000
state_dir: $work/state/{host}
commands:
  deploy: {argv: [sh, $work/deploy.sh, "$work/hosts/{host}", "{version}"], timeout: 30s}
  health: {argv: [sh, $work/health.sh, "$work/hosts/{host}"], timeout: 30s}
YAML
# held LABEL SERVER ROLLOUT PID IDLE_KIB: what the operations in flight cost now.
held() {
  local in_flight rss procs
  in_flight=$("$bin" status "$3" --server "$2" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["hosts_in_flight"])')
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$4/status")
  procs=$(ps -u "$user" --no-headers | wc -l)
  python3 -c "import sys; f, rss, idle, p = map(int, sys.argv[2:6]); print('%-14s %d in flight: controller RSS +%.1f MiB (%.1f KiB per operation), %d processes of the hosts (%.1f per operation)' % (sys.argv[1], f, (rss - idle) / 1024, (rss - idle) / max(f, 1), p, p / max(f, 1)))" \
    "$1" "$in_flight" "$rss" "$5" "$procs"
}
# rollout_run LABEL REACH VERSION WAVES: one plan through a controller of its own
# (started before the clock, so each run opens its own connections).
run=0
rollout_run() {
  run=$((run + 1))
  local c=$work/controller-$run
  mkdir -p "$c"
  "$bin" serve --listen 127.0.0.1:0 --data "$c/data" --fleet "$work/fleet.yaml" --ssh "$work/ssh.yaml" > "$c/out" 2> "$c/log" &
  local pid=$!
  until grep -q listening "$c/out" 2>/dev/null; do sleep 0.05; done
  local server=http://$(head -1 "$c/out" | sed 's/listening on //')
  until "$bin" status --server "$server" > /dev/null 2>&1; do sleep 0.05; done
  printf '%s\n' "name: bench-$run" "kind: fix" "selector: {reach: $2}" "version: $3" "waves: $4" \
    "max_parallel: $P" "bake: 1ms" "on_failure: {max_failed: 0, action: halt}" > "$c/plan.yaml"
  local before t0 t1 state
  before=$(accepted)
  local idle_kib
  idle_kib=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  t0=$(now)
  "$bin" submit "$c/plan.yaml" --server "$server" > /dev/null
  if [ -n "${HELD:-}" ]; then
    sleep "$(python3 -c "print(${HELD} / 2)")"
    held "$1" "$server" "bench-$run" "$pid" "$idle_kib"
  fi
  "$bin" watch "bench-$run" --server "$server" > /dev/null
  t1=$(now)
  state=$("$bin" status "bench-$run" --server "$server" --output json | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["state"], r["hosts_succeeded"])')
  report "$1" "$t0" "$t1" "$before" "($state, $4)"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  [ "$state" = "succeeded $N" ] || { echo "$1: $state" >&2; tail -5 "$c/log" >&2; exit 1; }
}
rollout_run rollout-ssh ssh v2 "[100%]"
check rollout-ssh v2
rollout_run rollout-agents agent v2 "[100%]"
rollout_run rollout-ssh ssh v3 "[1%, 10%, 50%, 100%]"
check rollout-ssh v3
rollout_run rollout-agents agent v3 "[1%, 10%, 50%, 100%]"

# --- ansible over SSH ---------------------------------------------------------------
if [ "${ANSIBLE:-}" = skip ]; then exit 0; fi
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check ansible-core==2.17.7
{
  echo "[fleet]"
  for i in "${!hosts[@]}"; do echo "${hosts[$i]} ansible_host=127.0.0.1 ansible_port=${ports[$i]} ansible_user=$user"; done
  echo "[fleet:vars]"
  echo "ansible_python_interpreter=/usr/bin/python3"
  echo "ansible_ssh_private_key_file=$work/id_ed25519"
  echo "ansible_ssh_common_args='-o UserKnownHostsFile=$work/known_hosts -o StrictHostKeyChecking=yes'"
} > "$work/inventory.ini"
cat > "$work/play.yml" <<YAML
- hosts: fleet
  gather_facts: false
  tasks:
    - name: health
      command: sh $work/health.sh $work/hosts/{{ inventory_hostname }}
      changed_when: false
    - name: deploy
      command: sh $work/deploy.sh $work/hosts/{{ inventory_hostname }} v4
    - name: health again
      command: sh $work/health.sh $work/hosts/{{ inventory_hostname }}
      changed_when: false
YAML
before=$(accepted)
t0=$(now)
ANSIBLE_RETRY_FILES_ENABLED=False ANSIBLE_SSH_CONTROL_PATH_DIR=$work/cp ANSIBLE_LOCAL_TEMP=$work/ansible-tmp \
  "$work/venv/bin/ansible-playbook" -i "$work/inventory.ini" -f "$P" "$work/play.yml" > "$work/ansible.log" 2>&1 || {
  tail -20 "$work/ansible.log"
  exit 1
}
t1=$(now)
report ansible "$t0" "$t1" "$before" "(ansible-core 2.17.7, forks $P)"
check ansible v4
