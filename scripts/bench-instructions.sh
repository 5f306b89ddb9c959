#!/usr/bin/env bash
# Instructions Redis executes per EVALSHA of authorize.lua (valgrind's
# callgrind on redis-server): a plain authorization, one naming a card, one
# naming a card with two controls (a per-transaction maximum and a daily
# amount, counted on every approval), and one with the same two controls as
# the program's (ARGV[21]). Unlike CPU time on shared cores (±30 %), the
# counts move by a few per cent between runs: the way to compare the rows.
# Needs valgrind (apt install valgrind). N calls per row (default 3000).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "bench-instructions: valgrind is not installed (apt install valgrind)" >&2; exit 2; }
N=${N:-3000}
ACCOUNTS=500
WORK=$(mktemp -d /tmp/bench-instructions.XXXXXX)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" redis-server --port "$PORT" --dir "$WORK" --save "" --appendonly no \
    >"$WORK/valgrind.log" 2>&1 &
VALGRIND_PID=$!
cleanup() {
    redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || kill "$VALGRIND_PID" 2>/dev/null || true
    wait "$VALGRIND_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 1 100); do redis-cli -p "$PORT" PING >/dev/null 2>&1 && break; sleep 0.2; done
for i in $(seq -f '%012g' 0 $((ACCOUNTS - 1))); do
    for p in plain card ctl prog; do
        echo "HSET account:{$p-$i} FOOD 1000000000000 CASH 1000000000000"
        echo "HSET card:{$p-$i}:crd_bench status active expiry 9912 pan 999000******0000"
    done
    echo "HSET controls:{ctl-$i} crd_bench.per_txn 1000000 crd_bench.day_amount 100000000000"
done | redis-cli -p "$PORT" --pipe >/dev/null
SHA=$(redis-cli -p "$PORT" SCRIPT LOAD "$(cat Lua/authorize.lua)")
TODAY=$(( $(date +%s) / 86400 ))
utc_date() { date -u -d "@$(( $1 * 86400 ))" +%Y%m%d; }

# calls PREFIX ACCOUNT-PREFIX CARD PROGRAM COUNT
calls() {
    local id=$1 p=$2 card=$3 program=$4 keys=9 zone=0 card_key=()
    if [ -n "$card" ]; then keys=10; zone=-10800; card_key=("card:{$p-__rand_int__}:$card"); fi
    redis-benchmark -p "$PORT" -n "$5" -c 10 -P 16 -r "$ACCOUNTS" -q \
        EVALSHA "$SHA" "$keys" "account:{$p-__rand_int__}" "lock:{$p-__rand_int__}:__rand_int__" statements "txn:{$p-__rand_int__}:x" \
        "txns:{$p-__rand_int__}:$(utc_date $((TODAY + 1)))" "txns:{$p-__rand_int__}:$(utc_date "$TODAY")" "txns:{$p-__rand_int__}:$(utc_date $((TODAY - 1)))" \
        "controls:{$p-__rand_int__}" "spent:{$p-__rand_int__}" "${card_key[@]}" \
        tok 0 "$id-__rand_int__-__rand_int__" acct 100 5411 5411 'BENCH MARKET' FOOD CASH whole \
        $((TODAY + 1)) 0badcafe 172800 0 3 "$card" '' "$zone" "$(date +%s)000000" "$program" >/dev/null 2>&1
}

# row NAME ACCOUNT-PREFIX CARD PROGRAM: instructions per call over N calls,
# after a warm-up that starts every account's buckets and windows.
row() {
    calls "w$1" "$2" "$3" "$4" $((ACCOUNTS * 2))
    callgrind_control -z "$VALGRIND_PID" >/dev/null 2>&1
    calls "$1" "$2" "$3" "$4" "$N"
    rm -f "$WORK"/cg.*.[0-9]*
    callgrind_control -d "$VALGRIND_PID" >/dev/null 2>&1
    local total
    total=$(grep -h '^summary:' "$WORK"/cg.*.[0-9]* | awk '{ s += $2 } END { print s }')
    echo $(( total / N ))
}

plain=$(row plain plain '' '')
card=$(row card card crd_bench '')
controls=$(row ctl ctl crd_bench '')
program=$(row prog prog crd_bench 'per_txn=1000000;day_amount=100000000000')
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo "redis-server instructions per EVALSHA of authorize.lua ($N calls a row, callgrind):"
echo "  plain authorization          $plain"
echo "  with a card                  $card  ($(ratio "$card" "$plain") x plain)"
echo "  card + 2 controls of the card $controls  ($(ratio "$controls" "$card") x card, $(ratio "$controls" "$plain") x plain)"
echo "  card + 2 program controls    $program  ($(ratio "$program" "$card") x card, $(ratio "$program" "$plain") x plain)"
echo "spent: $(redis-cli -p "$PORT" HGETALL 'spent:{ctl-000000000001}' | tr '\n' ' ')/ $(redis-cli -p "$PORT" HGETALL 'spent:{prog-000000000001}' | tr '\n' ' ')"
