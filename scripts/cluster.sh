#!/usr/bin/env bash
# A local Redis Cluster for `make run-cluster`: 3 masters with REPLICAS
# replicas each (default 1: ports 7001-7006; 2: ports 7001-7009, a replica to
# spare, so that after a master's loss the promoted replica still has one and
# approvals resume with `--replica-acks 1` without anybody restarting a node),
# cluster bus +10000, data in DIR/cluster/PORT, the project's redis.conf plus
# the cluster options, the project's ACL users on every node (replicas log in
# to their master as `replication`).
#
#   scripts/cluster.sh up DIR     start the nodes (and create the cluster once)
#   scripts/cluster.sh down DIR   stop them (every port up to 7009)
set -euo pipefail
action=${1:?up or down}
data=${2:?data dir}
root=$(cd "$(dirname "$0")/.." && pwd)
replicas=${REPLICAS:-1}
case "$replicas" in
1) ports=(7001 7002 7003 7004 7005 7006) ;;
2) ports=(7001 7002 7003 7004 7005 7006 7007 7008 7009) ;;
*) echo "REPLICAS must be 1 or 2" >&2; exit 2 ;;
esac
[ "$action" = down ] && ports=(7001 7002 7003 7004 7005 7006 7007 7008 7009)
bash "$root/scripts/redis-users.sh" "$data" 7001 >/dev/null
# shellcheck disable=SC1091
source "$data/credentials.env"
cli() { redis-cli --user default --pass "$REDIS_ADMIN_PASSWORD" --no-auth-warning "$@"; }

case "$action" in
up)
    for port in "${ports[@]}"; do
        dir="$data/cluster/$port"
        mkdir -p "$dir"
        if cli -p "$port" ping 2>/dev/null | grep -q PONG; then continue; fi
        redis-server "$root/redis.conf" --port "$port" --dir "$dir" --daemonize yes \
            --aclfile "$data/users.acl" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
            --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
            --cluster-require-full-coverage no \
            --masteruser replication --masterauth "$REPLICATION_PASSWORD"
    done
    for port in "${ports[@]}"; do
        for _ in $(seq 1 100); do cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
    done
    if ! cli -p 7001 cluster info | grep -q "cluster_known_nodes:${#ports[@]}"; then
        cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas "$replicas" --cluster-yes >/dev/null
    fi
    for _ in $(seq 1 200); do
        cli -p 7001 cluster info | grep -q 'cluster_state:ok' && break
        sleep 0.05
    done
    cli -p 7001 cluster info | grep -q 'cluster_state:ok' || { echo "the cluster is not ok; see $data/cluster/*/redis.log"; exit 1; }
    # Seeds for the CLI and serve: every master, as the authorizer user.
    seeds=$(printf "redis://authorizer:${AUTHORIZER_PASSWORD}@127.0.0.1:%s/0," 7001 7002 7003)
    cat > "$data/cluster.env" <<URLS
export AUTHORIZER_REDIS_URL=${seeds%,}
export AUTHORIZER_REPLAYER_REDIS_URL=redis://replayer:${REPLAYER_PASSWORD}@127.0.0.1:7001/0
export AUTHORIZER_WEBHOOKS_REDIS_URL=redis://webhooks:${WEBHOOKS_PASSWORD}@127.0.0.1:7001/0
export AUTHORIZER_OPERATOR_REDIS_URL=redis://operator:${OPERATOR_PASSWORD}@127.0.0.1:7001/0
export REDISCLI_AUTH=${REDIS_ADMIN_PASSWORD}
export AUTHORIZER_PAN_KEY=${PAN_INDEX_KEY}
URLS
    echo "redis cluster up on 127.0.0.1:7001-${ports[-1]} (data in $data/cluster; URLs in $data/cluster.env)"
    ;;
down)
    for port in "${ports[@]}"; do
        cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
    ;;
*)
    echo "usage: $0 up|down DIR" >&2
    exit 2
    ;;
esac
