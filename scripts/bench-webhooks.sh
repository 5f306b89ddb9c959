#!/usr/bin/env bash
# The webhooks' cost and speed: one Redis (redis.conf, ACL users), serve, the
# deliverer (`authorizer webhooks deliver`, as the `webhooks` user) and a
# local receiver (`authorizer bench receiver`: 200 at once, no verification,
# so the cost measured is the deliverer's). An open loop of BENCH_WEBHOOK_RATE
# approvals per second for BENCH_WEBHOOK_DURATION; then it waits until every
# event is delivered. Reports deliveries per second, the decision-to-arrival
# latency (p50, p99, max: the receiver's clock minus the ledger entry's
# created_ms) and the deliverer's CPU per event (/proc/PID/stat).
#
#   make bench-webhooks                          # 5,000/s for 20 s
#   BENCH_WEBHOOK_RATE=2000 make bench-webhooks
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${AUTHORIZER_BIN:-$PWD/.build/release/authorizer}
RATE=${BENCH_WEBHOOK_RATE:-5000}
DURATION=${BENCH_WEBHOOK_DURATION:-20}
ACCOUNTS=${BENCH_ACCOUNTS:-10000}
[ -x "$BIN" ] || { echo "no $BIN; run: swift build -c release" >&2; exit 1; }

BENCH_NAME=authorizer-bench-webhooks
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
port_of() { grep "$1" "$2" | grep -o 'port=[0-9]*' | head -1 | cut -d= -f2; }

REDIS_PORT=$(free_port)
bash scripts/redis-users.sh "$WORK" "$REDIS_PORT"
# shellcheck disable=SC1091
source "$WORK/credentials.env"
redis-server "$PWD/redis.conf" --port "$REDIS_PORT" --dir "$WORK" --aclfile "$WORK/users.acl" --daemonize no --logfile "$WORK/redis.log" >/dev/null &
REDIS_PID=$!; PIDS+=("$REDIS_PID")
wait_for_line "$WORK/redis.log" "Ready to accept connections" "$REDIS_PID"
REDIS_URL="redis://authorizer:$AUTHORIZER_PASSWORD@127.0.0.1:$REDIS_PORT/0"
WEBHOOKS_URL="redis://webhooks:$WEBHOOKS_PASSWORD@127.0.0.1:$REDIS_PORT/0"
"$BIN" rules init --redis "$REDIS_URL" >/dev/null

"$BIN" serve --redis "$REDIS_URL" --port 0 --port-file "$WORK/serve.port" --state-dir "$WORK/state" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!; PIDS+=("$SERVE_PID")
wait_for_line "$WORK/serve.log" "authorizer listening" "$SERVE_PID"
"$BIN" bench receiver --port 0 >"$WORK/receiver.log" 2>&1 &
RECEIVER_PID=$!; PIDS+=("$RECEIVER_PID")
wait_for_line "$WORK/receiver.log" "receiver listening" "$RECEIVER_PID"
umask 077
head -c 32 /dev/urandom | base64 >"$WORK/webhook.secret"
cat >"$WORK/webhooks.yaml" <<YAML
endpoints:
  - name: bench
    url: http://127.0.0.1:$(port_of "receiver listening" "$WORK/receiver.log")/hooks
    secret_file: $WORK/webhook.secret
    events: [authorization.approved]
    max_in_flight: 64
YAML
"$BIN" webhooks deliver --redis "$WEBHOOKS_URL" --config "$WORK/webhooks.yaml" --db "$WORK/webhooks.sqlite" >"$WORK/webhooks.log" 2>&1 &
DELIVERER_PID=$!; PIDS+=("$DELIVERER_PID")
wait_for_line "$WORK/webhooks.log" "consumer ready" "$DELIVERER_PID"

# Seeding writes `set` statements (no event): measure from here.
"$BIN" bench --target "127.0.0.1:$(cat "$WORK/serve.port")" --redis "$REDIS_URL" --accounts "$ACCOUNTS" --seed --rate 100 --duration 1s --connections 8 --json >/dev/null
start_ticks=$(cpu_ticks "$DELIVERER_PID")
started=$(date +%s%N)
echo "open loop: $RATE authorizations/s for ${DURATION}s, every approval a webhook" >&2
load=$("$BIN" bench --target "127.0.0.1:$(cat "$WORK/serve.port")" --accounts "$ACCOUNTS" --rate "$RATE" --duration "${DURATION}s" --connections 16 --json)
approvals=$(grep -o '"00":[0-9]*' <<<"$load" | head -1 | cut -d: -f2)
# Delivered once the outbox is empty again (outcomes are recorded every 100 ms).
for _ in $(seq 1 600); do
    "$BIN" webhooks status --db "$WORK/webhooks.sqlite" | grep -q "nothing stored" && break
    sleep 0.1
done
finished=$(date +%s%N)
ticks=$(( $(cpu_ticks "$DELIVERER_PID") - start_ticks ))
kill -TERM "$RECEIVER_PID"; wait "$RECEIVER_PID" 2>/dev/null || true
summary=$(grep '"events"' "$WORK/receiver.log" | tail -1)
events=$(grep -o '"events":[0-9]*' <<<"$summary" | cut -d: -f2)
awk -v e="$events" -v a="${approvals:-0}" -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v ns=$((finished - started)) -v s="$summary" 'BEGIN {
    printf "webhooks: %d events delivered for %d approvals, %.0f deliveries/s over the run, deliverer CPU %.1f µs per event\n", e, a, e / (ns / 1e9), t * 1e6 / hz / (e > 0 ? e : 1)
    printf "receiver: %s\n", s
}'
