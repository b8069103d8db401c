#!/usr/bin/env bash
# GPU memory on /metrics (rankd_gpu_memory_bytes) from a real node on CUDA: start one node
# on cuda, rank through it, scrape, and require the process figure to be non-zero and no
# larger than what the driver reports in use. Run by check.sh; writes $OUT/metrics-*.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench-out/gpu}
DEVICE=${DEVICE:-cuda}   # cpu only to rehearse this script on a host without a GPU
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT

target/release/rankctl keys generate --out "$work/keyring.toml" >/dev/null
sed -e "s|^data_dir = .*|data_dir = \"$work/data\"|" \
    -e 's|^keyring = .*|keyring = "'"$work"'/keyring.toml"|' \
    -e 's|^target = .*|target = "'"$work"'/backups"|' \
    -e "s|^device = .*|device = \"$DEVICE\"|" \
    -e 's|^listen = .*|listen = "127.0.0.1:0"|' \
    -e 's|^metrics_listen = .*|metrics_listen = "127.0.0.1:0"|' \
    -e 's|^peer_listen = .*|peer_listen = "127.0.0.1:0"|' \
    deploy/rankd.toml > "$work/rankd.toml"
target/release/rankd serve --config "$work/rankd.toml" > "$work/stdout" 2> "$OUT/metrics-rankd.log" &
pid=$!
for _ in $(seq 600); do
  grep -q '^rankd: serving' "$work/stdout" && break
  kill -0 "$pid" 2>/dev/null || { echo "FAIL: rankd exited before serving"; exit 1; }
  sleep 0.1
done
line=$(grep '^rankd: serving' "$work/stdout") || { echo "FAIL: rankd did not start serving"; exit 1; }
grpc=$(sed -E 's/.*grpc=([^ ]+).*/\1/' <<<"$line")
metrics=$(sed -E 's/.*metrics=([^ ]+).*/\1/' <<<"$line")
for _ in 1 2 3; do
  target/release/rankctl rank --addr "http://$grpc" --query-file models/demo/example_query.json > "$OUT/metrics-rank.txt" || { echo "FAIL: rank"; exit 1; }
done

# The sampler runs every 5 s; wait for a scrape that carries the series.
python3 - "$metrics" "$OUT/metrics-scrape.txt" <<'PY'
import re, sys, time, urllib.request
addr, out = sys.argv[1], sys.argv[2]
deadline = time.time() + 30
while True:
    text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
    series = {(m[1], m[2]): int(float(m[3])) for m in
              re.finditer(r'^rankd_gpu_memory_bytes\{gpu="(\d+)",kind="(\w+)"\} (\S+)$', text, re.M)}
    if any(k == "process" for _, k in series) or time.time() > deadline:
        break
    time.sleep(0.5)
open(out, "w").write(text)
info = [l for l in text.splitlines() if l.startswith("rankd_model_info")]
print("model:", info)
print("gpu memory:", series)
ok = False
for (gpu, kind), v in series.items():
    if kind == "process":
        used, total = series[(gpu, "used")], series[(gpu, "total")]
        print(f"gpu {gpu}: process {v/2**20:.0f} MiB, used {used/2**20:.0f} MiB, total {total/2**30:.1f} GiB")
        ok = 0 < v <= used <= total and any('device="cuda' in l for l in info)
if not ok:
    print("FAIL: no rankd_gpu_memory_bytes process figure for a model on cuda")
    sys.exit(1)
print("PASS: rankd_gpu_memory_bytes")
busy = re.findall(r'^rankd_gpu_utilization_ratio\{gpu="(\d+)"\} (\S+)$', text, re.M)
print("gpu utilisation:", busy)
if not busy or not all(0.0 <= float(v) <= 1.0 for _, v in busy):
    print("FAIL: no rankd_gpu_utilization_ratio in [0, 1] on a host with the driver")
    sys.exit(1)
print("PASS: rankd_gpu_utilization_ratio")
PY
