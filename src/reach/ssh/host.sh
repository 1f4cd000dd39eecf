# rollout's host program: what the controller runs on a host it reaches over SSH,
# with nothing installed there. POSIX sh (dash, busybox ash), and only mkdir, mv,
# cat, kill, setsid, sleep, tail, find, rm, date: no bash, no Python.
#
# The controller sends this text as the exec command's program and its arguments:
#   ROLLOUT_HOST_SH='<this text>'; export ROLLOUT_HOST_SH
#   exec sh -c "$ROLLOUT_HOST_SH" rollout-host SUBCOMMAND ARGS...
#
# Subcommands (STATE is the state directory, created if missing):
#   apply STATE EPOCH OPID ACTION TARGET TIMEOUT RETAIN_DAYS -- ARGV...
#       Runs ARGV once per operation id, ever: the id's directory under STATE/ops is
#       claimed by an atomic mkdir; a second apply of the id returns the first one's
#       result (replayed), waits for it while it runs, or says it was interrupted when
#       its runner vanished (the host rebooted), and never runs it again. The command
#       runs detached (its own session and process group): a dropped connection does
#       not stop it, and its timeout kills the whole group. EPOCH lower than the
#       highest the host has seen is refused (fencing).
#   probe STATE TIMEOUT [-- ARGV...]
#       The versions and counters; with ARGV, a health check (exit 0 = healthy).
#   run DIR TIMEOUT -- ARGV...
#       (internal) the detached runner of one operation.
#
# Output: `key=value` lines, then a line `--` and the tail of the command's output.
# Files are written to a temporary name and renamed, so a reader sees all or none.

set -u

die() {
    echo "status=error"
    echo "message=$*"
    exit 0
}

# Writes $2 to file $1 atomically.
put() {
    printf '%s\n' "$2" > "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
}

get() {
    cat "$1" 2>/dev/null || true
}

boot_id() {
    cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown
}

# A short sleep where `sleep` takes fractions (GNU, busybox), else a second.
nap() {
    sleep 0.05 2>/dev/null || sleep 1
}

# Runs "$@" under STATE's lock: flock where present, else an atomic mkdir lock
# (taken over once its holder is gone).
locked() {
    if command -v flock >/dev/null 2>&1; then
        (
            flock 9 || exit 1
            "$@"
        ) 9>"$STATE/lock"
        return $?
    fi
    while ! mkdir "$STATE/lock.d" 2>/dev/null; do
        holder=$(get "$STATE/lock.d/pid")
        if [ -n "$holder" ] && ! kill -0 "$holder" 2>/dev/null; then
            rm -rf "$STATE/lock.d"
            continue
        fi
        nap
    done
    echo $$ > "$STATE/lock.d/pid"
    "$@"
    rc=$?
    rm -rf "$STATE/lock.d"
    return $rc
}

count() {
    n=$(get "$STATE/$1")
    put "$STATE/$1" $(( ${n:-0} + 1 ))
}

# Fencing: refuses an epoch lower than the highest seen; remembers a higher one.
fence() {
    count apply_calls
    highest=$(get "$STATE/epoch")
    highest=${highest:-0}
    if [ "$EPOCH" -lt "$highest" ]; then
        count stale_refused
        echo "refused stale controller epoch $EPOCH < $highest: a newer leader has taken over" > "$STATE/fence.out"
        return 0
    fi
    [ "$EPOCH" -gt "$highest" ] && put "$STATE/epoch" "$EPOCH"
    rm -f "$STATE/fence.out"
    return 0
}

# Prints an operation's result (its directory $1), `replayed` $2.
result() {
    echo "status=$(get "$1/status")"
    echo "replayed=$2"
    echo "code=$(get "$1/code")"
    echo "version=$(get "$STATE/version")"
    echo "previous=$(get "$STATE/previous")"
    echo "--"
    get "$1/tail"
}

# Records that the runner of $1 vanished: final, never run again.
interrupted() {
    [ -e "$1/status" ] && return 0
    put "$1/code" -1
    put "$1/tail" "interrupted: the command's runner vanished (the host rebooted or it was killed) while this operation ran, so it is not run again; check the host and retry with a new operation"
    put "$1/status" interrupted
}

# True while the operation $1 is being run (its runner, or the apply that claimed it
# and is starting the runner, is alive since this boot).
running() {
    booted=$(get "$1/boot")
    if [ -z "$booted" ]; then
        # Claimed a moment ago: its claimer is still writing the claim (a claim
        # left unwritten for a minute is a claimer that died).
        [ -n "$(find "$1" -prune -mmin -1 2>/dev/null)" ]
        return $?
    fi
    [ "$booted" = "$(boot_id)" ] || return 1
    pid=$(get "$1/pid")
    [ -n "$pid" ] || pid=$(get "$1/claimer")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# Waits for operation $1 to end, up to $2 seconds: 0 when it has a status.
await() {
    waited=0
    while [ ! -e "$1/status" ]; do
        if ! running "$1"; then
            locked interrupted "$1"
            return 0
        fi
        [ "$waited" -ge "$(( $2 * 20 ))" ] && return 1
        nap
        waited=$(( waited + 1 ))
    done
    return 0
}

# Removes finished operations older than $1 days, at most once an hour.
prune() {
    stamp="$STATE/pruned"
    if [ -e "$stamp" ] && [ -z "$(find "$stamp" -mmin +60 2>/dev/null)" ]; then
        return 0
    fi
    : > "$stamp"
    for d in "$STATE"/ops/*; do
        [ -e "$d/status" ] || continue
        if [ -n "$(find "$d/status" -mtime +"$1" 2>/dev/null)" ]; then
            rm -rf "$d"
        fi
    done
}

apply() {
    [ "$#" -ge 8 ] || die "apply needs STATE EPOCH OPID ACTION TARGET TIMEOUT RETAIN_DAYS -- ARGV"
    STATE=$1 EPOCH=$2 OPID=$3 ACTION=$4 TARGET=$5 TIMEOUT=$6 RETAIN=$7
    shift 7
    [ "$1" = "--" ] || die "apply: expected -- before the command"
    shift
    case "$OPID" in
        ''|*/*|.*) die "operation id '$OPID' is not a file name" ;;
    esac
    mkdir -p "$STATE/ops" || die "cannot create the state directory $STATE"
    locked fence
    if [ -e "$STATE/fence.out" ]; then
        echo "status=refused"
        echo "message=$(get "$STATE/fence.out")"
        exit 0
    fi
    dir="$STATE/ops/$OPID"
    if mkdir "$dir" 2>/dev/null; then
        put "$dir/claimer" $$
        put "$dir/boot" "$(boot_id)"
        put "$dir/action" "$ACTION"
        put "$dir/target" "$TARGET"
        put "$dir/started" "$(date +%s)"
        # Detached: its own session, so the connection's end does not reach it.
        setsid sh -c "$ROLLOUT_HOST_SH" rollout-host run "$dir" "$TIMEOUT" -- "$@" \
            < /dev/null > /dev/null 2>&1 &
        runner=$!
        put "$dir/pid" "$runner"
        wait "$runner" 2>/dev/null
        [ -e "$dir/status" ] || await "$dir" 10 || true
        prune "$RETAIN" 2>/dev/null &
        result "$dir" 0
        exit 0
    fi
    if await "$dir" "$TIMEOUT"; then
        result "$dir" 1
    else
        echo "status=running"
        echo "replayed=1"
    fi
}

# The detached runner: runs the command in a process group of its own, kills that
# group at the timeout, records the outcome, and moves the versions.
run() {
    dir=$1 timeout=$2
    shift 3
    STATE=${dir%/ops/*}
    put "$dir/pid" $$
    setsid "$@" < /dev/null > "$dir/out" 2>&1 &
    cmd=$!
    (
        sleep "$timeout"
        : > "$dir/timed-out"
        if kill -TERM -"$cmd" 2>/dev/null; then
            sleep 5
            kill -KILL -"$cmd" 2>/dev/null
        else
            rm -f "$dir/timed-out"
        fi
    ) < /dev/null > /dev/null 2>&1 &
    watchdog=$!
    wait "$cmd"
    code=$?
    kill "$watchdog" 2>/dev/null
    # Whatever the command left behind in its group goes with it.
    kill -KILL -"$cmd" 2>/dev/null
    tail -c 2000 "$dir/out" > "$dir/tail.tmp" 2>/dev/null
    if [ -e "$dir/timed-out" ]; then
        printf 'timed out after %ss: its process group was killed\n' "$timeout" >> "$dir/tail.tmp"
        status=timeout
    elif [ "$code" -eq 0 ]; then
        status=ok
    else
        status=failed
    fi
    mv -f "$dir/tail.tmp" "$dir/tail"
    put "$dir/code" "$code"
    locked finish "$dir" "$status"
}

# Under the lock: the versions move (a deploy or rollback that succeeded), the
# counters, then the status that makes the outcome final.
finish() {
    if [ "$2" = ok ]; then
        case "$(get "$1/action")" in
            deploy|rollback)
                target=$(get "$1/target")
                current=$(get "$STATE/version")
                if [ "$target" != "$current" ]; then
                    put "$STATE/previous" "$current"
                    put "$STATE/version" "$target"
                fi
                ;;
        esac
    fi
    count executed
    put "$STATE/last_operation" "${1##*/}"
    put "$1/status" "$2"
}

probe() {
    [ "$#" -ge 2 ] || die "probe needs STATE TIMEOUT [-- ARGV]"
    STATE=$1 timeout=$2
    shift 2
    mkdir -p "$STATE/ops" || die "cannot create the state directory $STATE"
    echo "status=ok"
    echo "version=$(get "$STATE/version")"
    echo "previous=$(get "$STATE/previous")"
    echo "executed=$(get "$STATE/executed")"
    echo "last_operation=$(get "$STATE/last_operation")"
    echo "apply_calls=$(get "$STATE/apply_calls")"
    echo "stale_refused=$(get "$STATE/stale_refused")"
    if [ "$#" -gt 1 ] && [ "$1" = "--" ]; then
        shift
        out="$STATE/health.out.$$"
        setsid "$@" < /dev/null > "$out" 2>&1 &
        cmd=$!
        ( sleep "$timeout"; kill -KILL -"$cmd" 2>/dev/null ) < /dev/null > /dev/null 2>&1 &
        watchdog=$!
        wait "$cmd"
        code=$?
        kill "$watchdog" 2>/dev/null
        echo "health=$code"
        echo "--"
        tail -c 500 "$out" 2>/dev/null
        rm -f "$out"
    fi
}

command=${1:-}
[ "$#" -gt 0 ] && shift
case "$command" in
    apply) apply "$@" ;;
    probe) probe "$@" ;;
    run) run "$@" ;;
    *) die "unknown subcommand '$command': apply, probe" ;;
esac
