#!/usr/bin/env bash
# Session 19's GPU calls (issue 18's memory under FP8: the quantized layers keep no f16 copy, 9fc1f22), from the
# repository root on a fresh machine: carry .gpu/node.xz, .gpu/whl, node_modules/pngjs and .gpu/fam with the CUDA
# .node of 9fc1f22 and dist/.
#   PART=check: the FP8 GPU tests (FP8 against f16 at 512 and 256, FP8's load memory below f16's, FP8 with a LoRA)
#     on an SD1.5-shaped model; then SDXL 1024's memory by phase (memory.mjs f16 and FP8, memory.py diffusers),
#     batch 1, and batch 4 for what is left of CALL_S.
#   PART=speed: SDXL 1024 30 steps, f16 and FP8 at batch 1 and 4 (bench.mjs: time and peak), then diffusers'
#     torch.compile reduce-overhead at batch 1 and 4 (anchor_families.py) in the same call.
#   PART=workspace (the .node of 46acfe1): SDXL 1024 batch 4, f16, memory by phase and time with cuDNN's workspace
#     shared (one a thread, grown to the largest asked for) and per call (CANDLEWICK_CUDNN_WORKSPACE=per-call).
#   PART=geglu (the .node of the GEGLU-amax commit): the FP8 GPU tests; SDXL 1024 30 steps FP8 with GEGLU writing its
#     largest magnitude (the default) and without (CANDLEWICK_FP8_GEGLU=0), batch 1 (beside f16: vs_f16 must be the same
#     to the last digit) and batch 4, each setting in its own process; then diffusers' torch.compile reduce-overhead at
#     batch 1 for what is left of CALL_S.
#   PART=sd15 (the .node of main at the session's end, 75d1a55; carry .gpu/anchor_diffusers.py too): SD1.5 512 50 steps
#     f16 and FP8 at batch 1 and 8 (bench.mjs), then diffusers' torch.compile reduce-overhead at batch 1 in the same call.
set -uo pipefail
source "$(dirname "$0")/fam-env.sh"
rows() { python3 -c "import json,sys; [print(r['variant'], r['batch'], round(r['median_s'],4), r.get('fp8'), r.get('vs_f16'), round(r['peak_gib'],2)) for r in json.load(open(sys.argv[1]))['rows']]" "$1"; }
memory_rows() { # BATCH
  SIZE=1024 BATCH=$1 timeout 120 node bench/gpu/memory.mjs /tmp/sdxl "$OUT/sdxl-memory-b$1-f16.json" 2>&1 | tail -1
  FP8=1 SIZE=1024 BATCH=$1 timeout 120 node bench/gpu/memory.mjs /tmp/sdxl "$OUT/sdxl-memory-b$1-fp8.json" 2>&1 | tail -1
  SIZE=1024 BATCH=$1 timeout 150 python3 bench/gpu/memory.py /tmp/sdxl "$OUT/sdxl-memory-b$1-diffusers.json" 2>&1 | grep -v -i -E 'warn|deprecat' | tail -1
}
case "${PART:-check}" in
check)
  model_folder /tmp/sd15
  stage "LoRA"; python3 bench/gpu/make_lora.py /tmp/sd15 /tmp/lora16.safetensors 16 2>&1 | tail -1
  CANDLEWICK_GPU_LORA=/tmp/lora16.safetensors fp8_gpu_tests 180
  model_folder /tmp/sdxl sdxl
  stage "SDXL 1024 memory by phase, batch 1: f16, FP8, diffusers"; memory_rows 1
  left=$(( ${CALL_S:-560} - SECONDS ))
  if [ $left -gt 200 ]; then stage "SDXL 1024 memory by phase, batch 4 (${left}s left)"; memory_rows 4; fi
  ;;
speed)
  model_folder /tmp/sdxl sdxl
  stage "SDXL 1024 30 steps: f16 and FP8, batch 1 and 4"
  SIZE=1024 STEPS=30 GUIDANCE=5 RUNS=3 WHICH=fp16+flash+graphs,fp16+flash+graphs+fp8,fp16+flash+graphs:b4,fp16+flash+graphs+fp8:b4 \
    timeout 200 node bench/gpu/bench.mjs /tmp/sdxl "$OUT/sdxl-candlewick.json" 2>&1 | tail -1; rows "$OUT/sdxl-candlewick.json"
  left=$(( ${CALL_S:-580} - SECONDS ))
  stage "diffusers torch.compile reduce-overhead, batch 1 and 4 (${left}s left)"
  timeout $(( left - 5 )) python3 bench/gpu/anchor_families.py /tmp/sdxl "$OUT/sdxl-compiled-diffusers.jsonl" compiled:b1,compiled:b4 \
    2>&1 | grep -v -i -E 'warn|deprecat' | tail -3
  cat "$OUT/sdxl-compiled-diffusers.jsonl"
  ;;
workspace)
  model_folder /tmp/sdxl sdxl
  for ws in shared per-call; do
    stage "SDXL 1024 batch 4 f16, cuDNN workspace $ws: memory by phase"
    CANDLEWICK_CUDNN_WORKSPACE=$ws SIZE=1024 BATCH=4 timeout 120 node bench/gpu/memory.mjs /tmp/sdxl "$OUT/sdxl-memory-b4-ws-$ws.json" 2>&1 | tail -1
  done
  for ws in shared per-call; do
    stage "SDXL 1024 30 steps batch 4 f16, cuDNN workspace $ws: time"
    CANDLEWICK_CUDNN_WORKSPACE=$ws SIZE=1024 STEPS=30 GUIDANCE=5 RUNS=3 WHICH=fp16+flash+graphs:b4 \
      timeout 120 node bench/gpu/bench.mjs /tmp/sdxl "$OUT/sdxl-b4-ws-$ws.json" 2>&1 | tail -1; rows "$OUT/sdxl-b4-ws-$ws.json"
    python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['rows'][0]['timings_ms'])" "$OUT/sdxl-b4-ws-$ws.json"
  done
  ;;
geglu)
  model_folder /tmp/sd15
  fp8_gpu_tests 120
  model_folder /tmp/sdxl sdxl
  for g in 1 0; do
    stage "SDXL 1024 30 steps f16 and FP8 (CANDLEWICK_FP8_GEGLU=$g) batch 1, FP8 batch 4"
    CANDLEWICK_FP8_GEGLU=$g SIZE=1024 STEPS=30 GUIDANCE=5 RUNS=3 WHICH=fp16+flash+graphs,fp16+flash+graphs+fp8,fp16+flash+graphs+fp8:b4 \
      timeout 150 node bench/gpu/bench.mjs /tmp/sdxl "$OUT/sdxl-geglu$g.json" 2>&1 | tail -1; rows "$OUT/sdxl-geglu$g.json"
  done
  sdxl_compiled_rows compiled:b1 170
  ;;
sd15)
  model_folder /tmp/sd15
  stage "SD1.5 512 50 steps: f16 and FP8, batch 1 and 8"
  SIZE=512 STEPS=50 WHICH=fp16+flash+graphs,fp16+flash+graphs+fp8,fp16+flash+graphs:b8,fp16+flash+graphs+fp8:b8 \
    timeout 120 node bench/gpu/bench.mjs /tmp/sd15 "$OUT/sd15.json" 2>&1 | tail -1; rows "$OUT/sd15.json"
  left=$(( ${CALL_S:-330} - SECONDS ))
  stage "diffusers torch.compile reduce-overhead, SD1.5 batch 1 (${left}s left)"
  WHICH=compiled_ro FLOPS=0 OUT=$OUT timeout $(( left - 5 )) python3 .gpu/anchor_diffusers.py 2>&1 | grep -v -i warn | tail -3
  mv "$OUT/anchor_diffusers.json" "$OUT/diffusers-sd15.json" 2>/dev/null; true
  ;;
esac
