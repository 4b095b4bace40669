#!/usr/bin/env bash
# Issue 18's GPU rows: the model families' full-size parity and speed beside diffusers, on one warm machine
# in calls of at most ten minutes (the model made by the first stays in /tmp for the next):
#   PART=sdxl-parity  SDXL base 1.0's shapes (reference.py FAMILY=sdxl): diffusers f32 goldens (1024x1024,
#                     20 Euler steps, TF32 off), replayed by full_size_check in f32 and f16
#   PART=sdxl-speed   SDXL 1024x1024, 30 steps, guidance 5, batch 1 and 4, then SDXL-Turbo's use (512x512,
#                     1 step, guidance 0, Euler ancestral trailing): candlewick (bench.mjs) then diffusers
#                     eager and torch.compile (anchor_families.py), same call
#   PART=sdxl-tf32    sdxl-parity's f16 check and sdxl-speed's 1024 rows (diffusers at batch 1) after the TF32 decode
#   PART=sdxl-round2  (session 13) a fresh SDXL-shaped model, then sdxl-speed's candlewick rows with the graphs'
#                     memory trimmed before the decode (and without, CANDLEWICK_TRIM_GRAPH_MEMORY=0, batch 1),
#                     SDXL-Turbo's, and diffusers eager at batch 1 and 4, same call
#   PART=sdxl-compiled diffusers torch.compile at batch 1 and 4 and SDXL-Turbo eager/compiled, with candlewick's
#                     batch 1 again in the same call (run after sdxl-round2 on the same warm machine)
#   PART=sdxl-kernels Nsight Compute kernel times of one SDXL UNet step at 1024 (a 1-step and a 2-step call,
#                     graphs off; kernels.py takes the difference)
#   PART=round2b      after SDXL's text-encoder graphs: graphs on/off give the same SDXL image (graphs_equal.mjs),
#                     memory phase by phase beside diffusers (memory.mjs / memory.py; SDXL 1024 and 512),
#                     SDXL 1024 with cuBLASLt / cuDNN autotuning, SD1.5 512 batch 1 and 8 with and without the
#                     graph-memory trim (a fresh SD1.5-shaped model)
#   PART=round2c      after the second text encoder's graph fix: graphs on/off the same image, SDXL 1024 batch 1 and
#                     SDXL-Turbo 512 beside diffusers eager (torch.compile's figures are sdxl-compiled's)
#   PART=sd2-speed    SD 2.1's shapes: 768x768, 50 steps (v-prediction DDIM), then SD-Turbo's use (512x512,
#                     4 steps, guidance 0, Euler ancestral trailing), both systems
# Carries: .gpu/node.xz, .gpu/whl (diffusers), .gpu/fam/{candlewick.node.xz, dist/, full_size_check.xz}.
set -uo pipefail
source "$(dirname "$0")/fam-env.sh"
quiet() { grep -v -i -E "warn|deprecat|^\s*$" | cut -c1-400; }

speed() {  # MODEL OUT-STEM SIZE STEPS GUIDANCE SCHEDULER-JSON DIFFUSERS-SCHEDULER WHICH ROWS
  local model=$1 stem=$2 size=$3 steps=$4 guidance=$5 sched=$6 dsched=$7 which=$8 rows=$9
  stage "$stem: candlewick ($which)"
  SIZE=$size STEPS=$steps GUIDANCE=$guidance SCHEDULER=$sched WHICH=$which timeout 240 node bench/gpu/bench.mjs $model "$OUT/$stem-candlewick.json" 2>&1 | quiet | tail -6
  stage "$stem: diffusers ($rows)"
  timeout 400 python3 bench/gpu/anchor_families.py $model "$OUT/$stem-diffusers.jsonl" $rows --size $size --steps $steps \
    --guidance $guidance ${dsched:+--scheduler $dsched} 2>&1 | quiet | tail -6
}
TURBO='{"type":"EulerAncestralDiscreteScheduler","timestepSpacing":"trailing"}'

case "${PART:-sdxl-parity}" in
sdxl-parity)
  stage "SDXL-shaped model and diffusers' f32 goldens"
  [ -f /tmp/sdxl/goldens.json ] || FAMILY=sdxl PARITY_STEPS=${PARITY_STEPS:-20} timeout 400 python3 bench/gpu/reference.py /tmp/sdxl 2>&1 | quiet | tail -3
  cp /tmp/sdxl/goldens.json "$OUT/sdxl-goldens.json"
  for dtype in f32 f16; do
    stage "full_size_check SDXL $dtype"
    timeout 150 $W/full_size_check /tmp/sdxl --device cuda --dtype $dtype --out "$OUT/sdxl-parity-$dtype.json" 2>&1 \
      | grep -E '"(check|image_psnr_db|image_values_within_1_of_255|latents_step_19|seconds_call)"|rror'
  done ;;
sdxl-speed)
  speed /tmp/sdxl sdxl-1024 1024 30 5 "" "" fp16+flash+graphs,fp16+flash+graphs:b4 eager:b1,eager:b4,compiled:b1,compiled:b4
  speed /tmp/sdxl sdxl-turbo-512 512 1 0 "$TURBO" euler-a-trailing fp16+flash+graphs eager:b1,compiled:b1 ;;
sdxl-tf32)  # after the upcast VAE decode moved to TF32 convolutions: f16 parity, then batch 1 and 4 beside diffusers
  [ -f /tmp/sdxl/goldens.json ] || FAMILY=sdxl PARITY_STEPS=${PARITY_STEPS:-20} timeout 400 python3 bench/gpu/reference.py /tmp/sdxl 2>&1 | quiet | tail -1
  cp /tmp/sdxl/goldens.json "$OUT/sdxl-goldens.json"
  stage "full_size_check SDXL f16"
  timeout 150 $W/full_size_check /tmp/sdxl --device cuda --dtype f16 --out "$OUT/sdxl-parity-f16.json" 2>&1 \
    | grep -E '"(check|image_psnr_db|image_values_within_1_of_255|latents_step_19|seconds_call)"|rror'
  speed /tmp/sdxl sdxl-1024 1024 30 5 "" "" fp16+flash+graphs,fp16+flash+graphs:b4 eager:b1,compiled:b1 ;;
sdxl-round2)
  model_folder /tmp/sdxl sdxl
  stage "sdxl-1024: candlewick, graphs' memory kept (CANDLEWICK_TRIM_GRAPH_MEMORY=0)"
  CANDLEWICK_TRIM_GRAPH_MEMORY=0 SIZE=1024 STEPS=30 GUIDANCE=5 WHICH=fp16+flash+graphs timeout 200 node bench/gpu/bench.mjs /tmp/sdxl "$OUT/sdxl-1024-keep-candlewick.json" 2>&1 | quiet | tail -3
  speed /tmp/sdxl sdxl-1024 1024 30 5 "" "" fp16+flash+graphs,fp16+flash+graphs:b4 eager:b1,eager:b4
  stage "sdxl-turbo-512: candlewick"
  SIZE=512 STEPS=1 GUIDANCE=0 SCHEDULER="$TURBO" WHICH=fp16+flash+graphs timeout 120 node bench/gpu/bench.mjs /tmp/sdxl "$OUT/sdxl-turbo-512-candlewick.json" 2>&1 | quiet | tail -3 ;;
sdxl-compiled)
  stage "sdxl-1024: candlewick batch 1 (beside the compiled rows)"
  SIZE=1024 STEPS=30 GUIDANCE=5 WHICH=fp16+flash+graphs timeout 150 node bench/gpu/bench.mjs /tmp/sdxl "$OUT/sdxl-1024-b1-candlewick.json" 2>&1 | quiet | tail -3
  stage "sdxl-1024: diffusers torch.compile"
  timeout 330 python3 bench/gpu/anchor_families.py /tmp/sdxl "$OUT/sdxl-1024-compiled-diffusers.jsonl" compiled:b1,compiled:b4 --size 1024 --steps 30 --guidance 5 2>&1 | quiet | tail -4
  stage "sdxl-turbo-512: diffusers"
  timeout 150 python3 bench/gpu/anchor_families.py /tmp/sdxl "$OUT/sdxl-turbo-512-diffusers.jsonl" eager:b1,compiled:b1 --size 512 --steps 1 --guidance 0 --scheduler euler-a-trailing 2>&1 | quiet | tail -4 ;;
sdxl-kernels)
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  for steps in 1 2; do
    stage "ncu: SDXL 1024, $steps step(s), graphs off"
    SIZE=1024 STEPS=$steps timeout 260 $NCU --clock-control none --cache-control none --metrics gpu__time_duration.sum \
      --csv --print-units base --log-file "$OUT/sdxl-ncu-$steps.csv" node bench/gpu/kernels.mjs /tmp/sdxl > "$OUT/sdxl-ncu-$steps.txt" 2>&1
    echo "steps=$steps rc=$? $(wc -l < "$OUT/sdxl-ncu-$steps.csv") lines"; tail -2 "$OUT/sdxl-ncu-$steps.txt"
  done
  STEP_DIFF=1 python3 bench/gpu/kernels.py "$OUT/sdxl-ncu-1.csv" "$OUT/sdxl-ncu-2.csv" "$OUT/sdxl-kernels.json" ;;
round2b)
  model_folder /tmp/sdxl sdxl
  stage "SDXL: graphs on and off, same image?"
  timeout 120 node bench/gpu/graphs_equal.mjs /tmp/sdxl "$OUT/sdxl-graphs-equal.json" 2>&1 | quiet | tail -2
  for size in 1024 512; do
    stage "SDXL memory by phase at $size: candlewick, diffusers"
    SIZE=$size timeout 100 node bench/gpu/memory.mjs /tmp/sdxl "$OUT/sdxl-memory-$size-candlewick.json" 2>&1 | quiet | tail -2
    SIZE=$size timeout 150 python3 bench/gpu/memory.py /tmp/sdxl "$OUT/sdxl-memory-$size-diffusers.json" 2>&1 | quiet | tail -2
  done
  stage "sdxl-1024: candlewick with autotuning"
  SIZE=1024 STEPS=30 GUIDANCE=5 WHICH=fp16+flash+graphs,fp16+flash+graphs+gemmbench,fp16+flash+graphs+bench timeout 200 node bench/gpu/bench.mjs /tmp/sdxl "$OUT/sdxl-1024-levers-candlewick.json" 2>&1 | quiet | tail -4
  model_folder /tmp/sd15
  for trim in 1 0; do
    stage "sd15-512: CANDLEWICK_TRIM_GRAPH_MEMORY=$trim"
    CANDLEWICK_TRIM_GRAPH_MEMORY=$trim SIZE=512 STEPS=50 GUIDANCE=7.5 WHICH=fp16+flash+graphs,fp16+flash+graphs:b8 RUNS=5 timeout 150 node bench/gpu/bench.mjs /tmp/sd15 "$OUT/sd15-512-trim$trim-candlewick.json" 2>&1 | quiet | tail -3
  done ;;
round2c)
  model_folder /tmp/sdxl sdxl
  stage "SDXL: graphs on and off, same image?"
  timeout 120 node bench/gpu/graphs_equal.mjs /tmp/sdxl "$OUT/sdxl-graphs-equal.json" 2>&1 | quiet | tail -2
  speed /tmp/sdxl sdxl-1024 1024 30 5 "" "" fp16+flash+graphs eager:b1
  speed /tmp/sdxl sdxl-turbo-512 512 1 0 "$TURBO" euler-a-trailing fp16+flash+graphs eager:b1 ;;
sd2-speed)
  model_folder /tmp/sd21 sd2
  speed /tmp/sd21 sd21-768 768 50 7.5 "" "" fp16+flash+graphs eager:b1,compiled:b1
  speed /tmp/sd21 sd-turbo-512 512 4 0 "$TURBO" euler-a-trailing fp16+flash+graphs eager:b1,compiled:b1 ;;
esac
stage done
