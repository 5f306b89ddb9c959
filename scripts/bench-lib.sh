# Shared by the bench scripts (sourced): a work directory and the processes
# started, stopped on exit (failure and Ctrl-C included); waiting for a
# process to say it is ready; free ports; CPU ticks of a process.
# Expects BENCH_NAME (the work directory's prefix).

WORK=$(mktemp -d "${TMPDIR:-/tmp}/${BENCH_NAME:-authorizer-bench}.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until FILE has a line containing TEXT (a started process says it is ready).
wait_for_line() {
    local file=$1 text=$2 pid=$3
    for _ in $(seq 1 300); do
        grep -q -- "$text" "$file" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { echo "process $pid exited; its log:" >&2; cat "$file" >&2; exit 1; }
        sleep 0.1
    done
    echo "timed out waiting for \"$text\" in $file" >&2
    exit 1
}

# Below the kernel's ephemeral range (32768+), where a client socket may hold
# a port that nothing listens on, and apart from the cluster nodes' ports
# (20000-22399, bus ports 30000-32399).
free_port() {
    local port
    while :; do
        port=$((23000 + RANDOM % 7000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
}

# utime + stime of a process in clock ticks (/proc/PID/stat fields 14 and 15,
# counted after the ')' that ends the command name).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
