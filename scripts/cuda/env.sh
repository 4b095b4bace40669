# Sourced by the CUDA build scripts: the environment for building candle's CUDA kernels,
# cuDNN bindings and FlashAttention-2 on a machine without a GPU, for Hopper (sm_90).
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# (A failed install stops the sourcing script here rather than building with no toolkit.)
CUDA_HOME=$(bash "$_root/scripts/cuda/toolkit.sh") || { echo "env.sh: the CUDA toolkit could not be installed (above)" >&2; return 1; }
export CUDA_HOME
export CUDA_PATH=$CUDA_HOME
export PATH=$CUDA_HOME/bin:$PATH
export LIBRARY_PATH=$CUDA_HOME/lib64:$CUDA_HOME/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
export CPATH=$CUDA_HOME/include:$CUDA_HOME/include-cudnn:$CUDA_HOME/include-cudnn-frontend${CPATH:+:$CPATH}
export CUDNN_LIB=$CUDA_HOME/lib64
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDARC_CUDA_VERSION=13000
# FlashAttention-2: objects cached across builds; cutlass from a local checkout (no network at build time).
export CANDLE_FLASH_ATTN_BUILD_DIR=$_root/.cache/flash-attn-build
export CUDAFORGE_HOME=$_root/.cache/cudaforge
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}
mkdir -p "$CANDLE_FLASH_ATTN_BUILD_DIR" "$CUDAFORGE_HOME/git/checkouts"
export CARGO_TARGET_DIR=${CUDA_TARGET_DIR:-$_root/target/cuda}

# Sets `features` (FEATURES, default cuda,cudnn,flash-attn) and `patch` (cargo arguments that
# point candle-flash-attn at the trimmed copy), and keeps the committed Cargo.lock as it is (the
# patch rewrites candle-flash-attn's entry there) by restoring it when the calling script exits.
cuda_features_and_patch() {
  features=${FEATURES:-cuda,cudnn,flash-attn}
  patch=()
  if [[ $features == *flash-attn* ]]; then
    bash "$_root/scripts/cuda/cutlass.sh"
    local fa
    fa=$(bash "$_root/scripts/cuda/flash-attn-sd.sh")
    patch+=(--config "patch.crates-io.candle-flash-attn.path=\"$fa\"")
  fi
  mkdir -p "$CARGO_TARGET_DIR"
  cp "$_root/Cargo.lock" "$CARGO_TARGET_DIR/Cargo.lock.committed"
  trap 'cp "$CARGO_TARGET_DIR/Cargo.lock.committed" "$_root/Cargo.lock"' EXIT
}
