#!/usr/bin/env bash
# The GPU checks of issues 14 and 15 in two calls on one warm machine (bench/NOTES.md, 2026-12-02):
#   (letters: see PART below)
#   PART=RPXC  carry [.gpu, node_modules/pngjs/lib, node_modules/pngjs/package.json]:
#           .gpu/{node.xz, whl/, anchor_diffusers.py, builds/<name>/{candlewick.node.xz, dist/}}
#           SD1.5-shaped model + diffusers' f32 reference (reference.py), parity of each build,
#           same-call A/B of the builds (ab.mjs), scheduler rows of the first build beside diffusers.
#   PART=T  carry [.gpu-pkgs, .gpu/builds/<first>/dist]: the packed tarballs installed and generating
#           (tarball.sh), then the GPU JavaScript tests (test/gpu) on the first build.
#   PART=S  sync check and compute-sanitizer over one tiny generate with each build (SANITIZE=<names>).
# BUILDS="main wing": the builds under .gpu/builds, the first being the baseline.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/candlewick-out}; mkdir -p "$OUT"
W=/tmp/cw; R=$PWD/.gpu-run; MODEL=/tmp/sd15; BUILDS=${BUILDS:-main}
started=$SECONDS
stage() { echo; echo "== [$((SECONDS - started))s] $*"; }
mkdir -p $W $R
[ -f .gpu/node.xz ] && [ ! -x $W/node ] && xz -dc .gpu/node.xz > $W/node && chmod +x $W/node
for b in $BUILDS; do
  [ -f .gpu/builds/$b/candlewick.node.xz ] && [ ! -f $W/$b.node ] && xz -dc .gpu/builds/$b/candlewick.node.xz > $W/$b.node
  [ -d .gpu/builds/$b/dist ] && rm -rf $R/dist-$b && cp -r .gpu/builds/$b/dist $R/dist-$b
done
export PATH=$W:$PATH
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
ls .gpu/whl/*.whl > /dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site
first=${BUILDS%% *}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
# The repo's dist/ is the first build's, for the scripts that import ../../dist.
rm -rf dist && cp -r $R/dist-$first dist 2>/dev/null

# Parts (letters, any order of calls on one warm machine): R the SD1.5-shaped model and diffusers'
# reference; P parity of each build; X the A/B of the first two builds; C the scheduler rows (first
# build, then diffusers); T the packed tarballs and the GPU JavaScript tests; S each build's failure
# located: CANDLEWICK_CUDA_SYNC_CHECK=1 with graphs off, then compute-sanitizer.
PART=${PART:-RPXC}
if [[ $PART == *R* ]]; then
  stage "model + diffusers reference"
  PARITY_STEPS=20 timeout 240 python3 bench/gpu/reference.py $MODEL 2>&1 | grep -v Warning | tail -3
fi
if [[ $PART == *P* ]]; then
  for b in $BUILDS; do
    stage "parity: $b"
    rm -rf dist && cp -r $R/dist-$b dist
    CANDLEWICK_NATIVE_LIBRARY_PATH=$W/$b.node timeout 150 node bench/gpu/parity.mjs $MODEL "$OUT" 2>&1 | tail -8 | cut -c1-600
    mkdir -p "$OUT/parity-$b" && mv "$OUT"/parity-*.json "$OUT/parity-$b/" 2>/dev/null
  done
  rm -rf dist && cp -r $R/dist-$first dist
fi
if [[ $PART == *X* ]]; then
  set -- $BUILDS
  stage "A/B: $1 against $2"
  timeout 300 node bench/gpu/ab.mjs $MODEL "$OUT/ab.json" $1 $R/dist-$1 $W/$1.node $2 $R/dist-$2 $W/$2.node 2>&1 | tee "$OUT/ab.txt" | grep -v " round " | cut -c1-600
fi
if [[ $PART == *C* ]]; then
  stage "scheduler rows: candlewick ($first)"
  CANDLEWICK_NATIVE_LIBRARY_PATH=$W/$first.node timeout 200 node bench/gpu/schedulers.mjs $MODEL "$OUT/schedulers-candlewick.json" 2>&1 | cut -c1-220
  stage "scheduler rows: diffusers"
  timeout 240 python3 bench/gpu/schedulers.py $MODEL "$OUT/schedulers-diffusers.json" 2>&1 | grep -v -i warn | cut -c1-300
fi
if [[ $PART == *T* ]]; then
  stage "packed tarballs, installed and generating"
  timeout 150 bash bench/gpu/tarball.sh .gpu-pkgs "$OUT" 2>&1 | cut -c1-400
  stage "GPU JavaScript tests ($first)"
  app=$(ls -d /tmp/app-* | head -1)
  cp -rn $app/node_modules/candlewick/test/fixtures/tiny-sd/. test/fixtures/tiny-sd/
  [ -d $MODEL ] && export CANDLEWICK_GPU_MODEL=$MODEL
  CANDLEWICK_NATIVE_LIBRARY_PATH=$W/$first.node CANDLEWICK_GPU_RESULTS=$OUT timeout 240 node --expose-gc --test test/gpu/ 2>&1 | tee "$OUT/test-gpu.txt" | grep -E "^# (pass|fail)|^not ok" 
fi
if [[ $PART == *S* ]]; then
  SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)
  for b in ${SANITIZE:-$BUILDS}; do
    export DIST_URL=file://$R/dist-$b/index.js CANDLEWICK_NATIVE_LIBRARY_PATH=$W/$b.node
    stage "sync check, graphs off: $b"
    CANDLEWICK_CUDA_SYNC_CHECK=1 LOAD='{"cudaGraphs": false}' timeout 120 node bench/gpu/one.mjs $MODEL 2>&1 | tee "$OUT/sync-check-$b.txt" | cut -c1-400 | head -30
    stage "sync check, graphs on: $b"
    CANDLEWICK_CUDA_SYNC_CHECK=1 timeout 120 node bench/gpu/one.mjs $MODEL 2>&1 | tee -a "$OUT/sync-check-$b.txt" | cut -c1-400 | head -30
    stage "compute-sanitizer, graphs off: $b"
    LOAD='{"cudaGraphs": false}' timeout 200 $SAN --print-limit 5 node bench/gpu/one.mjs $MODEL 2>&1 | tee "$OUT/sanitizer-$b.txt" | cut -c1-400 | head -50
  done
fi
stage "done"
ls -la "$OUT"
