#!/usr/bin/env bash
# The CUDA builds of the core's examples (full_size_check, img2img_check: parity; attention_bench,
# vae_decode_bench), for the GPU test machine. Executables, unlike the .node, must resolve the
# driver's symbols at link time: toolkit.sh's stub libcuda.so defines every function of cuda.h.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cuda/env.sh
cuda_features_and_patch
cargo build --release -p candlewick-core --examples --features "$features" "${patch[@]}"
ls -la "$CARGO_TARGET_DIR"/release/examples/{full_size_check,img2img_check,attention_bench,vae_decode_bench}
bash scripts/cuda/check-links.sh "$CARGO_TARGET_DIR"/release/examples/{full_size_check,img2img_check,attention_bench,vae_decode_bench}
