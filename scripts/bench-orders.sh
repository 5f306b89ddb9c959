#!/usr/bin/env bash
# Benefit orders' load rate: one Redis (redis.conf, AOF, ACL users), an order
# of BENCH_ORDER_LINES lines (MEAL, FOOD, CASH in turn) on BENCH_ACCOUNTS
# accounts loaded with `authorizer order load`, then the same file sent again
# (every line already credited). Reports lines per second for both and
# Redis's CPU per line (/proc/PID/stat), and the memory of the lines' records.
#
#   make bench-orders                             # 100,000 lines on 10,000 accounts
#   BENCH_ORDER_LINES=20000 make bench-orders
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${AUTHORIZER_BIN:-$PWD/.build/release/authorizer}
LINES=${BENCH_ORDER_LINES:-100000}
ACCOUNTS=${BENCH_ACCOUNTS:-10000}
[ -x "$BIN" ] || { echo "no $BIN; run: swift build -c release" >&2; exit 1; }

BENCH_NAME=authorizer-bench-orders
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

REDIS_PORT=$(free_port)
bash scripts/redis-users.sh "$WORK" "$REDIS_PORT"
# shellcheck disable=SC1091
source "$WORK/credentials.env"
redis-server "$PWD/redis.conf" --port "$REDIS_PORT" --dir "$WORK" --aclfile "$WORK/users.acl" --daemonize no --logfile "$WORK/redis.log" >/dev/null &
REDIS_PID=$!; PIDS+=("$REDIS_PID")
wait_for_line "$WORK/redis.log" "Ready to accept connections" "$REDIS_PID"
REDIS_URL="redis://authorizer:$AUTHORIZER_PASSWORD@127.0.0.1:$REDIS_PORT/0"
"$BIN" rules init --redis "$REDIS_URL" >/dev/null
for i in $(seq 0 $((ACCOUNTS - 1))); do echo "HSET account:{emp$i} MEAL 0"; done \
    | redis-cli -p "$REDIS_PORT" --user default --pass "$REDIS_ADMIN_PASSWORD" --no-auth-warning --pipe >/dev/null
awk -v n="$LINES" -v a="$ACCOUNTS" 'BEGIN { split("MEAL FOOD CASH", c, " "); print "line_id,account,category,amount";
    for (i = 0; i < n; i++) printf "%d,emp%d,%s,%d.00\n", i, i % a, c[i % 3 + 1], 100 + i % 400 }' >"$WORK/order.csv"

cpu() { awk '{ print $14 + $15 }' "/proc/$REDIS_PID/stat"; }
# load NAME: seconds, Redis CPU µs per line
load() {
    local t0 s e t1
    t0=$(cpu); s=$(date +%s%N)
    "$BIN" order load "$WORK/order.csv" --order bench --redis "$REDIS_URL" >"$WORK/$1.out"
    e=$(date +%s%N); t1=$(cpu)
    awk -v ns=$((e - s)) -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$LINES" \
        'BEGIN { printf "%.0f lines/s (%.1f s), Redis CPU %.1f us per line", n / (ns / 1e9), ns / 1e9, t * 1e6 / hz / n }'
}
first=$(load first)
again=$(load again)
bytes=$(redis-cli -p "$REDIS_PORT" --user default --pass "$REDIS_ADMIN_PASSWORD" --no-auth-warning MEMORY USAGE 'orders:{emp1}')
per_account=$(( LINES / ACCOUNTS ))
echo "order load, $LINES lines on $ACCOUNTS accounts ($(cat "$WORK/first.out")):"
echo "  first load:  $first"
echo "  sent again:  $again ($(cat "$WORK/again.out"))"
echo "  lines' records: $bytes bytes for the $per_account lines of one account (about $(( bytes / per_account )) bytes a line)"
