#!/usr/bin/env bash
# Issue 22's run, one call on a machine with two or more GPUs (device tool kind nvidia-h200-x2 or larger), from the
# repository root:
#   bash bench/gpu/multi-gpu.sh
# carrying .gpu/node.xz, .gpu/whl, .gpu/anchor_diffusers.py and .gpu/multi (bench/gpu/prepare-multi-gpu.sh makes it
# from a fresh clone's packages; untrack the fixtures' safetensors for the call, as for round10.sh). It makes an
# SD1.5-shaped random-weight model (reference.py), then bench/gpu/multi_gpu.mjs on every GPU the machine has: the
# device pool against one GPU (64 images), the server over both at 32 concurrent clients, and one queue worker per
# GPU draining 200 jobs from a Redis started here, the first worker SIGKILLed mid-run. $OUT/multi-gpu.json is the
# results file (copy it to bench/results with the card, the GPU count and the date).
set -uo pipefail
source "$(dirname "$0")/fam-env.sh"
M=.gpu/multi
stage "the CUDA package's .node, dist/, BullMQ and Redis from $M (commit $(cat $M/commit.txt))"
xz -dc $M/candlewick.node.xz > $W/candlewick-cuda.node
export CANDLEWICK_NATIVE_LIBRARY_PATH=$W/candlewick-cuda.node
rm -rf dist && tar -xJf $M/dist.tar.xz && tar -xJf $M/modules.tar.xz && tar -xJf $M/redis.tar.xz
cp $M/commit.txt "$OUT/commit.txt"
REDIS=$PWD/.cache/redis/bin/redis-server
"$REDIS" --version
nvidia-smi -L | tee "$OUT/gpus.txt"
n=$(nvidia-smi -L | grep -c '^GPU ')
[ "$n" -ge 2 ] || echo "only $n GPU: the pool's rows will not show scaling"
DEVICES=$(seq -s, -f 'cuda:%g' 0 $((n - 1)))
model_folder /tmp/sd15
stage "multi_gpu.mjs on $DEVICES"
DEVICES=$DEVICES REDIS=$REDIS timeout $(( ${CALL_S:-585} - SECONDS - 10 )) node bench/gpu/multi_gpu.mjs /tmp/sd15 "$OUT" 2>&1 | tail -30
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({k: d.get(k) for k in ('pool', 'server', 'queue')}, indent=1)[:6000])" "$OUT/multi-gpu.json"
