#!/usr/bin/env bash
# Stops the nodes `make cluster` started (SIGTERM: they drain, then exit).
cd "$(dirname "$0")/../.."
for i in 1 2 3; do
  f=data/cluster/node$i.pid
  [ -f "$f" ] || continue
  kill "$(cat "$f")" 2>/dev/null && echo "stopped node $i"
  rm -f "$f"
done
