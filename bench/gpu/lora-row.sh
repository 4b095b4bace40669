#!/usr/bin/env bash
# One warm call after families.sh's: (1) the LoRA speed row of the single-file/LoRA issue: SD1.5-shaped
# weights (reference.py MODEL_ONLY=1), a random rank-16 kohya LoRA on every linear layer of the UNet's
# transformers and the text encoder (make_lora.py), the base model and the LoRA-fused one timed in one
# process (512x512, 50 DDIM steps); (2) the per-layer GPU time of SDXL at 1024x1024, batch 1 and 4,
# without CUDA graphs (CANDLEWICK_PROFILE=1, 5 steps): where SDXL's time goes.
# Carries what families.sh carries, plus node_modules/pngjs.
set -uo pipefail
source "$(dirname "$0")/fam-env.sh"
quiet() { grep -v -i -E "warn|deprecat|float32|^\s*$" | cut -c1-300; }
if [ "${SKIP_LORA:-0}" != 1 ]; then
  model_folder /tmp/sd15
  stage "LoRA"; python3 bench/gpu/make_lora.py /tmp/sd15 /tmp/lora16.safetensors 16 2>&1 | tail -1
  stage "base and LoRA-fused, same process"
  LORA=/tmp/lora16.safetensors WHICH=fp16+flash+graphs,fp16+flash+graphs+lora,fp16+flash+graphs RUNS=5 timeout 200 \
    node bench/gpu/bench.mjs /tmp/sd15 "$OUT/lora-sd15-candlewick.json" 2>&1 | quiet | tail -5
fi
if [ "${SKIP_PROFILE:-0}" != 1 ]; then
  model_folder /tmp/sdxl sdxl
  stage "SDXL per-layer profile, batch 1 and 4"
  CANDLEWICK_PROFILE=1 SIZE=1024 STEPS=5 RUNS=1 GUIDANCE=5 WHICH=fp16+flash,fp16+flash:b4 timeout 200 \
    node bench/gpu/bench.mjs /tmp/sdxl "$OUT/sdxl-profile-candlewick.json" > "$OUT/sdxl-profile.log" 2>&1
  tail -c 1500 "$OUT/sdxl-profile.log"
fi
stage done
