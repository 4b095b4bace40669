#!/usr/bin/env bash
# Issue 17's GPU measurements, on the GPU test machine after bench/gpu/run.sh's unpack (or the same by
# hand: /tmp/cw holds node, candlewick.node, vae_decode_bench, img2img_check; PYTHONPATH=/tmp/site has diffusers):
#   OUT=DIR bash bench/gpu/img.sh
# 1. the VAE tiling table: diffusers (bench/gpu/vae_tiling.py) and candle (vae_decode_bench), f16, JSON rows
# 2. full-size img2img parity: diffusers f32 goldens (reference_img2img.py), replayed in f32 and f16
# 3. preview cost (previews.mjs)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/candlewick-out}
W=${W:-/tmp/cw}
MODEL=${MODEL:-/tmp/sd15}
SIZES=${SIZES:-1024,2048,4096}
# A CPU dry run: DEVICE=cpu DTYPES=f32 SIZES=64 SIZE=64 STEPS=5 MODEL=test/fixtures/tiny-sd W=<examples dir>
DEVICE=${DEVICE:-cuda}
DTYPES=${DTYPES:-f32 f16}
SIZE=${SIZE:-512}
STEPS=${STEPS:-20}
mkdir -p "$OUT"
export PATH=$W:$PATH
export CANDLEWICK_NATIVE_LIBRARY_PATH=${CANDLEWICK_NATIVE_LIBRARY_PATH:-$W/candlewick.node}
export PYTHONPATH=${PYTHONPATH:-/tmp/site}
started=$SECONDS
stage() { echo; echo "== [$((SECONDS - started))s] $*"; }

[ -f $MODEL/vae/config.json ] || { stage "model"; MODEL_ONLY=1 timeout 300 python3 bench/gpu/reference.py $MODEL; }

stage "1. VAE decode, diffusers then candle ($SIZES)"
timeout 240 python3 bench/gpu/vae_tiling.py $MODEL --device $DEVICE --sizes $SIZES 2> "$OUT/vae-diffusers.err" | tee "$OUT/vae-diffusers.jsonl"
timeout 240 $W/vae_decode_bench $MODEL --device $DEVICE --dtype $([ $DEVICE = cuda ] && echo f16 || echo f32) --sizes $SIZES 2> "$OUT/vae-candle.err" | tee "$OUT/vae-candle.jsonl"

stage "2. img2img parity, ${SIZE}x$SIZE, strength 0.6, $STEPS DDIM steps"
timeout 240 python3 bench/gpu/reference_img2img.py $MODEL --out $OUT/img2img-goldens --device $DEVICE --size $SIZE --steps $STEPS 2>&1 | tail -2
for dtype in $DTYPES; do
  timeout 120 $W/img2img_check $MODEL --goldens $OUT/img2img-goldens --device $DEVICE --dtype $dtype --out "$OUT/img2img-$dtype.json" 2>&1 \
    | grep -E '"(check|image_psnr_db|image_values_within_1_of_255|latents_max_abs_rel_worst|unused)"'
done

stage "3. previews: ${SIZE}x$SIZE, 25 steps, without and with previewEvery: 1"
LOAD="{\"device\": \"$DEVICE\"}" timeout 240 node bench/gpu/previews.mjs $MODEL $SIZE 25 ${PREVIEW_RUNS:-3} 2>&1 | tee "$OUT/previews.json" | tail -c 600
stage "done"
