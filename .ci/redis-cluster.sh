#!/usr/bin/env bash
# Sourced by .ci/run: start_redis_cluster N starts N redis-server masters with cluster mode on, on free ports,
# in a directory of their own, creates the cluster (redis-cli --cluster create) and waits for cluster_state:ok on
# every node. Sets REDIS_CLUSTER_NODE_LIST (host:port,...); stop_redis_cluster kills them and removes the directory.

REDIS_CLUSTER_DIR=""
REDIS_CLUSTER_PIDS=()
REDIS_CLUSTER_NODE_LIST=""

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

start_redis_cluster() {
  local masters="$1" port nodes=() i
  REDIS_CLUSTER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/flashsale-ci-cluster.XXXXXX")"
  for ((i = 0; i < masters; i++)); do
    port="$(free_port)"
    mkdir -p "$REDIS_CLUSTER_DIR/$port"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$REDIS_CLUSTER_DIR/$port/nodes.conf" --cluster-node-timeout 2000 \
      --save "" --appendonly no --dir "$REDIS_CLUSTER_DIR/$port" >"$REDIS_CLUSTER_DIR/$port/log" 2>&1 &
    REDIS_CLUSTER_PIDS+=("$!")
    nodes+=("127.0.0.1:$port")
  done
  for node in "${nodes[@]}"; do
    wait_until 30 redis-cli -p "${node##*:}" ping || return 1
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$REDIS_CLUSTER_DIR/create.log" 2>&1 ||
    return 1
  for node in "${nodes[@]}"; do
    wait_until 30 bash -c "redis-cli -p ${node##*:} cluster info | grep -q cluster_state:ok" || return 1
  done
  REDIS_CLUSTER_NODE_LIST="$(IFS=,; echo "${nodes[*]}")"
}

stop_redis_cluster() {
  local pid
  for pid in "${REDIS_CLUSTER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${REDIS_CLUSTER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  REDIS_CLUSTER_PIDS=()
  if [ -n "$REDIS_CLUSTER_DIR" ]; then rm -rf "$REDIS_CLUSTER_DIR"; fi
  REDIS_CLUSTER_DIR=""
}
