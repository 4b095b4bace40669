#!/usr/bin/env bash
# Issues 17 and 20's GPU measurements in two calls on one warm machine (the 64 MiB a call carries):
#   PART=1 carry [.gpu/node.xz, .gpu/whl, .gpu/ex]: the SD1.5-shaped model, the VAE tiling table (diffusers
#          and candle) and full-size img2img parity in f32 and f16 (bench/gpu/img.sh's steps 1 and 2);
#          .gpu/ex holds vae_decode_bench.xz and img2img_check.xz (scripts/cuda/examples.sh builds them).
#   PART=2 carry [.gpu/build, .gpu/serve-deps.tar.xz, .gpu/tiny-sd, node_modules/pngjs/...]: preview cost,
#          the server and queue worker measurements (bench/serve.mjs), then the GPU JavaScript tests;
#          .gpu/build holds candlewick.node.xz and dist/; serve-deps holds BullMQ's packages and .cache/redis.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/candlewick-out}; W=/tmp/cw; MODEL=/tmp/sd15
mkdir -p $W "$OUT"; export PATH=$W:$PATH LD_LIBRARY_PATH=/usr/local/cuda/lib64 PYTHONPATH=/tmp/site
[ -x $W/node ] || { xz -dc .gpu/node.xz > $W/node && chmod +x $W/node; }
[ -d /tmp/site/diffusers ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl 2>/dev/null
started=$SECONDS
stage() { echo; echo "== [$((SECONDS - started))s] $*"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
[ -d $MODEL ] || { stage "model"; MODEL_ONLY=1 timeout 150 python3 bench/gpu/reference.py $MODEL 2>&1 | grep -v -i warn | tail -1; }
if [ "${PART:-1}" = 1 ]; then
  for f in .gpu/ex/*.xz; do xz -dc $f > $W/$(basename $f .xz) && chmod +x $W/$(basename $f .xz); done
  stage "VAE decode, diffusers then candle"
  timeout 200 python3 bench/gpu/vae_tiling.py $MODEL --device cuda --sizes 1024,2048,4096 2> "$OUT/vae-diffusers.err" | tee "$OUT/vae-diffusers.jsonl" | cut -c1-300
  timeout 200 $W/vae_decode_bench $MODEL --device cuda --dtype f16 --sizes 1024,2048,4096 2> "$OUT/vae-candle.err" | tee "$OUT/vae-candle.jsonl" | cut -c1-300
  tail -3 "$OUT/vae-candle.err"
  stage "img2img parity, 512x512, strength 0.6, 20 DDIM steps"
  timeout 200 python3 bench/gpu/reference_img2img.py $MODEL --out /tmp/img2img-goldens --device cuda --size 512 --steps 20 2>&1 | grep -v -i warn | tail -2
  for dtype in f32 f16; do
    timeout 120 $W/img2img_check $MODEL --goldens /tmp/img2img-goldens --device cuda --dtype $dtype --out "$OUT/img2img-$dtype.json" 2>&1 | tail -3 | cut -c1-400
  done
else
  xz -dc .gpu/build/candlewick.node.xz > $W/candlewick.node
  export CANDLEWICK_NATIVE_LIBRARY_PATH=$W/candlewick.node
  rm -rf dist && cp -r .gpu/build/dist dist
  tar xJf .gpu/serve-deps.tar.xz
  rm -rf test/fixtures/tiny-sd && cp -r .gpu/tiny-sd test/fixtures/tiny-sd
  stage "previews: 512x512, 25 steps, without and with previewEvery: 1"
  LOAD='{"device": "cuda"}' timeout 120 node bench/gpu/previews.mjs $MODEL 512 25 3 2>&1 | tee "$OUT/previews.json" | tail -c 600
  stage "server and queue worker (bench/serve.mjs)"
  timeout 330 node bench/serve.mjs --model $MODEL --steps 30 --requests ${REQUESTS:-48} --jobs ${JOBS:-200} --redis "$(bash scripts/redis.sh)" > "$OUT/serve.json" 2> "$OUT/serve.err"
  tail -12 "$OUT/serve.err"; head -c 1500 "$OUT/serve.json"
  stage "GPU JavaScript tests"
  CANDLEWICK_GPU_MODEL=$MODEL CANDLEWICK_GPU_RESULTS=$OUT timeout 200 node --expose-gc --test test/gpu/ 2>&1 | tee "$OUT/test-gpu.txt" | grep -E "^# (pass|fail)|^not ok"
fi
stage done
