# Sourced by the benchmark scripts: sets `bin` to the rollout binary to measure
# (ROLLOUT_BIN, or this checkout built in release mode) and `work` to a directory
# of its own, removed on exit with every process the script started.
# shellcheck shell=bash
# shellcheck disable=SC2034
if [ -n "${ROLLOUT_BIN:-}" ]; then
    bin=$(realpath "$ROLLOUT_BIN")
else
    cargo build --release --quiet
    bin=$PWD/target/release/rollout  # used by the script that sources this
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
cd "$work" || exit 1
