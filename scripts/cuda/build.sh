#!/usr/bin/env bash
# The CUDA build of the native addon: candle's CUDA backend and FlashAttention-2, for compute
# capability 9.0, built on a machine without a GPU, with cuDNN convolutions (src/cuda/cudnn: plans
# cached per shape) and FlashAttention-2.
# Writes npm/linux-x64-gnu-cuda/candlewick.linux-x64-gnu-cuda.node.
#   CUTLASS_GIT=<a local clone of NVIDIA/cutlass>  needed once (see cutlass.sh)
#   FEATURES=cuda,flash-attn                        to build without cuDNN (candle's im2col convolutions)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cuda/env.sh
cuda_features_and_patch
out=npm/linux-x64-gnu-cuda
npx napi build --platform --release -p candlewick-node --features "$features" --no-js --output-dir "$CARGO_TARGET_DIR/napi-out" -- "${patch[@]}"
cp "$CARGO_TARGET_DIR"/napi-out/candlewick.linux-x64-gnu.node "$out/candlewick.linux-x64-gnu-cuda.node"
ls -la "$out/candlewick.linux-x64-gnu-cuda.node"
bash scripts/cuda/check-links.sh "$out/candlewick.linux-x64-gnu-cuda.node"
