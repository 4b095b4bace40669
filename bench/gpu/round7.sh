#!/usr/bin/env bash
# Session 18's GPU call (issue 21's FP8 lever), from the repository root on a fresh machine: carry .gpu/node.xz, .gpu/whl,
# node_modules/pngjs and .gpu/fam with the CUDA .node of 81d7330 (LayerNorms writing e4m3 for the FP8 layer after them):
#   the FP8 GPU tests (FP8 against f16, FP8 with a LoRA) on the new path;
#   SD1.5 512 50 steps and SDXL 1024 30 steps, f16 and FP8 with the LayerNorms quantizing (the default) in one process,
#   then the same with CANDLEWICK_FP8_NORM=0 (the quantizer's two passes, as before) in another: the A/B;
#   SDXL batch 4 the same way, for what is left of CALL_S.
set -uo pipefail
source "$(dirname "$0")/fam-env.sh"
model_folder /tmp/sd15
stage "LoRA"; python3 bench/gpu/make_lora.py /tmp/sd15 /tmp/lora16.safetensors 16 2>&1 | tail -1
stage "GPU tests: FP8, FP8 with a LoRA"
CANDLEWICK_GPU_MODEL=/tmp/sd15 CANDLEWICK_GPU_LORA=/tmp/lora16.safetensors timeout 150 node --test --test-name-pattern "FP8" \
  test/gpu/gpu.test.mjs 2>&1 | tee "$OUT/check-test.txt" | grep -E "^# (pass|fail|skip)|^not ok|^ok|rror|_db" | head -20
rows() { python3 -c "import json,sys; [print(r['variant'], r['batch'], round(r['median_s'],4), r.get('fp8'), r.get('vs_f16'), round(r['peak_gib'],2)) for r in json.load(open(sys.argv[1]))['rows']]" "$1"; }
for norm in 1 0; do
  stage "SD1.5 512: f16 and FP8 (CANDLEWICK_FP8_NORM=$norm), batch 1 and 8"
  CANDLEWICK_FP8_NORM=$norm SIZE=512 STEPS=50 WHICH=fp16+flash+graphs,fp16+flash+graphs+fp8,fp16+flash+graphs:b8,fp16+flash+graphs+fp8:b8 \
    timeout 120 node bench/gpu/bench.mjs /tmp/sd15 "$OUT/sd15-norm$norm.json" 2>&1 | tail -1; rows "$OUT/sd15-norm$norm.json"
done
model_folder /tmp/sdxl sdxl
for norm in 1 0; do
  stage "SDXL 1024 30 steps: f16 and FP8 (CANDLEWICK_FP8_NORM=$norm)"
  CANDLEWICK_FP8_NORM=$norm SIZE=1024 STEPS=30 GUIDANCE=5 RUNS=3 WHICH=fp16+flash+graphs,fp16+flash+graphs+fp8 \
    timeout 150 node bench/gpu/bench.mjs /tmp/sdxl "$OUT/sdxl-norm$norm.json" 2>&1 | tail -1; rows "$OUT/sdxl-norm$norm.json"
done
for norm in 1 0; do
  left=$(( ${CALL_S:-560} - SECONDS ))
  [ $left -gt 100 ] || break
  stage "SDXL 1024 30 steps batch 4: FP8 (CANDLEWICK_FP8_NORM=$norm) (${left}s left)"
  CANDLEWICK_FP8_NORM=$norm SIZE=1024 STEPS=30 GUIDANCE=5 RUNS=2 WHICH=fp16+flash+graphs+fp8:b4 \
    timeout $(( left - 10 )) node bench/gpu/bench.mjs /tmp/sdxl "$OUT/sdxl-b4-norm$norm.json" 2>&1 | tail -1; rows "$OUT/sdxl-b4-norm$norm.json"
done
