#!/usr/bin/env bash
# Session 20's GPU calls, from the repository root on a fresh machine: carry .gpu/node.xz, .gpu/whl, node_modules/pngjs,
# .gpu/anchor_diffusers.py and .gpu/fam with the CUDA .node of the session's change and dist/.
#   PART=check: the FP8 GPU tests (the review's PackedOut refactor: the same figures as session 19's expected); then
#     SDXL 1024's memory by phase with the VAE loaded in f32 only under force_upcast and a batch of large images
#     decoded one at a time (memory.mjs f16 batch 1 and 4, batch 4 with CANDLEWICK_VAE_AUTO_SLICING=0, FP8 batch 4;
#     memory.py diffusers batch 4 and 1); then SDXL 1024 30 steps batch 4 f16 with the decode sliced (the default) and
#     whole, each in its own process, their images compared (rgb_diff.py); diffusers' torch.compile reduce-overhead at
#     batch 4 for what is left of CALL_S.
#   PART=fill: the max-autotune anchor's tuning goes on (best.sh PHASE=fill); keep $OUT/inductor-tuning.tar.xz.
set -uo pipefail
source "$(dirname "$0")/fam-env.sh"
rows() { python3 -c "import json,sys; [print(r['variant'], r['batch'], round(r['median_s'],4), r.get('fp8'), round(r['peak_gib'],2), r['timings_ms'], r.get('images_sha256')) for r in json.load(open(sys.argv[1]))['rows']]" "$1"; }
case "${PART:-check}" in
check)
  model_folder /tmp/sd15
  fp8_gpu_tests 150
  model_folder /tmp/sdxl sdxl
  stage "SDXL 1024 memory by phase: f16 batch 1 and 4, batch 4 decoded whole, FP8 batch 4"
  SIZE=1024 BATCH=1 timeout 120 node bench/gpu/memory.mjs /tmp/sdxl "$OUT/sdxl-memory-b1-f16.json" 2>&1 | tail -1
  SIZE=1024 BATCH=4 timeout 120 node bench/gpu/memory.mjs /tmp/sdxl "$OUT/sdxl-memory-b4-f16.json" 2>&1 | tail -1
  CANDLEWICK_VAE_AUTO_SLICING=0 SIZE=1024 BATCH=4 timeout 120 node bench/gpu/memory.mjs /tmp/sdxl "$OUT/sdxl-memory-b4-f16-whole.json" 2>&1 | tail -1
  FP8=1 SIZE=1024 BATCH=4 timeout 120 node bench/gpu/memory.mjs /tmp/sdxl "$OUT/sdxl-memory-b4-fp8.json" 2>&1 | tail -1
  stage "diffusers memory by phase, batch 4 and 1"
  for b in 4 1; do
    SIZE=1024 BATCH=$b timeout 150 python3 bench/gpu/memory.py /tmp/sdxl "$OUT/sdxl-memory-b$b-diffusers.json" 2>&1 | grep -v -i -E 'warn|deprecat' | tail -1
  done
  for a in 1 0; do
    stage "SDXL 1024 30 steps batch 4 f16, CANDLEWICK_VAE_AUTO_SLICING=$a"
    CANDLEWICK_VAE_AUTO_SLICING=$a SAVE_RGB=/tmp/slicing$a SIZE=1024 STEPS=30 GUIDANCE=5 RUNS=3 WHICH=fp16+flash+graphs:b4 \
      timeout 120 node bench/gpu/bench.mjs /tmp/sdxl "$OUT/sdxl-b4-slicing$a.json" 2>&1 | tail -1; rows "$OUT/sdxl-b4-slicing$a.json"
  done
  python3 bench/gpu/rgb_diff.py /tmp/slicing1-fp16+flash+graphs:b4.rgb /tmp/slicing0-fp16+flash+graphs:b4.rgb | tee "$OUT/sdxl-b4-slicing-images.json"
  sdxl_compiled_rows compiled:b4 200
  ;;
fill)
  PHASE=fill FILL_S=$(( ${CALL_S:-585} - 15 )) WHICH_FILL=compiled_best bash bench/gpu/best.sh ;;
esac
