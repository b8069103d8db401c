#!/usr/bin/env bash
# Every GPU check and benchmark in one run (see docs/gpu.md). Expects release binaries in
# target/release and the demo bundle in models/demo, built on the development machine
# (deploy/gpu/pack.sh packs them). SKIP_BENCH=1 runs the checks without the benchmarks.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench-out/gpu}
mkdir -p "$OUT"
TORCH_LIB=$(python3 -c "import torch, os; print(os.path.dirname(torch.__file__))")/lib
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
SECONDS_LAT=${SECONDS_LAT:-3}
SECONDS_TP=${SECONDS_TP:-5}

{
  echo "== date";    date -u +%FT%TZ
  echo "== gpu";     nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  echo "== torch";   python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())"
  echo "== linked";  readelf -d target/release/rankd | grep NEEDED
} > "$OUT/env.txt" 2>&1
grep -q libtorch_cuda.so "$OUT/env.txt" || echo "FAIL: libtorch_cuda.so is not linked" | tee -a "$OUT/env.txt"

status=0
if [ -x target/release/server-unit ]; then
  echo "== server unit tests (NVML against the real driver)"
  target/release/server-unit gpu_memory 2>&1 | tee "$OUT/server-unit.txt" || status=1
fi
echo "== rankd_gpu_memory_bytes from a node on cuda"
OUT="$OUT" deploy/gpu/metrics-check.sh 2>&1 | tee "$OUT/metrics-check.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

[ "${SKIP_BENCH:-0}" = 1 ] && exit $status
# The third run polls instead of sleeping (batching.idle_spin_us): the GPU host has cores to
# spare for it, which the 2-core dev VM does not at default thread counts.
for run in fp32:0 fp16:0 "fp32:${IDLE_SPIN_US:-2000}"; do
  precision=${run%%:*} spin=${run#*:}
  name="bench-cuda-$precision"
  [ "$spin" = 0 ] || name="$name-spin$spin"
  echo "== rankload bench cuda $precision, idle spin $spin us"
  target/release/rankload bench --bundle models/demo --rankd target/release/rankd \
    --device cuda --precision "$precision" --max-batch-size 256 --candidates 100,1000 \
    --concurrency 512 --connections 8 --idle-spin-us "$spin" \
    --latency-seconds "$SECONDS_LAT" --throughput-seconds "$SECONDS_TP" \
    --machine "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" \
    --out "$OUT/$name.json" 2>&1 | tee "$OUT/$name.txt" || status=1
done
exit $status
