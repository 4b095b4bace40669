#!/usr/bin/env bash
# Session 14's GPU calls (issue 21), on the GPU machine from the repository root, sourcing fam-env.sh (carry
# .gpu/node.xz, .gpu/whl, .gpu/fam, node_modules/pngjs):
#   PART=startup   a fresh node process to its first SD1.5-shaped image (startup.mjs, one repetition a process),
#                  with CANDLEWICK_PROFILE_STARTUP: the first process of the machine and a second with the cuDNN
#                  plan cache off, one with it empty (it builds and writes), two reading it back, one off again;
#                  each row carries the first image's sha256 (the cached plans must give the same pixels); then
#                  test/gpu's plan-cache test.
set -uo pipefail
source "$(dirname "$0")/fam-env.sh"
quiet() { grep -v -i -E 'warn|deprecat' ; }
case "${PART:-startup}" in
startup)
  model_folder /tmp/sd15  # the page cache warm, as the issue asks
  cache=/tmp/plan-cache; rm -rf $cache; R=/tmp/startup; rm -rf $R "$OUT/startup-all.jsonl"; mkdir -p $R
  for label in first-off off empty warm warm2 off2; do
    case $label in *off*) setting=off ;; *) setting=$cache ;; esac
    stage "fresh process: $label (CANDLEWICK_PLAN_CACHE=$setting)"
    startup_row $label CANDLEWICK_PLAN_CACHE=$setting
  done
  ls $cache/* | head -3; echo "$(ls $cache/*/ | wc -l) files, $(du -sh $cache | cut -f1)"
  stage "GPU test: the plan cache's images (fresh processes, damaged files)"
  CANDLEWICK_GPU_MODEL=/tmp/sd15 timeout 150 node --test --test-name-pattern "disk cache" test/gpu/gpu.test.mjs 2>&1 | tee $R/test.txt | grep -E "^# (pass|fail)|^not ok|^ok|rror" | head
  ;;
esac
