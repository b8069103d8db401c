#!/usr/bin/env bash
# Starts a local 3-node rankd cluster (deploy/cluster/node{1,2,3}.toml), forms it, uploads
# the demo bundle through node 1 and promotes it. Logs and pids go to data/cluster/.
# Stop it with `make cluster-down`.
set -euo pipefail
cd "$(dirname "$0")/../.."
RANKD=target/release/rankd
RANKCTL=target/release/rankctl
mkdir -p data/cluster
for i in 1 2 3; do
  if [ -f data/cluster/node$i.pid ] && kill -0 "$(cat data/cluster/node$i.pid)" 2>/dev/null; then
    echo "node $i is already running (pid $(cat data/cluster/node$i.pid)); make cluster-down first" >&2
    exit 1
  fi
done
for i in 1 2 3; do
  nohup "$RANKD" serve --config deploy/cluster/node$i.toml >data/cluster/node$i.log 2>&1 &
  echo $! >data/cluster/node$i.pid
done
for i in 1 2 3; do
  for _ in $(seq 1 600); do
    grep -q '^rankd: serving' data/cluster/node$i.log && break
    kill -0 "$(cat data/cluster/node$i.pid)" 2>/dev/null || { cat data/cluster/node$i.log >&2; exit 1; }
    sleep 0.1
  done
done
echo "--- three nodes up; forming the cluster"
# A node restarted from its data dir is already a member: init only a fresh cluster.
if ! "$RANKCTL" cluster status --addr http://127.0.0.1:50051 >/dev/null 2>&1; then
  "$RANKCTL" cluster init --addr http://127.0.0.1:50051 \
    --member 1=127.0.0.1:50051,127.0.0.1:50061 \
    --member 2=127.0.0.1:50052,127.0.0.1:50062 \
    --member 3=127.0.0.1:50053,127.0.0.1:50063
fi
VERSION=$(python3 -c 'import json;print(json.load(open("models/demo/manifest.json"))["version"])')
NAME=$(python3 -c 'import json;print(json.load(open("models/demo/manifest.json"))["name"])')
echo "--- uploading $NAME $VERSION through node 1 and promoting it"
"$RANKCTL" upload models/demo --addr http://127.0.0.1:50051
"$RANKCTL" promote "$VERSION" --name "$NAME" --addr http://127.0.0.1:50052
"$RANKCTL" cluster status --addr http://127.0.0.1:50053
