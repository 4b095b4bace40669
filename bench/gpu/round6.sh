#!/usr/bin/env bash
# Session 17's last GPU call (issue 21), from the repository root, one call on a fresh machine: carry .gpu/node.xz,
# .gpu/whl, .gpu/anchor_diffusers.py, node_modules/pngjs and .gpu/fam with the CUDA .node of a fresh clone's `npm run build:cuda`
# (stripped, xz'd; the tarballs themselves do not fit one call's 64 MiB beside node) and that clone's dist/:
#   the FP8 GPU tests after the alignment mend (0664839) and FP8 with a LoRA (make_lora.py's, setLoras on and off);
#   bench.mjs f16 and FP8 at batch 1 and 8 (SD1.5 512, 50 steps); two fresh processes to their first image;
#   diffusers' torch.compile reduce-overhead and eager at batch 1 in the same call, for what is left of CALL_S.
set -uo pipefail
source "$(dirname "$0")/fam-env.sh"
R=/tmp/startup; mkdir -p $R; rm -f "$OUT/startup-all.jsonl"
model_folder /tmp/sd15
stage "LoRA"; python3 bench/gpu/make_lora.py /tmp/sd15 /tmp/lora16.safetensors 16 2>&1 | tail -1
stage "GPU tests: FP8, FP8 with a LoRA"
CANDLEWICK_GPU_MODEL=/tmp/sd15 CANDLEWICK_GPU_LORA=/tmp/lora16.safetensors timeout 150 node --test --test-name-pattern "FP8" \
  test/gpu/gpu.test.mjs 2>&1 | tee "$OUT/check-test.txt" | grep -E "^# (pass|fail|skip)|^not ok|^ok|rror|_db" | head -20
stage "SD1.5 512: f16 and FP8, batch 1 and 8"
SIZE=512 STEPS=50 WHICH=fp16+flash+graphs,fp16+flash+graphs+fp8,fp16+flash+graphs:b8,fp16+flash+graphs+fp8:b8 \
  timeout 150 node bench/gpu/bench.mjs /tmp/sd15 "$OUT/sd15.json" 2>&1 | tail -6
export CANDLEWICK_PLAN_CACHE=/tmp/plan-cache
for label in warmup fresh fresh2; do stage "fresh process: $label"; startup_row $label; done
left=$(( ${CALL_S:-470} - SECONDS ))
stage "diffusers in the same call: reduce-overhead and eager, batch 1 (${left}s)"
WHICH=compiled_ro,fp16_sdpa FLOPS=0 OUT=$OUT timeout $left python3 .gpu/anchor_diffusers.py 2>&1 | grep -v -i warn | tail -3
mv "$OUT/anchor_diffusers.json" "$OUT/diffusers-sd15.json" 2>/dev/null; true
