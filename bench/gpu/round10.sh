#!/usr/bin/env bash
# Issue 21's one run (its "Done when": one results file from the H200 with every figure), two calls back to back on
# one machine, from the repository root:
#   PART=fill   carry .gpu/node.xz, .gpu/whl, .gpu/anchor_diffusers.py: the max-autotune recipe compiled from the
#               tuning carried in bench/gpu/inductor-tuning.tar.xz (best.sh; session 20's second fill finished it), so
#               that the next call finds inductor's caches warm; keep the returned inductor-tuning.tar.xz if it grew.
#   PART=final  carry .gpu/pkg (scripts/pack.mjs's tarballs of a fresh clone's `npm run build:cuda`, pngjs's too) and
#               .gpu/anchor_diffusers.py (node and diffusers are on the machine from the fill call): the tarballs
#               installed as npm would (tarball.sh, no LD_ variables) and that build timed: SD1.5 512 50 steps batch 1
#               and 8 (bench.mjs), three fresh node processes to their first image (the plan cache filled by the
#               first), parity against diffusers' f32 on the card (reference.py, parity.mjs), where a step's time
#               goes (CANDLEWICK_PROFILE=1, graphs off), then diffusers in the same call: the max-autotune recipe,
#               torch.compile reduce-overhead and eager. bench/gpu/issue21.py gathers it all into $OUT/issue21.json
#               with each target and whether it was met.
set -uo pipefail
source "$(dirname "$0")/fam-env.sh"
R=/tmp/startup; mkdir -p $R; rm -f "$OUT/startup-all.jsonl"
case "${PART:-final}" in
fill)
  PHASE=fill FILL_S=$(( ${CALL_S:-585} - 15 )) WHICH_FILL=compiled_best bash bench/gpu/best.sh ;;
final)
  stage "the tarballs, installed"; use_tarballs .gpu/pkg
  cp .gpu/pkg/commit.txt "$OUT/commit.txt" 2>/dev/null  # the packed clone's commit (`git rev-parse HEAD > .gpu/pkg/commit.txt`)
  stage "SD1.5-shaped model and diffusers' f32 reference (20 steps)"
  rm -rf /tmp/sd15 && PARITY_STEPS=20 timeout 150 python3 bench/gpu/reference.py /tmp/sd15 2>&1 | grep -v -i -E 'warn|deprecat' | tail -2
  cat /tmp/sd15/*/*.safetensors > /dev/null
  stage "candlewick: batch 1 and 8"
  SIZE=512 STEPS=50 RUNS=5 WHICH=fp16+flash+graphs,fp16+flash+graphs:b8 timeout 150 node bench/gpu/bench.mjs /tmp/sd15 "$OUT/candlewick.json" 2>&1 | tail -3
  export CANDLEWICK_PLAN_CACHE=/tmp/plan-cache
  for label in fill fresh1 fresh2; do stage "fresh process: $label"; startup_row $label; done
  stage "parity against diffusers' f32"
  timeout 120 node bench/gpu/parity.mjs /tmp/sd15 "$OUT" 2>&1 | tail -4
  stage "where a step goes: CANDLEWICK_PROFILE=1, graphs off"
  CANDLEWICK_PROFILE=1 WHICH=fp16+flash,fp16+flash:b8 RUNS=1 timeout 90 node bench/gpu/bench.mjs /tmp/sd15 "$OUT/profile-rows.json" 2> "$OUT/profile.txt" | tail -2
  stage "diffusers: max-autotune, reduce-overhead, eager"
  left=$(( ${CALL_S:-585} - SECONDS - 10 ))
  WHICH=${WHICH_TIME:-compiled_best,compiled_ro,fp16_sdpa} FLOPS=0 OUT=$OUT timeout $left python3 .gpu/anchor_diffusers.py 2>&1 | grep -v -i warn | grep '^{' | tee "$OUT/diffusers.jsonl"
  python3 bench/gpu/issue21.py "$OUT" | tee "$OUT/issue21-summary.txt" ;;
esac
