#!/usr/bin/env bash
# What TLS costs a Rank call: two nodes with the same model and settings, one plaintext
# (insecure-dev) and one with TLS on its client port, driven alternately by the same
# open-loop load over one connection each (rankload load --plain), release binaries.
# Usage: deploy/bench/tls.sh [RATE] [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:-300} secs=${2:-15} rounds=${3:-2}
work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
target/release/rankctl certs generate --out "$work/pki" --name rankd-node --hosts localhost,127.0.0.1 >/dev/null
target/release/rankctl keys generate --out "$work/keyring.toml" >/dev/null

start() { # name, extra TOML
  cat > "$work/$1.toml" <<TOML
node_id = "$1"
data_dir = "$work/$1-data"
[server]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
runtime_threads = 1
[artifacts]
keyring = "$work/keyring.toml"
scrub_interval_s = 0
[model]
bundle = "models/demo"
device = "cpu"
torch_threads = 1
[cluster]
peer_listen = "127.0.0.1:0"
[log]
level = "warn"
[auth]
mode = "insecure-dev"
$2
TOML
  target/release/rankd serve --config "$work/$1.toml" > "$work/$1.out" 2> "$work/$1.err" &
  echo $! > "$work/$1.pid"
  for _ in $(seq 600); do grep -q "rankd: serving" "$work/$1.out" && break; sleep 0.1; done
  sed -E 's/.*grpc=([^ ]+).*/\1/' "$work/$1.out"
}
plain=$(start plain '[tls]
mode = "insecure-dev"')
tls=$(start tls "[tls]
client = { cert = \"$work/pki/rankd-node.crt\", key = \"$work/pki/rankd-node.key\" }
peer = { cert = \"$work/pki/rankd-node.crt\", key = \"$work/pki/rankd-node.key\", ca = \"$work/pki/ca.crt\", allowed_names = [\"rankd-node\"] }")

run() { # label, addr, extra flags
  target/release/rankload load --plain --addrs "$2" --rate "$rate" --duration "${secs}s" \
    --candidates 100 --out "$work/$1.json" $3 >/dev/null 2>&1
  python3 - "$work/$1.json" "$1" <<'PY'
import json, sys
calls = json.load(open(sys.argv[1]))["calls"]
ok = sorted(c["latency_us"] for c in calls if c.get("code", "OK") == "OK")
q = lambda p: ok[min(len(ok) - 1, int(p * len(ok)))]
print(f"{sys.argv[2]:<6} calls {len(calls):>6} ok {len(ok):>6} p50 {q(0.5):>5} us  p90 {q(0.9):>5} us  p99 {q(0.99):>6} us  mean {sum(ok)/len(ok):>7.0f} us")
PY
}
echo "rankload load --plain --rate $rate --duration ${secs}s --candidates 100, $rounds rounds, alternating"
for i in $(seq "$rounds"); do
  run plain "$plain" ""
  run tls "$tls" "--ca-cert $work/pki/ca.crt"
done
