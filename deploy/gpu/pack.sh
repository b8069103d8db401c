#!/usr/bin/env bash
# Packs what deploy/gpu/check.sh needs into one archive for the GPU machine, which has no
# Rust toolchain: stripped release binaries, the server's unit-test binary (the NVML test
# runs against a real driver there) and the demo bundle. The device tool carries at most
# 64 MiB, so the archive is xz (the GPU machine's Python can unpack it without xz(1)).
#   make build model && deploy/gpu/pack.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-out/gpu-carry.tar.xz}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/target/release" "$stage/models" "$(dirname "$out")"
for b in rankd rankctl rankload; do
  strip -o "$stage/target/release/$b" "target/release/$b"
done
export LIBTORCH_USE_PYTORCH=1 PATH=$PWD/.venv/bin:$PATH
unit=$(cargo test -p rankd-server --lib --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "rankd_server":
        print(m["executable"])')
strip -o "$stage/target/release/server-unit" "$unit"
cp -r models/demo "$stage/models/"
tar -C "$stage" -cf - . | xz -T2 -6 > "$out"
ls -la "$out"
