#!/usr/bin/env bash
# CI's guard for the CUDA build, on a machine without a GPU: builds the binding (the .node, a
# cdylib) with the CUDA features (cuda, cudnn) against the pinned CUDA 13.0 toolkit from PyPI
# (toolkit.sh), so that code behind `#[cfg(feature = "cuda")]` cannot rot, then checks that the
# linked library would load on the GPU machine (check-links.sh: NEEDED libcuda.so.1, every
# driver symbol resolved). Our kernels (src/cuda/kernels/*.cu) are compiled for real by the
# core's build.rs. candle-kernels' PTX is stubbed out (candle-kernels-stub.sh): its build runs
# nvcc on candle's ~200 kernel files, about 30 minutes on 2 cores, and this build never loads
# them. flash-attn is left out for the same reason (its kernels: scripts/cuda/flash-attn-sd.sh).
# A dev build without debug info: the link is what is checked, and it compiles in half the time
# of a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
source scripts/cuda/env.sh
export CARGO_TARGET_DIR=$root/target/cuda-check
cargo fetch --quiet
stub=$(bash scripts/cuda/candle-kernels-stub.sh)
mkdir -p "$CARGO_TARGET_DIR"
cp Cargo.lock "$CARGO_TARGET_DIR.Cargo.lock.committed"
trap 'cp "$CARGO_TARGET_DIR.Cargo.lock.committed" "$root/Cargo.lock"' EXIT
cargo build -p candlewick-core -p candlewick-node --features candlewick-core/cuda,candlewick-core/cudnn,candlewick-node/cudnn \
  --config "patch.crates-io.candle-kernels.path=\"$stub\"" --config profile.dev.debug=false
bash scripts/cuda/check-links.sh --self-test
bash scripts/cuda/check-links.sh "$CARGO_TARGET_DIR/debug/libcandlewick_node.so"
echo "cuda check: ok"
