# rollout's host program: what the controller runs on a host it reaches over SSH,
# with nothing installed there. POSIX sh (dash, bash, busybox ash), and only mkdir,
# mv, cat, kill, setsid, sleep, tail, find, rm, date, ls, id: no Python.
#
# It trusts nothing it reads: the state directory must be the SSH user's own and not
# group or world writable (or every operation refuses, naming it); nothing written
# or locked there may be a symbolic link; every file read back is parsed strictly
# (a counter is digits, a version a version), and anything else is reported as
# corrupt state and the operation refused, never evaluated.
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
umask 077

die() {
    echo "status=error"
    echo "message=$*"
    exit 0
}

# Refuses a path that is a symbolic link (a write or lock would follow it).
no_link() {
    if [ -L "$1" ]; then
        die "corrupt state: $1 is a symbolic link, which is never followed; remove it"
    fi
}

# Writes $2 to file $1 atomically, never through a symbolic link.
put() {
    no_link "$1"
    no_link "$1.tmp.$$"
    rm -f "$1.tmp.$$"
    printf '%s\n' "$2" > "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
}

get() {
    if [ -L "$1" ]; then
        return 0
    fi
    cat "$1" 2>/dev/null || true
}

# Exits with "corrupt state" unless file $1 (missing is fine) matches its kind $2:
# digits | int (digits, maybe negative) | version | opid | word.
check_file() {
    no_link "$1"
    v=$(get "$1")
    case "$2" in
        digits) case "$v" in *[!0-9]*) bad=1 ;; *) bad=0 ;; esac ;;
        int) case "${v#-}" in *[!0-9]*) bad=1 ;; *) bad=0 ;; esac ;;
        version) case "$v" in -*|*[!A-Za-z0-9._+-]*) bad=1 ;; *) bad=0 ;; esac ;;
        opid) case "$v" in .*|*[!A-Za-z0-9._:-]*) bad=1 ;; *) bad=0 ;; esac ;;
        *) case "$v" in *[!a-z0-9-]*) bad=1 ;; *) bad=0 ;; esac ;;
    esac
    if [ "$bad" = 1 ]; then
        die "corrupt state: $1 does not hold a $2; the operation is refused (check who wrote it, then remove it)"
    fi
}

# The state directory $1: made if missing (the user's own, 0700), else it must be
# a directory, not a link, owned by this user and not group or world writable.
own_state() {
    if [ ! -e "$1" ] && [ ! -L "$1" ]; then
        mkdir -p "$1/ops" || die "cannot create the state directory $1"
    fi
    dir=$1
    if [ -L "$dir" ] || [ ! -d "$dir" ]; then
        die "the state directory $dir is not a directory (or is a symbolic link): every operation is refused until it is"
    fi
    info=$(ls -ldn "$dir" 2>/dev/null) || die "cannot read the state directory $dir"
    # shellcheck disable=SC2086 # the fields of ls -n, split on purpose
    set -- $info
    perms=$1 uid=$3
    if [ "$uid" != "$(id -u)" ]; then
        die "the state directory $dir belongs to uid $uid, not to this user (uid $(id -u)): every operation is refused until it is the SSH user's own (chown it)"
    fi
    case "$perms" in
        ?????w*|????????w*)
            die "the state directory $dir is group or world writable ($perms): every operation is refused until it is not (chmod go-w)"
            ;;
    esac
    no_link "$dir/ops"
    mkdir -p "$dir/ops" || die "cannot create $dir/ops"
    for f in epoch apply_calls stale_refused executed; do
        check_file "$dir/$f" digits
    done
    check_file "$dir/version" version
    check_file "$dir/previous" version
    check_file "$dir/last_operation" opid
    no_link "$dir/lock"
    no_link "$dir/lock.d"
    no_link "$dir/fence.out"
    no_link "$dir/pruned"
}

# Exits with "corrupt state" unless operation directory $1's files parse.
check_op() {
    no_link "$1"
    for f in claimer boot_pid pid started; do
        check_file "$1/$f" digits
    done
    check_file "$1/code" int
    check_file "$1/status" word
    check_file "$1/action" word
    check_file "$1/target" version
    for f in tail out timed-out boot; do
        no_link "$1/$f"
    done
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

# Adds one to counter $1: digits only, checked again here (never evaluated else).
count() {
    n=$(get "$STATE/$1")
    case "$n" in
        '') n=0 ;;
        *[!0-9]*) return 1 ;;
    esac
    put "$STATE/$1" $(( n + 1 ))
}

# Fencing: refuses an epoch lower than the highest seen; remembers a higher one.
fence() {
    count apply_calls
    highest=$(get "$STATE/epoch")
    highest=${highest:-0}
    case "$highest" in *[!0-9]*) return 1 ;; esac
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
    case "$pid" in ''|*[!0-9]*) return 1 ;; esac
    kill -0 "$pid" 2>/dev/null
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
        ''|.*|*[!A-Za-z0-9._:-]*) die "operation id '$OPID' is not a file name" ;;
    esac
    for n in "$EPOCH" "$TIMEOUT" "$RETAIN"; do
        case "$n" in ''|*[!0-9]*) die "apply: '$n' is not a number" ;; esac
    done
    case "$ACTION" in ''|*[!a-z]*) die "apply: action '$ACTION' is not a word" ;; esac
    case "$TARGET" in -*|*[!A-Za-z0-9._+-]*) die "apply: '$TARGET' is not a version" ;; esac
    own_state "$STATE"
    [ -e "$STATE/ops/$OPID" ] && check_op "$STATE/ops/$OPID"
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
    check_op "$dir"
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
    case "$timeout" in ''|*[!0-9]*) die "probe: '$timeout' is not a number" ;; esac
    own_state "$STATE"
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
        no_link "$out"
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
