#!/usr/bin/env bash
# Installs the CUDA 13.0 toolkit pieces the CUDA build needs, from PyPI wheels, into
# .cache/cuda-13.0 (git-ignored), and lays them out as a CUDA_HOME: bin/nvcc, include/,
# lib64/ with the libraries candle links against, and a stub libcuda.so for linking on a
# machine without a GPU (the real one comes with the driver on the GPU machine).
#
# Pinned to 13.0: PTX from a newer toolkit does not load on the GPU machine's driver
# (580.x, CUDA 13.0) -- CUDA_ERROR_UNSUPPORTED_PTX_VERSION.
# Prints the CUDA_HOME path last.
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=$PWD/.cache/cuda-13.0
home=$prefix/home
# pip into a target folder, three tries (the wheels are about 1.5 GB: a dropped download
# should not fail CI), without pip's wheel cache (it would double the disk used).
pip_install() {
  local target=$1; shift
  local try
  for try in 1 2 3; do
    python3 -m pip install -q --disable-pip-version-check --no-cache-dir --retries 10 --timeout 60 \
      --no-deps --upgrade --target "$target" "$@" >&2 && return 0
    echo "toolkit.sh: pip install into $target failed (try $try of 3); free disk: $(df -h --output=avail "$PWD" | tail -1)" >&2
    sleep $((try * 10))
  done
  echo "toolkit.sh: could not install $* from PyPI" >&2
  return 1
}
# cuDNN's frontend (C++ headers only) for src/cuda/cudnn/sdpa.cpp: its graph API builds the fused attention.
frontend() {
  [ -e "$home/include-cudnn-frontend/cudnn_frontend.h" ] && return
  pip_install "$prefix/frontend" nvidia-cudnn-frontend==1.32.0
  mkdir -p "$home"
  ln -sfn "$prefix/frontend/include" "$home/include-cudnn-frontend"
  [ -e "$home/include-cudnn-frontend/cudnn_frontend.h" ] || { echo "toolkit.sh: cudnn_frontend.h is missing after the install" >&2; exit 1; }
}
# What the build uses from the toolkit; the first one missing, if any.
missing() {
  local piece
  for piece in bin/nvcc nvvm/bin/cicc include/cuda.h include-cudnn/cudnn.h lib64/stubs/libcuda.so; do
    [ -e "$home/$piece" ] || { echo "$piece"; return; }
  done
}
if [ -z "$(missing)" ]; then frontend; echo "$home"; exit 0; fi

pip_install "$prefix/site" \
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 \
  nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14 \
  nvidia-curand==10.4.0.35 nvidia-cudnn-cu13==9.13.1.26

cu=$prefix/site/nvidia/cu13
mkdir -p "$home/lib64/stubs"
ln -sfn "$cu/bin" "$home/bin"
ln -sfn "$cu/include" "$home/include"
ln -sfn "$cu/nvvm" "$home/nvvm"
for lib in "$cu"/lib/*.so* "$prefix"/site/nvidia/cudnn/lib/*.so*; do ln -sf "$lib" "$home/lib64/"; done
ln -sfn "$prefix/site/nvidia/cudnn/include" "$home/include-cudnn"
# Unversioned names for the linker.
for so in cublas cublasLt nvrtc curand cudart cudnn; do
  real=$(ls "$home/lib64/lib$so.so."* 2>/dev/null | head -1) || true
  [ -n "$real" ] && ln -sf "$real" "$home/lib64/lib$so.so"
done
# libcuda stub: an empty shared object with the driver's SONAME; the .node's undefined
# symbols resolve against the real driver library when it is loaded on the GPU machine.
echo 'void candlewick_cuda_stub(void) {}' > "$prefix/stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$home/lib64/stubs/libcuda.so" "$prefix/stub.c"
ln -sf "$home/lib64/stubs/libcuda.so" "$home/lib64/stubs/libcuda.so.1"
frontend
piece=$(missing)
[ -z "$piece" ] || { echo "toolkit.sh: $home/$piece is missing after the install" >&2; exit 1; }
echo "$home"
