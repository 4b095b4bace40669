#!/usr/bin/env bash
# Session 15's GPU calls (issue 21), three back to back on one machine, from the repository root:
#   PART=check  carry .gpu/node.xz, .gpu/whl, .gpu/fam (a build with the pinned weight upload), node_modules/pngjs,
#               .gpu/anchor_diffusers.py: test/gpu's pinned-upload and plan-cache tests on an SD1.5-shaped model;
#               fresh processes alternating CANDLEWICK_PIN_WEIGHTS on and off (plan cache warm;
#               session 15's call cycled three forms, staged, register and off: staged was taken out after it); then the
#               max-autotune anchor's fill (best.sh) for what is left of the call (CALL_S, default 585 s).
#   PART=fill   best.sh's fill for the whole call.
#   PART=time   carry .gpu/pkg (scripts/pack.mjs's tarballs of a fresh clone's `npm run build:cuda`: the main and
#               CUDA packages and pngjs's; node and diffusers are on the machine from the first call: carrying
#               them too would pass the 64 MiB a call carries), .gpu/anchor_diffusers.py: the tarballs
#               installed as npm would (tarball.sh: import and CLI, no LD_ variables); that build's .node and
#               dist/ timed by bench.mjs (batch 1 and 8) and two fresh processes; then diffusers' max-autotune
#               recipe, torch.compile reduce-overhead and eager in the same call.
set -uo pipefail
source "$(dirname "$0")/fam-env.sh"
R=/tmp/startup; mkdir -p $R; rm -f "$OUT/startup-all.jsonl"
case "${PART:-check}" in
check)
  model_folder /tmp/sd15
  stage "GPU tests: pinned upload, plan cache"
  CANDLEWICK_GPU_MODEL=/tmp/sd15 timeout 200 node --test --test-name-pattern "page-locked|disk cache" test/gpu/gpu.test.mjs 2>&1 \
    | tee "$OUT/check-test.txt" | grep -E "^# (pass|fail)|^not ok|^ok|rror|pinned" | head -20
  export CANDLEWICK_PLAN_CACHE=/tmp/plan-cache
  for label in warmup pinned off pinned2 off2 pinned3 off3; do
    stage "fresh process: $label"
    case $label in off*) startup_row $label CANDLEWICK_PIN_WEIGHTS=off ;; *) startup_row $label ;; esac
  done
  left=$(( ${CALL_S:-585} - SECONDS ))
  stage "max-autotune fill for ${left}s"
  [ $left -gt 30 ] && PHASE=fill FILL_S=$left WHICH_FILL=compiled_best bash bench/gpu/best.sh ;;
fill)
  PHASE=fill FILL_S=$(( ${CALL_S:-585} - 15 )) WHICH_FILL=compiled_best bash bench/gpu/best.sh ;;
time)
  stage "the tarballs, installed"; use_tarballs .gpu/pkg
  model_folder /tmp/sd15
  stage "candlewick (the tarball's build): batch 1 and 8"
  SIZE=512 STEPS=50 WHICH=fp16+flash+graphs,fp16+flash+graphs:b8 timeout 150 node bench/gpu/bench.mjs /tmp/sd15 "$OUT/time-candlewick.json" 2>&1 | tail -3
  export CANDLEWICK_PLAN_CACHE=/tmp/plan-cache
  for label in tarball tarball2; do stage "fresh process: $label"; startup_row $label; done
  stage "diffusers: max-autotune, reduce-overhead, eager"
  PHASE=time SKIP_CANDLEWICK=1 WHICH_TIME=${WHICH_TIME:-compiled_best,compiled_ro,fp16_sdpa} \
    TIME_S=$(( ${CALL_S:-585} - SECONDS )) bash bench/gpu/best.sh ;;
esac
