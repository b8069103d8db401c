#!/usr/bin/env bash
# Model-store timings over loopback with release binaries: upload (pack, stream, validate,
# encrypt, store) and cold start (verify, decrypt, load, warm up, golden set) via
# activation. Usage: deploy/bench/store.sh BUNDLE_DIR [BUNDLE_DIR...]
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
target/release/rankctl keys generate --out "$work/keyring.toml" >/dev/null
cat > "$work/rankd.toml" <<TOML
node_id = "store-bench"
data_dir = "$work/data"
[server]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
[artifacts]
keyring = "$work/keyring.toml"
scrub_interval_s = 0
[model]
device = "cpu"
[log]
level = "warn"
[tls]
mode = "insecure-dev"
[auth]
mode = "insecure-dev"
TOML
target/release/rankd serve --config "$work/rankd.toml" > "$work/out" 2> "$work/err" &
echo $! > "$work/pid"
for _ in $(seq 600); do grep -q "rankd: serving" "$work/out" && break; sleep 0.1; done
addr="http://$(grep -o 'grpc=[0-9.:]*' "$work/out" | cut -d= -f2)"
for bundle in "$@"; do
  name=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['name'])" "$bundle/manifest.json")
  version=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['version'])" "$bundle/manifest.json")
  echo "== $bundle ($(du -sh "$bundle" | cut -f1))"
  target/release/rankctl upload "$bundle" --addr "$addr"
  target/release/rankctl activate --name "$name" --version "$version" --addr "$addr"
done
