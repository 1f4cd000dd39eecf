# Sourced by the benchmark scripts: real host agents, one process for them all.
#
#   start_agents WORK BIN HOST...   writes WORK/agents/HOST.yaml for each host (state
#                                   and commands under WORK/hosts/HOST: deploy.sh and
#                                   health.sh of WORK) and starts one `rollout agent`
#                                   serving them all; sets $agents_addr to its address
start_agents() {
  local work=$1 bin=$2 h d
  shift 2
  local configs=()
  mkdir -p "$work/agents"
  for h in "$@"; do
    d=$work/hosts/$h
    mkdir -p "$d"
    cat > "$work/agents/$h.yaml" <<YAML
host_id: $h
listen: 127.0.0.1:0
state_file: $d/state.json
commands:
  deploy: {argv: [sh, $work/deploy.sh, $d, "{version}"], timeout: 30s}
  health: {argv: [sh, $work/health.sh, $d], timeout: 30s}
YAML
    configs+=(--config "$work/agents/$h.yaml")
  done
  # Each host with its own config, state and commands.
  "$bin" agent "${configs[@]}" --listen 127.0.0.1:0 > "$work/agents/all.out" 2> "$work/agents/all.log" &
  until grep -q listening "$work/agents/all.out" 2>/dev/null; do sleep 0.05; done
  agents_addr=$(sed 's/listening on //' "$work/agents/all.out")
}
