#!/usr/bin/env bash
# The CUDA builds of the core's examples (full_size_check: parity; attention_bench), for the GPU
# test machine. Executables, unlike the .node, must resolve the driver's symbols at link time:
# the stub libcuda.so gets every driver function the CUDA .node uses (run build.sh first).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cuda/env.sh
cuda_features_and_patch
node_file=npm/linux-x64-gnu-cuda/candlewick.linux-x64-gnu-cuda.node
stub=$CUDA_HOME/lib64/stubs
nm -D --undefined-only "$node_file" | awk '{print $2}' | sed 's/@.*//' | grep -E '^cu[A-Z]' | sort -u \
  | sed 's/.*/void &(void) {}/' > "$stub/libcuda-stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub/libcuda.so" "$stub/libcuda-stub.c"
cargo build --release -p candlewick-core --examples --features "$features" "${patch[@]}"
ls -la "$CARGO_TARGET_DIR"/release/examples/{full_size_check,attention_bench}
