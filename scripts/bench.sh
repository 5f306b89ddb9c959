#!/usr/bin/env bash
# `make bench`: a fresh Redis (the project's redis.conf) and a release
# `authorizer serve` on free ports in a temp dir, then in one run:
#   1. redis-benchmark calling authorize.lua with EVALSHA, pipelined: the Redis ceiling
#   2. authorizer bench, closed loop: the most authorizations per second
#   M. authorizer bench --memory: Redis memory per authorization on fresh
#      accounts, split into the statement stream and the rest (idempotency records)
#   3. authorizer bench, open loop at 10,000/s and at 5,000/s: latency
#   3b. authorizer bench --protocol iso8583, closed loop on the ISO 8583 port
#   4. the unlock probe: a request waiting on a lock held elsewhere, timed from the release
#   5. serve's RSS holding 10,000 idle terminal connections
# and a table, and bench-results/latency.svg: latency by percentile of the
# closed loop, the open loop and the unlock probe against the SLA (from the
# .hgrm files each run writes there). Every load phase also reports the CPU
# of Redis, serve and the generator per answered request (/proc/PID/stat,
# read by `authorizer bench --cpu-of`). bench-results/bench.json holds every
# phase's JSON. Everything started here is stopped on exit, failure included.
#
# Knobs (environment): BENCH_DURATION (10s), BENCH_RATE (10000),
# BENCH_CONNECTIONS (64), BENCH_PIPELINE (closed loop, 8), BENCH_IDLE (10000),
# BENCH_PROBES (200), CEILING_REQUESTS (300000), AUTHORIZER_BIN,
# BENCH_APPENDFSYNC (everysec as in redis.conf; `always` measures its cost),
# BENCH_SERVE_ARGS (extra `serve` options, e.g. "--threads 1"),
# BENCH_RESULTS (bench-results: the .hgrm files and latency.svg),
# BENCH_CLUSTER (1: also the 3-master cluster rows; 0: one Redis only),
# BENCH_ACCOUNTS (10000), BENCH_MEMORY_AUTHS (authorizations of the memory
# phase, 50000, sent at BENCH_RATE).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${AUTHORIZER_BIN:-$PWD/.build/release/authorizer}
DURATION=${BENCH_DURATION:-10s}
RATE=${BENCH_RATE:-10000}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
PIPELINE=${BENCH_PIPELINE:-8}
IDLE=${BENCH_IDLE:-10000}
PROBES=${BENCH_PROBES:-200}
CEILING_REQUESTS=${CEILING_REQUESTS:-300000}
APPENDFSYNC=${BENCH_APPENDFSYNC:-everysec}
ACCOUNTS=${BENCH_ACCOUNTS:-10000}
MEMORY_AUTHS=${BENCH_MEMORY_AUTHS:-50000}
RESULTS=${BENCH_RESULTS:-$PWD/bench-results}
mkdir -p "$RESULTS"

[ -x "$BIN" ] || { echo "no $BIN; run: swift build -c release" >&2; exit 1; }
for tool in redis-server redis-cli redis-benchmark; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (make deps)" >&2; exit 1; }
done
# Room for the idle connections (each side holds one descriptor per connection).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE + 1000)) ]; then
    IDLE=$(( $(ulimit -n) - 1000 ))
    echo "ulimit -n is $(ulimit -n): measuring $IDLE idle connections instead" >&2
fi

BENCH_NAME=authorizer-bench
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

# A number field of the one-line JSON that `authorizer bench --json` prints.
field() { grep -o "\"$1\":[0-9.eE+-]*" <<<"$2" | head -1 | cut -d: -f2; }
# A number inside one of its objects: nested cpu_us_per_auth redis "$json".
nested() { field "$2" "$(grep -o "\"$1\":{[^}]*}" <<<"$3" | head -1)"; }
# One phase's CPU per authorization: "redis / serve / generator = total µs", and the coarse ones.
cpu_row() {
    local json=$1 names=$2 out="" name coarse
    for name in $names; do out+="${out:+ / }$(nested cpu_us_per_auth "$name" "$json")"; done
    out+=" = $(nested cpu_us_per_auth total "$json") µs"
    coarse=$(grep -o '"cpu_coarse":\[[^]]*\]' <<<"$json" | cut -d: -f2 | tr -d '[]"')
    [ -n "$coarse" ] && out+=" (under 100 ticks: $coarse)"
    echo "$out"
}
memory_row() {
    local created
    created=$(nested memory streams_created "$1")
    if [ "${created:-0}" -gt 0 ]; then
        created="$created new streams: $(nested memory_bytes_per_auth stream_new_keys "$1") B of the stream"
    else
        created=""
    fi
    local moving=""
    grep -q '"steady_before":false' <<<"$1" && moving="; used_memory was still moving before the phase"
    echo "$(nested memory_bytes_per_auth idempotency "$1") + $(nested memory_bytes_per_auth stream "$1") = $(nested memory_bytes_per_auth total "$1") B ($(field answered "$1") auths${created:+, $created}$moving)"
}
code_count() {
    local count
    count=$(grep -o "\"$1\":[0-9]*" <<<"$(grep -o '"codes":{[^}]*}' <<<"$2")" | cut -d: -f2 || true)
    echo "${count:-0}"
}
check_errors() {
    local errors
    errors=$(field errors "$2")
    if [ "${errors:-1}" != 0 ]; then echo "warning: $1 had $errors errors: $2" >&2; fi
}

# Redis as `make run` has it: the project's redis.conf and ACL users, so
# serve and redis-benchmark run as the `authorizer` user (ACL checks included).
REDIS_PORT=$(free_port)
bash scripts/redis-users.sh "$WORK" "$REDIS_PORT"
# shellcheck disable=SC1091
source "$WORK/credentials.env"
redis-server "$PWD/redis.conf" --port "$REDIS_PORT" --dir "$WORK" --aclfile "$WORK/users.acl" --appendfsync "$APPENDFSYNC" \
    --daemonize no --logfile "$WORK/redis.log" >/dev/null &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_for_line "$WORK/redis.log" "Ready to accept connections" "$REDIS_PID"
REDIS_URL="redis://authorizer:$AUTHORIZER_PASSWORD@127.0.0.1:$REDIS_PORT/0"
# The memory phase trims and deletes statement streams: the admin user.
ADMIN_URL="redis://default:$REDIS_ADMIN_PASSWORD@127.0.0.1:$REDIS_PORT/0"
rcli() { REDISCLI_AUTH=$REDIS_ADMIN_PASSWORD redis-cli -p "$REDIS_PORT" "$@"; }
echo "redis on $REDIS_PORT, data in $WORK" >&2

# 1. The ceiling: authorize.lua alone, called by redis-benchmark. Each
# __rand_int__ is replaced independently (12 zero-padded digits), so the
# account key, the lock key and the day buckets of one call carry different
# random ids: the transaction id gets extra random digits so that no call
# meets an idempotency record. Each call is what serve sends for an
# uncontended request (lock ttl 0: the lock is checked, not kept): it
# debits FOOD, appends the statement and records the decision in a day
# bucket (about 30 per bucket, as for a busy card).
echo "seeding $ACCOUNTS accounts for redis-benchmark" >&2
for i in $(seq -f '%012g' 0 $((ACCOUNTS - 1))); do
    echo "HSET account:{rb-$i} FOOD 1000000000000 CASH 1000000000000"
done | rcli --pipe >/dev/null
SHA=$(rcli SCRIPT LOAD "$(cat Lua/authorize.lua)")
# The day buckets are named by UTC date (the script picks Redis's today among them).
TODAY=$(( $(date +%s) / 86400 ))
utc_date() { date -u -d "@$(( $1 * 86400 ))" +%Y%m%d; }
# One redis-benchmark run of authorize.lua ($1: the ids' prefix; $2: a card
# id, or '' for none): prints "calls/s redis-µs-per-call".
authorize_ceiling() {
    local prefix=$1 card=$2 keys=9 zone=0 ticks csv
    local card_key=()
    if [ -n "$card" ]; then keys=10; zone=-10800; card_key=("card:{rb-__rand_int__}:$card"); fi
    ticks=$(cpu_ticks "$REDIS_PID")
    csv=$(redis-benchmark -p "$REDIS_PORT" --user authorizer -a "$AUTHORIZER_PASSWORD" -n "$CEILING_REQUESTS" -c 50 -P 16 -r "$ACCOUNTS" --csv \
        EVALSHA "$SHA" "$keys" 'account:{rb-__rand_int__}' 'lock:{rb-__rand_int__}:__rand_int__' statements 'txn:{rb-__rand_int__}:x' \
        "txns:{rb-__rand_int__}:$(utc_date $((TODAY + 1)))" "txns:{rb-__rand_int__}:$(utc_date "$TODAY")" "txns:{rb-__rand_int__}:$(utc_date $((TODAY - 1)))" \
        'controls:{rb-__rand_int__}' 'spent:{rb-__rand_int__}' "${card_key[@]}" \
        tok 0 "$prefix-__rand_int__-__rand_int__" acct 100 5411 5411 'BENCH MARKET             SAO PAULO    BR' FOOD CASH whole \
        $((TODAY + 1)) 0badcafe 172800 0 3 "$card" '' "$zone" "$(date +%s)000000" \
        2> >(grep -v "Could not fetch server CONFIG" >&2))
    ticks=$(( $(cpu_ticks "$REDIS_PID") - ticks ))
    printf '%s %s\n' "$(tail -1 <<<"$csv" | cut -d, -f2 | tr -d '"')" \
        "$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$CEILING_REQUESTS" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')"
}

before=$(rcli XLEN statements)
echo "redis-benchmark: EVALSHA authorize.lua x $CEILING_REQUESTS, 50 clients, pipeline 16" >&2
read -r CEILING CEILING_CPU_US < <(authorize_ceiling id '')
decided=$(( $(rcli XLEN statements) - before ))
# Redis CPU per EVALSHA of authorize.lua alone, beside its CPU per authorization through serve.
last=$(rcli XREVRANGE statements + - COUNT 1 | tr '\n' ' ')
if [ "$decided" -ne "$CEILING_REQUESTS" ] || ! grep -q "code 00 .*debits FOOD:100" <<<"$last"; then
    echo "warning: only $decided of $CEILING_REQUESTS redis-benchmark calls debited (last: $last)" >&2
fi
echo "ceiling: $CEILING calls/s ($decided of $CEILING_REQUESTS calls debited and wrote a statement)" >&2

# 1b. The same calls naming a card (active, not expired): what a card costs
# Redis inside authorize.lua (one HMGET of its hash, the expiry check, two
# more statement fields), from the same run.
for i in $(seq -f '%012g' 0 $((ACCOUNTS - 1))); do
    echo "HSET card:{rb-$i}:crd_bench status active expiry 9912 pan 999000******0000"
done | rcli --pipe >/dev/null
echo "redis-benchmark: EVALSHA authorize.lua with a card x $CEILING_REQUESTS" >&2
read -r CEILING_CARD CEILING_CARD_CPU_US < <(authorize_ceiling idc crd_bench)
last=$(rcli XREVRANGE statements + - COUNT 1 | tr '\n' ' ')
if ! grep -q "code 00 .*card crd_bench" <<<"$last"; then
    echo "warning: the card calls did not approve (last: $last)" >&2
fi

# 1c. The same card with two controls that pass (a per-transaction maximum
# and a daily amount, whose window is counted on every approval).
for i in $(seq -f '%012g' 0 $((ACCOUNTS - 1))); do
    echo "HSET controls:{rb-$i} crd_bench.per_txn 1000000 crd_bench.day_amount 100000000000"
done | rcli --pipe >/dev/null
echo "redis-benchmark: EVALSHA authorize.lua with a card and two controls x $CEILING_REQUESTS" >&2
read -r CEILING_CONTROLS CEILING_CONTROLS_CPU_US < <(authorize_ceiling idk crd_bench)
last=$(rcli XREVRANGE statements + - COUNT 1 | tr '\n' ' ')
if ! grep -q "code 00 .*card crd_bench" <<<"$last" || [ -z "$(rcli HGET 'spent:{rb-000000000000}' crd_bench.d)" ]; then
    echo "warning: the controlled calls did not approve and count (last: $last)" >&2
fi
# The ceiling leaves 300,000 lock keys expiring in the background and as many
# transaction records: start the serve phases (the memory phase above all) from an empty Redis.
rcli FLUSHALL SYNC >/dev/null

# serve, started after the ceiling so that it does not share the machine with it.
# shellcheck disable=SC2086
"$BIN" serve --redis "$REDIS_URL" --port 0 --port-file "$WORK/serve.port" --iso8583-port 0 --iso-pan-as-account --state-dir "$WORK/state" ${BENCH_SERVE_ARGS:-} >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
PIDS+=("$SERVE_PID")
wait_for_line "$WORK/serve.log" "authorizer listening" "$SERVE_PID"
TARGET="127.0.0.1:$(cat "$WORK/serve.port")"
wait_for_line "$WORK/serve.log" "iso8583 listening" "$SERVE_PID"
ISO_TARGET="127.0.0.1:$(grep "iso8583 listening" "$WORK/serve.log" | grep -o 'port=[0-9]*' | head -1 | cut -d= -f2)"
echo "serve on $TARGET (ISO 8583 on $ISO_TARGET)" >&2
CPU_OF=(--cpu-of "redis=$REDIS_PID" --cpu-of "serve=$SERVE_PID")
bench() { "$BIN" bench --target "$TARGET" --redis "$REDIS_URL" --accounts "$ACCOUNTS" --json "$@"; }

bench --seed --rate 100 --duration 1s --connections 8 >/dev/null  # seed, and warm the connections

# M. Memory per authorization: MEMORY_AUTHS requests at RATE on accounts no
# phase has touched (bench-ACCOUNTS … bench-(2 x ACCOUNTS - 1)), none hot.
memory_phase() {  # REDIS_URL (a user that may trim and delete streams), then bench options
    local url=$1
    shift
    "$BIN" bench --redis "$url" --json --memory --seed --first-account "$ACCOUNTS" --accounts "$ACCOUNTS" --contended 0 \
        --rate "$RATE" --duration "$(( MEMORY_AUTHS * 1000 / RATE ))ms" --connections "$CONNECTIONS" "$@"
}
memory=$(memory_phase "$ADMIN_URL" --target "$TARGET" "${CPU_OF[@]}")
check_errors "memory phase" "$memory"

# 2. Closed loop.
closed=$(bench --rate 0 --duration "$DURATION" --connections "$CONNECTIONS" --pipeline "$PIPELINE" --hgrm "$RESULTS/closed.hgrm" "${CPU_OF[@]}")
check_errors "closed loop" "$closed"

# 3. Open loop, at RATE and at half of it.
open=$(bench --rate "$RATE" --duration "$DURATION" --connections "$CONNECTIONS" --hgrm "$RESULTS/open-$RATE.hgrm" "${CPU_OF[@]}")
check_errors "open loop" "$open"
open_half=$(bench --rate $((RATE / 2)) --duration "$DURATION" --connections "$CONNECTIONS" "${CPU_OF[@]}")
check_errors "open loop at half the rate" "$open_half"

# 3b. Closed loop over the ISO 8583 port (0200 purchases, answers in any order).
"$BIN" bench --target "$ISO_TARGET" --protocol iso8583 --redis "$REDIS_URL" --accounts "$ACCOUNTS" --seed \
    --rate 100 --duration 1s --connections 8 --json >/dev/null
iso=$("$BIN" bench --target "$ISO_TARGET" --protocol iso8583 --redis "$REDIS_URL" --accounts "$ACCOUNTS" --json \
    --rate 0 --duration "$DURATION" --connections "$CONNECTIONS" --pipeline "$PIPELINE" "${CPU_OF[@]}")
check_errors "ISO 8583 closed loop" "$iso"

# 4. Unlock probe.
probe=$(bench --unlock-probes "$PROBES" --hgrm "$RESULTS/unlock-probe.hgrm")
check_errors "unlock probe" "$probe"

# 5. Idle connections: RSS before, and while the generator holds them open.
rss_mib() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$SERVE_PID/status"; }
rss_before=$(rss_mib)
"$BIN" bench --target "$TARGET" --rate 10 --duration 30s --connections "$IDLE" --json \
    >"$WORK/idle.json" 2>"$WORK/idle.log" &
IDLE_PID=$!
PIDS+=("$IDLE_PID")
wait_for_line "$WORK/idle.log" "connected $IDLE connections" "$IDLE_PID"
for _ in $(seq 1 100); do  # until serve has accepted them all
    [ "$(ls "/proc/$SERVE_PID/fd" | wc -l)" -ge "$IDLE" ] && break
    sleep 0.1
done
rss_idle=$(rss_mib)
kill "$IDLE_PID" 2>/dev/null || true

# 6. A local Redis Cluster of 3 masters and 3 replicas (on the same 2
# cores: it cannot be faster than one Redis; the row shows what routing,
# six processes and per-slot streams cost), closed loop, open loop at RATE/2
# and RATE, memory per authorization summed over the masters, and the latency
# cost of --replica-acks 1 (open loop at RATE/2, without and with WAIT). CPU
# is summed over the masters (`redis`) and over the replicas (`replicas`).
if [ "${BENCH_CLUSTER:-1}" = 1 ]; then
    kill "$SERVE_PID" 2>/dev/null || true
    rcli shutdown nosave >/dev/null 2>&1 || true
    CLUSTER_PORTS=()
    NODE_PIDS=()  # same order as CLUSTER_PORTS
    # Nodes on 20000-22399: no node's port is another's bus port (+10000), and both stay
    # below the kernel's ephemeral range (32768+), where a client socket may hold a port.
    while [ ${#CLUSTER_PORTS[@]} -lt 6 ]; do
        port=$((20000 + RANDOM % 2400))
        [[ " ${CLUSTER_PORTS[*]} " == *" $port "* ]] && continue
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
        (exec 3<>"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null && continue
        CLUSTER_PORTS+=("$port")
    done
    for port in "${CLUSTER_PORTS[@]}"; do
        mkdir -p "$WORK/cluster/$port"
        redis-server "$PWD/redis.conf" --port "$port" --dir "$WORK/cluster/$port" --aclfile "$WORK/users.acl" \
            --appendfsync "$APPENDFSYNC" --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 15000 --cluster-require-full-coverage no \
            --masteruser replication --masterauth "$REPLICATION_PASSWORD" \
            --daemonize no --logfile "$WORK/cluster/$port/redis.log" >/dev/null &
        PIDS+=($!)
        NODE_PIDS+=($!)
        wait_for_line "$WORK/cluster/$port/redis.log" "Ready to accept connections" $!
    done
    REDISCLI_AUTH=$REDIS_ADMIN_PASSWORD redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") \
        --cluster-replicas 1 --cluster-yes >/dev/null
    # Until every node sees the cluster as up (a node still joining answers CLUSTERDOWN).
    for port in "${CLUSTER_PORTS[@]}"; do
        for _ in $(seq 1 200); do
            REDISCLI_AUTH=$REDIS_ADMIN_PASSWORD redis-cli -p "$port" cluster info | grep -q cluster_state:ok && break
            sleep 0.05
        done
    done
    SEEDS=$(printf "redis://authorizer:$AUTHORIZER_PASSWORD@127.0.0.1:%s/0," "${CLUSTER_PORTS[@]:0:3}")
    SEEDS=${SEEDS%,}
    ADMIN_SEEDS=$(printf "redis://default:$REDIS_ADMIN_PASSWORD@127.0.0.1:%s/0," "${CLUSTER_PORTS[@]:0:3}")
    ADMIN_SEEDS=${ADMIN_SEEDS%,}
    # Which nodes ended up masters (ROLE), for CPU summed over masters and over replicas.
    MASTER_PIDS=() REPLICA_PIDS=()
    for i in "${!CLUSTER_PORTS[@]}"; do
        if [ "$(REDISCLI_AUTH=$REDIS_ADMIN_PASSWORD redis-cli -p "${CLUSTER_PORTS[$i]}" ROLE | head -1)" = master ]; then
            MASTER_PIDS+=("${NODE_PIDS[$i]}")
        else
            REPLICA_PIDS+=("${NODE_PIDS[$i]}")
        fi
    done
    join_plus() { local IFS=+; echo "$*"; }
    cluster_cpu_of() { echo --cpu-of "redis=$(join_plus "${MASTER_PIDS[@]}")" --cpu-of "replicas=$(join_plus "${REPLICA_PIDS[@]}")" --cpu-of "serve=$SERVE_PID"; }
    cluster_serve() {  # serve in front of the cluster with extra options; sets TARGET and SERVE_PID
        # shellcheck disable=SC2086
        "$BIN" serve --redis "$SEEDS" --port 0 --port-file "$WORK/cserve.port" --state-dir "$WORK/cstate" "$@" \
            ${BENCH_SERVE_ARGS:-} >"$WORK/cserve.log" 2>&1 &
        SERVE_PID=$!
        PIDS+=("$SERVE_PID")
        wait_for_line "$WORK/cserve.log" "authorizer listening" "$SERVE_PID"
        TARGET="127.0.0.1:$(cat "$WORK/cserve.port")"
    }
    cbench() { "$BIN" bench --target "$TARGET" --redis "$SEEDS" --accounts "$ACCOUNTS" --json "$@"; }
    cluster_serve --replica-acks 0
    cbench --seed --rate 100 --duration 1s --connections 8 >/dev/null
    # shellcheck disable=SC2046
    cluster_closed=$(cbench --rate 0 --duration "$DURATION" --connections "$CONNECTIONS" --pipeline "$PIPELINE" --hgrm "$RESULTS/cluster-closed.hgrm" $(cluster_cpu_of))
    check_errors "cluster closed loop" "$cluster_closed"
    # shellcheck disable=SC2046
    cluster_open=$(cbench --rate $((RATE / 2)) --duration "$DURATION" --connections "$CONNECTIONS" $(cluster_cpu_of))
    check_errors "cluster open loop" "$cluster_open"
    # shellcheck disable=SC2046
    cluster_open_full=$(cbench --rate "$RATE" --duration "$DURATION" --connections "$CONNECTIONS" $(cluster_cpu_of))
    check_errors "cluster open loop at the full rate" "$cluster_open_full"
    # Memory on fresh accounts, summed over the masters (each replica holds a copy as well).
    # shellcheck disable=SC2046
    cluster_memory=$(memory_phase "$ADMIN_SEEDS" --target "$TARGET" $(cluster_cpu_of))
    check_errors "cluster memory phase" "$cluster_memory"
    kill "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
    cluster_serve --replica-acks 1
    # shellcheck disable=SC2046
    cluster_acks=$(cbench --rate $((RATE / 2)) --duration "$DURATION" --connections "$CONNECTIONS" $(cluster_cpu_of))
    check_errors "cluster open loop, --replica-acks 1" "$cluster_acks"
fi

# The chart.
"$BIN" bench plot --sla-ms 100 --out "$RESULTS/latency.svg" \
    --title "authorizer bench, $(date -u +%Y-%m-%d), $(nproc) cores, runs of $DURATION" \
    "closed loop, $CONNECTIONS x $PIPELINE in flight=$RESULTS/closed.hgrm" \
    "open loop at $RATE/s=$RESULTS/open-$RATE.hgrm" \
    "unlock -> answer (probe)=$RESULTS/unlock-probe.hgrm" \
    ${cluster_closed:+"cluster closed loop (3 masters)=$RESULTS/cluster-closed.hgrm"}

# The table.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { print (a >= b) ? "met" : "missed" }'; }
below() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? "met" : "missed" }'; }
closed_tp=$(field throughput "$closed")
open_p99=$(field p99_ms "$open")
open_p999=$(field p999_ms "$open")
probe_p99=$(field p99_ms "$probe")
closed_ratio=$(ratio "$closed_tp" "$CEILING")
closed_target=$(awk -v t="$closed_tp" -v r="$closed_ratio" 'BEGIN { print (t >= 50000 || r >= 0.4) ? "met" : "missed" }')

echo
echo "authorizer bench, $(date -u +%Y-%m-%d), $(nproc) cores ($(uname -m)), runs of $DURATION"
printf '%-44s %-46s %s\n' "measurement" "result" "target"
printf '%-44s %-46s %s\n' "redis-benchmark EVALSHA authorize.lua" "$CEILING/s (ceiling)" ""
printf '%-44s %-46s %s\n' "  the same, naming a card" "$CEILING_CARD/s" ""
printf '%-44s %-46s %s\n' "  the same card with two controls" "$CEILING_CONTROLS/s" ""
printf '%-44s %-46s %s\n' "closed loop, $CONNECTIONS conns x $PIPELINE in flight" \
    "$closed_tp/s = $closed_ratio x ceiling, p99 $(field p99_ms "$closed") ms" ">= 50000/s or >= 0.4 x: $closed_target"
printf '%-44s %-46s %s\n' "open loop at $RATE/s, $CONNECTIONS conns" \
    "$(field throughput "$open")/s, p50 $(field p50_ms "$open") p90 $(field p90_ms "$open") ms" ""
printf '%-44s %-46s %s\n' "" "p99 $open_p99 ms, p99.9 $open_p999 ms, max $(field max_ms "$open") ms" \
    "p99 < 1 ms: $(below "$open_p99" 1), p99.9 < 5 ms: $(below "$open_p999" 5)"
printf '%-44s %-46s %s\n' "ISO 8583 closed loop, $CONNECTIONS x $PIPELINE" \
    "$(field throughput "$iso")/s = $(ratio "$(field throughput "$iso")" "$closed_tp") x line-JSON, p99 $(field p99_ms "$iso") ms" ""
printf '%-44s %-46s %s\n' "unlock -> answer, $PROBES probes" \
    "p50 $(field p50_ms "$probe") ms, p99 $probe_p99 ms, max $(field max_ms "$probe") ms" "p99 < 1 ms: $(below "$probe_p99" 1)"
printf '%-44s %-46s %s\n' "serve RSS, $IDLE idle connections" "$rss_idle MiB (before connecting: $rss_before MiB)" \
    "< 200 MiB: $(below "$rss_idle" 200)"
if [ -n "${cluster_closed:-}" ]; then
    printf '%-44s %-46s %s\n' "cluster (3 masters + 3 replicas), closed loop" \
        "$(field throughput "$cluster_closed")/s = $(ratio "$(field throughput "$cluster_closed")" "$closed_tp") x one Redis, p99 $(field p99_ms "$cluster_closed") ms" ">= 0.7 x: $(at_least "$(ratio "$(field throughput "$cluster_closed")" "$closed_tp")" 0.7)"
    printf '%-44s %-46s\n' "cluster open loop at $((RATE / 2))/s, acks 0 / 1" \
        "p50 $(field p50_ms "$cluster_open") / $(field p50_ms "$cluster_acks") ms, p99 $(field p99_ms "$cluster_open") / $(field p99_ms "$cluster_acks") ms"
fi
echo
echo "CPU per answered authorization, /proc/PID/stat utime + stime ($(getconf CLK_TCK) ticks/s)"
printf '%-44s %s\n' "  single Redis: phase" "redis / serve / generator = total"
printf '%-44s %s\n' "  redis-benchmark EVALSHA (ceiling)" "redis $CEILING_CPU_US µs per call"
printf '%-44s %s\n' "  the same, naming a card" "redis $CEILING_CARD_CPU_US µs per call = $(ratio "$CEILING_CARD_CPU_US" "$CEILING_CPU_US") x without"
printf '%-44s %s\n' "  the same card with two controls" "redis $CEILING_CONTROLS_CPU_US µs per call = $(ratio "$CEILING_CONTROLS_CPU_US" "$CEILING_CARD_CPU_US") x the card without controls, $(ratio "$CEILING_CONTROLS_CPU_US" "$CEILING_CPU_US") x neither"
printf '%-44s %s\n' "  closed loop" "$(cpu_row "$closed" "redis serve generator")"
printf '%-44s %s\n' "  open loop at $RATE/s" "$(cpu_row "$open" "redis serve generator")"
printf '%-44s %s\n' "  open loop at $((RATE / 2))/s" "$(cpu_row "$open_half" "redis serve generator")"
printf '%-44s %s\n' "  ISO 8583 closed loop" "$(cpu_row "$iso" "redis serve generator")"
if [ -n "${cluster_closed:-}" ]; then
    printf '%-44s %s\n' "  cluster: phase" "masters / replicas / serve / generator = total"
    printf '%-44s %s\n' "  cluster closed loop" "$(cpu_row "$cluster_closed" "redis replicas serve generator")"
    printf '%-44s %s\n' "  cluster open loop at $RATE/s" "$(cpu_row "$cluster_open_full" "redis replicas serve generator")"
    printf '%-44s %s\n' "  cluster open loop at $((RATE / 2))/s" "$(cpu_row "$cluster_open" "redis replicas serve generator")"
    printf '%-44s %s\n' "  cluster open loop at $((RATE / 2))/s, acks 1" "$(cpu_row "$cluster_acks" "redis replicas serve generator")"
fi
echo "Redis memory per authorization (used_memory; fresh accounts; idempotency records + statement stream)"
printf '%-44s %s\n' "  one Redis" "$(memory_row "$memory")"
[ -n "${cluster_memory:-}" ] && printf '%-44s %s\n' "  cluster, sum over the 3 masters" "$(memory_row "$cluster_memory")"
printf '%-44s %-46s\n' "codes: closed loop / open loop" \
    "00 $(code_count 00 "$closed") / $(code_count 00 "$open"), 51 $(code_count 51 "$closed") / $(code_count 51 "$open"), 07 $(code_count 07 "$closed") / $(code_count 07 "$open")"
# Every phase's JSON in one object.
{
    printf '{"date":"%s","cores":%s,"duration":"%s","rate":%s,"ceiling":%s,"ceiling_redis_cpu_us_per_call":%s,"ceiling_card_redis_cpu_us_per_call":%s,"ceiling_controls_redis_cpu_us_per_call":%s,"rss_idle_mib":%s,"rss_before_mib":%s,"phases":{' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" "$DURATION" "$RATE" "$CEILING" "$CEILING_CPU_US" "$CEILING_CARD_CPU_US" "$CEILING_CONTROLS_CPU_US" "$rss_idle" "$rss_before"
    printf '"memory":%s,"closed":%s,"open":%s,"open_half":%s,"iso8583":%s,"unlock_probe":%s' "$memory" "$closed" "$open" "$open_half" "$iso" "$probe"
    if [ -n "${cluster_closed:-}" ]; then
        printf ',"cluster_closed":%s,"cluster_open":%s,"cluster_open_half":%s,"cluster_acks_half":%s,"cluster_memory":%s' \
            "$cluster_closed" "$cluster_open_full" "$cluster_open" "$cluster_acks" "$cluster_memory"
    fi
    printf '}}\n'
} >"$RESULTS/bench.json"
echo "every phase's JSON: $RESULTS/bench.json"
if [ -n "${BENCH_JSON_DIR:-}" ]; then
    mkdir -p "$BENCH_JSON_DIR"
    printf '%s\n' "$closed" >"$BENCH_JSON_DIR/closed.json"
    printf '%s\n' "$open" >"$BENCH_JSON_DIR/open.json"
    printf '%s\n' "$probe" >"$BENCH_JSON_DIR/probe.json"
    printf '%s\n' "$iso" >"$BENCH_JSON_DIR/iso8583.json"
    [ -n "${cluster_closed:-}" ] && printf '%s\n' "$cluster_closed" >"$BENCH_JSON_DIR/cluster-closed.json"
    [ -n "${cluster_acks:-}" ] && printf '%s\n' "$cluster_acks" >"$BENCH_JSON_DIR/cluster-acks.json"
    printf '{"ceiling":%s,"rss_idle_mib":%s,"rss_before_mib":%s}\n' "$CEILING" "$rss_idle" "$rss_before" >"$BENCH_JSON_DIR/other.json"
fi
