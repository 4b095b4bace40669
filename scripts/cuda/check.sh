#!/usr/bin/env bash
# CI's guard for the CUDA code, on a machine without a GPU: `cargo check` of the core and the
# binding with the CUDA features (cuda, cudnn) against the pinned CUDA 13.0 toolkit from PyPI
# (toolkit.sh), so that code behind `#[cfg(feature = "cuda")]` cannot rot. Our kernels
# (src/cuda/kernels/*.cu) are compiled for real by the core's build.rs. candle-kernels' PTX is
# stubbed out (candle-kernels-stub.sh): its build runs nvcc on candle's ~200 kernel files, about
# 30 minutes on 2 cores, and a type check never loads them. flash-attn is left out for the same
# reason (its kernels: scripts/cuda/flash-attn-sd.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
source scripts/cuda/env.sh
export CARGO_TARGET_DIR=$root/target/cuda-check
cargo fetch --quiet
stub=$(bash scripts/cuda/candle-kernels-stub.sh)
cp Cargo.lock "$CARGO_TARGET_DIR.Cargo.lock.committed" 2>/dev/null || { mkdir -p "$CARGO_TARGET_DIR"; cp Cargo.lock "$CARGO_TARGET_DIR.Cargo.lock.committed"; }
trap 'cp "$CARGO_TARGET_DIR.Cargo.lock.committed" "$root/Cargo.lock"' EXIT
cargo check --release -p candlewick-core -p candlewick-node --features candlewick-core/cuda,candlewick-core/cudnn,candlewick-node/cudnn \
  --config "patch.crates-io.candle-kernels.path=\"$stub\""
echo "cuda check: ok"
