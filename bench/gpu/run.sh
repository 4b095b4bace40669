#!/usr/bin/env bash
# Everything on the GPU test machine in one call (bench/gpu/pack.sh prepares .gpu/ here first):
#   device tool: run  command="bash bench/gpu/run.sh"  carry=[".gpu", "dist", "node_modules/pngjs/lib", "node_modules/pngjs/package.json"]
# 1. load check of the CUDA build; 2. SD1.5-shaped random weights and diffusers' f32 reference;
# 3. parity (f32, f16 + flash, f16 unfused, f16 + flash without CUDA graphs) from the same latents
# (bench/gpu/parity.mjs); 4. candlewick's speed rows; 4b. a per-layer profile (CANDLEWICK_PROFILE=1);
# 5. diffusers on the same card (../shared/bench/anchor_diffusers.py: fp16 + SDPA, torch.compile);
# 6. attention alone against PyTorch SDPA (when .gpu/attention_bench.xz is there: it and node do
#    not fit in one call's 64 MiB beside the fixtures, so pack.sh leaves it out unless WITH_ATTENTION=1); 7. the GPU JavaScript tests; 8. results.json.
# Every stage writes under $OUT and has its own time limit, so one failure does not lose the rest.
# One call may run 10 minutes: PART=a (stages 1-4 and diffusers fp16 + SDPA) and then PART=b (the
# rest of 5, 6, 7) on the same warm machine (the second call within 30 s of the first); default: all.
# PART=p: profiling for the next change: the SD1.5-shaped model, a kernel-level Nsight Compute
# profile of one UNet step (k), cuDNN NCHW vs channels-last in PyTorch (l), host RSS traces (r);
# each letter also alone, e.g. PART=ak.
# PART=s: start-up (issue 6, point 6): load + first image in fresh node processes
# (bench/gpu/startup.mjs, with and without CANDLEWICK_PROFILE_STARTUP=1), diffusers' load beside it.
# PART=c: stage 6 alone, from G=.gpu-attention (WITH_ATTENTION=1 bash bench/gpu/pack.sh makes it):
#   device tool: run  command="G=.gpu-attention PART=c bash bench/gpu/run.sh"  carry=[".gpu-attention"]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/candlewick-out}
mkdir -p "$OUT"
G=${G:-.gpu}
W=/tmp/cw
MODEL=/tmp/sd15
PART=${PART:-ab}
started=$SECONDS
stage() { echo; echo "== [$((SECONDS - started))s] $*"; }

stage "unpack"
mkdir -p $W
for f in node candlewick.node attention_bench; do [ -f "$G/$f.xz" ] && xz -dc "$G/$f.xz" > "$W/$f" && chmod +x "$W/$f"; done
export PATH=$W:$PATH
export CANDLEWICK_NATIVE_LIBRARY_PATH=$W/candlewick.node
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $G/whl/*.whl && export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
cp $G/commit "$OUT/commit.txt" 2>/dev/null

if [[ $PART == *a* ]]; then
stage "1. load check"
ldd $W/candlewick.node | grep -E "not found|cuda|cublas|cudnn|nvrtc|curand" | tee "$OUT/ldd.txt"
node -e 'const b = require(process.env.CANDLEWICK_NATIVE_LIBRARY_PATH); console.log(JSON.stringify(b.buildInfo()))' 2>&1 | tee "$OUT/build-info.txt"

stage "2. model + diffusers reference"
PARITY_STEPS=20 timeout 240 python3 bench/gpu/reference.py $MODEL 2>&1 | grep -v Warning | tail -5
cp $MODEL/goldens.json "$OUT/reference.json"

stage "3. parity"
timeout 150 node bench/gpu/parity.mjs $MODEL "$OUT" 2>&1 | tail -4

stage "4. candlewick speed"
timeout 300 node bench/gpu/bench.mjs $MODEL "$OUT/candlewick.json" 2>&1 | tail -10

stage "4b. where the time goes: CANDLEWICK_PROFILE=1 (CUDA events around the layers, graphs off)"
CANDLEWICK_PROFILE=1 WHICH=fp16+flash,fp16+flash:b8 RUNS=1 timeout 120 node bench/gpu/bench.mjs $MODEL "$OUT/profile-rows.json" 2> "$OUT/profile.txt" | tail -3
grep -c candlewick_profile "$OUT/profile.txt"

stage "5a. diffusers fp16 + SDPA on the same card"
OUT=$OUT FLOPS=0 WHICH=fp16_sdpa,fp16_sdpa_b8 timeout 120 python3 $G/anchor_diffusers.py 2>&1 | grep -v -i warn | tail -4
mv "$OUT/anchor_diffusers.json" "$OUT/anchor_diffusers_a.json"
fi

if [[ $PART == *b* ]]; then
[ -d $MODEL ] || echo "no $MODEL on this machine (not the warm machine of PART=a): the GPU tests use the tiny model"
stage "5b. diffusers fp32, torch.compile on the same card"
OUT=$OUT FLOPS=0 WHICH=${DIFFUSERS_WHICH:-fp32,compiled_ro} timeout 300 python3 $G/anchor_diffusers.py 2>&1 | grep -v -i warn | tail -4
mv "$OUT/anchor_diffusers.json" "$OUT/anchor_diffusers_b.json"

stage "6. attention alone"
[ -x $W/attention_bench ] && timeout 30 attention_bench "$OUT/attention.json" > /dev/null 2>&1
(cd $G && timeout 60 python3 anchor_phases.py > "$OUT/anchor_phases.txt" 2>&1); tail -2 "$OUT/anchor_phases.txt"

stage "7. GPU JavaScript tests"
[ -d $MODEL ] && export CANDLEWICK_GPU_MODEL=$MODEL
CANDLEWICK_GPU_RESULTS=$OUT timeout 240 node --expose-gc --test test/gpu/ 2>&1 | tee "$OUT/test-gpu.txt" | grep -E "^# (pass|fail)|^not ok|out of memory reported"

fi

if [[ $PART == *c* ]]; then
stage "6. attention alone (PART=c: a call of its own, carrying the attention benchmark instead of node)"
timeout 60 attention_bench "$OUT/attention.json" | tail -8
(cd $G && timeout 90 python3 anchor_phases.py > "$OUT/anchor_phases.txt" 2>&1); tail -2 "$OUT/anchor_phases.txt"
fi

if [[ $PART == *[pklrs]* ]] && [ ! -d $MODEL ]; then
stage "p1. SD1.5-shaped model (no reference run)"
MODEL_ONLY=1 timeout 150 python3 bench/gpu/reference.py $MODEL 2>&1 | grep -v Warning | tail -2
fi

if [[ $PART == *[pk]* ]]; then
stage "p2. kernel-level profile: Nsight Compute, one generate call with 1 and with 3 steps, graphs off"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for steps in 1 3; do
  STEPS=$steps timeout 200 $NCU --clock-control none --cache-control none --metrics gpu__time_duration.sum \
    --csv --print-units base --log-file "$OUT/ncu-$steps.csv" node bench/gpu/kernels.mjs $MODEL > "$OUT/ncu-$steps.txt" 2>&1
  echo "steps=$steps rc=$? $(wc -l < "$OUT/ncu-$steps.csv") lines"; tail -2 "$OUT/ncu-$steps.txt"
done
python3 bench/gpu/kernels.py "$OUT/ncu-1.csv" "$OUT/ncu-3.csv" "$OUT/kernels.json"
fi

if [[ $PART == *[pl]* ]]; then
stage "p3. cuDNN convolutions NCHW against channels-last (PyTorch)"
timeout 120 python3 bench/gpu/conv_layouts.py "$OUT/conv_layouts.json" 2>&1 | grep -v -i warn | head -40
fi

if [[ $PART == *[pr]* ]]; then
stage "p4. host RSS over many generations, SD1.5-shaped model (256x256, 4 steps), CUDA graphs and eager"
for mode in ${RSS_MODES:-graphs eager}; do
  timeout 70 node --expose-gc bench/gpu/rss.mjs $MODEL ${RSS_SECONDS:-45} $mode 2>&1 | tee -a "$OUT/rss.txt"
done
fi

if [[ $PART == *s* ]]; then
stage "s. start-up: load + first image in fresh node processes (page cache warm), then diffusers' load"
cat $MODEL/*/*.safetensors > /dev/null
timeout 60 node bench/gpu/startup.mjs $MODEL 3 >> "$OUT/startup.jsonl" 2>> "$OUT/startup-stderr.txt"
CANDLEWICK_PROFILE_STARTUP=1 timeout 60 node bench/gpu/startup.mjs $MODEL 2 >> "$OUT/startup.jsonl" 2>> "$OUT/startup-profile.txt"
CANDLEWICK_PROFILE_STARTUP=1 timeout 60 node bench/gpu/startup.mjs $MODEL 2 '{"cudaGraphs": false}' >> "$OUT/startup.jsonl" 2>> "$OUT/startup-profile.txt"
python3 -c 'import json,sys; [print(r["rep"], r["load_options"], "load %.3f first %.3f = %.3f steady %.3f" % (r["load_s"], r["first_image_s"], r["load_plus_first_s"], r["steady_s"]), "process->first %.3f" % r.get("process_to_first_image_s", 0)) for r in map(json.loads, open(sys.argv[1]))]' "$OUT/startup.jsonl"
grep candlewick_startup "$OUT/startup-profile.txt" | head -12
OUT=$OUT FLOPS=0 WHICH=load timeout 150 python3 $G/anchor_diffusers.py 2>&1 | grep -v -i warn | grep load
mv "$OUT/anchor_diffusers.json" "$OUT/anchor_diffusers_s.json"
fi

stage "8. results"
python3 bench/gpu/collect.py "$OUT"
# At most 8 files come back: one archive of everything, and the summary.
(cd "$OUT" && tar czf /tmp/run.tgz --exclude=results.json . && find . -mindepth 1 ! -name results.json -delete && mv /tmp/run.tgz "run-$PART.tgz")
ls -la "$OUT"
