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
  [ -f /tmp/sd15/unet/config.json ] || { stage "SD1.5-shaped model"; MODEL_ONLY=1 timeout 150 python3 bench/gpu/reference.py /tmp/sd15 2>&1 | quiet | tail -1; }
  cat /tmp/sd15/*/*.safetensors > /dev/null  # the page cache warm, as the issue asks
  cache=/tmp/plan-cache; rm -rf $cache; R=/tmp/startup; rm -rf $R; mkdir -p $R
  for label in first-off off empty warm warm2 off2; do
    case $label in *off*) setting=off ;; *) setting=$cache ;; esac
    stage "fresh process: $label (CANDLEWICK_PLAN_CACHE=$setting)"
    CANDLEWICK_PLAN_CACHE=$setting CANDLEWICK_PROFILE_STARTUP=1 timeout 90 node bench/gpu/startup.mjs /tmp/sd15 1 \
      > "$R/startup-$label.jsonl" 2> "$R/startup-$label.err"
    echo "rc=$?"; cat "$R/startup-$label.err" | grep -v candlewick_startup | tail -3
    grep -h candlewick_startup "$R/startup-$label.err" >> "$R/startup-$label.jsonl"
    python3 - "$R/startup-$label.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    row = json.loads(line)
    if "rep" in row:
        print(f"  process {row['process_to_first_image_s']:.3f} s = node {row['node_boot_s']:.3f} + import {row['import_s']:.3f} + load {row['load_s']:.3f} + first image {row['first_image_s']:.3f} (steady {row['steady_s']:.3f}); image {row['first_image_sha256'][:16]}")
    else:
        s = row["candlewick_startup"]
        print("  " + s["what"] + ": " + ", ".join(f"{k} {v['s']:.3f}" + (f"/{v['calls']}" if v['calls'] > 1 else "") for k, v in s.items() if k != "what"))
PY
  done
  ls $cache/* | head -3; echo "$(ls $cache/*/ | wc -l) files, $(du -sh $cache | cut -f1)"
  stage "GPU test: the plan cache's images (fresh processes, damaged files)"
  CANDLEWICK_GPU_MODEL=/tmp/sd15 timeout 150 node --test --test-name-pattern "disk cache" test/gpu/ 2>&1 | tee $R/test.txt | grep -E "^# (pass|fail)|^not ok|^ok|rror" | head
  for label in first-off off empty warm warm2 off2; do sed "s/^{/{\"process\": \"$label\", /" $R/startup-$label.jsonl; done > "$OUT/startup-all.jsonl" ;;
esac
