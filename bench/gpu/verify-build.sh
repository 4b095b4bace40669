#!/usr/bin/env bash
# One CUDA build checked on the GPU test machine in one call: one small generate on each model folder
# given (tiny-sd's odd group widths included) with CANDLEWICK_CUDA_SYNC_CHECK=1, graphs off and on, and
# under compute-sanitizer; then the GPU JavaScript tests on the SD1.5-shaped model.
#   device tool: run command="B=wing bash bench/gpu/verify-build.sh test/fixtures/tiny-sd"
#     carry=[.gpu/node.xz, .gpu/builds/$B, .gpu/whl, .gpu/tiny-sd (tiny-sd without its fp16 files, for the 64 MiB), node_modules/pngjs/lib, node_modules/pngjs/package.json]
#   .gpu/builds/$B: candlewick.node.xz, dist/, and gpu.test.mjs when the build's tests differ from the tree's.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/candlewick-out}; B=${B:-wing}; W=/tmp/cw; MODEL=/tmp/sd15
mkdir -p $W; export PATH=$W:$PATH LD_LIBRARY_PATH=/usr/local/cuda/lib64
[ -x $W/node ] || { xz -dc .gpu/node.xz > $W/node && chmod +x $W/node; }
xz -dc .gpu/builds/$B/candlewick.node.xz > $W/$B.node
export CANDLEWICK_NATIVE_LIBRARY_PATH=$W/$B.node
rm -rf dist && cp -r .gpu/builds/$B/dist dist
[ -d .gpu/tiny-sd ] && rm -rf test/fixtures/tiny-sd && cp -r .gpu/tiny-sd test/fixtures/tiny-sd
[ -f .gpu/builds/$B/gpu.test.mjs ] && cp .gpu/builds/$B/gpu.test.mjs test/gpu/gpu.test.mjs
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl 2>/dev/null; export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
[ -d $MODEL ] || MODEL_ONLY=1 timeout 150 python3 bench/gpu/reference.py $MODEL 2>&1 | grep -v -i warn | tail -1
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)
for m in "$@" $MODEL; do
  for load in '{"cudaGraphs": false}' '{"cudaGraphs": true}'; do
    echo "== $m $load, sync check"
    LOAD=$load CANDLEWICK_CUDA_SYNC_CHECK=1 timeout 90 node bench/gpu/one.mjs $m 256 2>&1 | grep -v "^    at " | grep -v '^loaded' | head -8 | cut -c1-300
  done
  echo "== $m, compute-sanitizer, graphs off"
  LOAD='{"cudaGraphs": false}' timeout 200 $SAN --print-limit 3 node bench/gpu/one.mjs $m 256 2>&1 | grep -E "ERROR SUMMARY|Invalid|generated|Error" | head -8 | cut -c1-300
done 2>&1 | tee "$OUT/verify-$B.txt"
echo "== GPU JavaScript tests ($B)"
CANDLEWICK_GPU_MODEL=$MODEL CANDLEWICK_GPU_RESULTS=$OUT timeout 240 node --expose-gc --test test/gpu/ 2>&1 | tee "$OUT/test-gpu-$B.txt" | grep -E "^# (pass|fail)|^not ok"
