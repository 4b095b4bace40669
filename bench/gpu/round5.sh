#!/usr/bin/env bash
# Session 16's GPU calls (issues 21 and 18), back to back on one machine, from the repository root:
#   PART=check  carry .gpu/node.xz, .gpu/whl, .gpu/fam (an incremental CUDA build of this session's main: the
#               FP8 linear layers), node_modules/pngjs, .gpu/anchor_diffusers.py: test/gpu's FP8, pinned-upload
#               and plan-cache tests on an SD1.5-shaped model; bench.mjs with FP8 off and on (SD1.5 512 50 steps,
#               batch 1 and 8; SDXL 1024 30 steps guidance 5, batch 1), each FP8 row's image against the f16
#               one (vs_f16); three fresh processes (the load after the LoRA record's re-read); diffusers'
#               torch.compile reduce-overhead and eager at batch 1 in the same call; then the max-autotune
#               anchor's fill (best.sh) for what is left of the call (CALL_S, default 585 s), which writes
#               $OUT/inductor-tuning.tar.xz (commit it as bench/gpu/inductor-tuning.tar.xz: best.sh unpacks it, so the next
#               session's fill goes on from it).
#   PART=fill   best.sh's fill for the whole call (carry the same).
set -uo pipefail
source "$(dirname "$0")/fam-env.sh"
R=/tmp/startup; mkdir -p $R; rm -f "$OUT/startup-all.jsonl"
case "${PART:-check}" in
check)
  model_folder /tmp/sd15
  stage "GPU tests: FP8, pinned upload, plan cache"
  CANDLEWICK_GPU_MODEL=/tmp/sd15 timeout 200 node --test --test-name-pattern "FP8|page-locked|disk cache" test/gpu/gpu.test.mjs 2>&1 \
    | tee "$OUT/check-test.txt" | grep -E "^# (pass|fail)|^not ok|^ok|rror|pinned|psnr" | head -20
  stage "SD1.5 512: FP8 off and on, batch 1 and 8"
  SIZE=512 STEPS=50 WHICH=fp16+flash+graphs,fp16+flash+graphs+fp8,fp16+flash+graphs:b8,fp16+flash+graphs+fp8:b8 \
    timeout 200 node bench/gpu/bench.mjs /tmp/sd15 "$OUT/sd15-fp8.json" 2>&1 | tail -6
  python3 -c "import json,sys; [print(r['variant'], r['batch'], round(r['median_s'],4), r.get('fp8'), r.get('vs_f16'), r.get('cuda_fallbacks')) for r in json.load(open(sys.argv[1]))['rows']]" "$OUT/sd15-fp8.json"
  export CANDLEWICK_PLAN_CACHE=/tmp/plan-cache
  for label in warmup fresh fresh2; do stage "fresh process: $label"; startup_row $label; done
  model_folder /tmp/sdxl sdxl
  stage "SDXL 1024 30 steps: FP8 off and on"
  SIZE=1024 STEPS=30 GUIDANCE=5 RUNS=2 WHICH=fp16+flash+graphs,fp16+flash+graphs+fp8 \
    timeout 150 node bench/gpu/bench.mjs /tmp/sdxl "$OUT/sdxl-fp8.json" 2>&1 | tail -4
  python3 -c "import json,sys; [print(r['variant'], r['batch'], round(r['median_s'],4), r.get('fp8'), r.get('vs_f16')) for r in json.load(open(sys.argv[1]))['rows']]" "$OUT/sdxl-fp8.json"
  stage "diffusers in the same call: reduce-overhead and eager, batch 1"
  WHICH=compiled_ro,fp16_sdpa FLOPS=0 OUT=$OUT timeout 200 python3 .gpu/anchor_diffusers.py 2>&1 | grep -v -i warn | tail -4
  mv "$OUT/anchor_diffusers.json" "$OUT/diffusers-sd15.json" 2>/dev/null
  left=$(( ${CALL_S:-585} - SECONDS ))
  stage "max-autotune fill for ${left}s"
  [ $left -gt 60 ] && PHASE=fill FILL_S=$left WHICH_FILL=compiled_best bash bench/gpu/best.sh ;;
more)  # the same machine after check and fill: which layers FP8 pays on (CANDLEWICK_FP8_MIN_OUTPUTS), SDXL batch 4
  for min in 0 2048; do
    stage "SD1.5 512 FP8 with CANDLEWICK_FP8_MIN_OUTPUTS=$min"
    first=$([ $min = 0 ] && echo fp16+flash+graphs,)
    CANDLEWICK_FP8_MIN_OUTPUTS=$min SIZE=512 STEPS=50 WHICH=${first}fp16+flash+graphs+fp8,fp16+flash+graphs+fp8:b8 \
      timeout 100 node bench/gpu/bench.mjs /tmp/sd15 "$OUT/sd15-fp8-min$min.json" 2>&1 | tail -3
  done
  stage "SDXL 1024 30 steps batch 4: FP8 off and on"
  SIZE=1024 STEPS=30 GUIDANCE=5 RUNS=2 WHICH=fp16+flash+graphs:b4,fp16+flash+graphs+fp8:b4 \
    timeout 150 node bench/gpu/bench.mjs /tmp/sdxl "$OUT/sdxl-fp8-b4.json" 2>&1 | tail -3
  left=$(( ${CALL_S:-585} - SECONDS ))
  stage "max-autotune fill for ${left}s"
  [ $left -gt 60 ] && PHASE=fill FILL_S=$left WHICH_FILL=compiled_best bash bench/gpu/best.sh ;;
fill)
  PHASE=fill FILL_S=$(( ${CALL_S:-585} - 15 )) WHICH_FILL=compiled_best bash bench/gpu/best.sh ;;
esac
