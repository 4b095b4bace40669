#!/usr/bin/env bash
# Installs the CUDA 13.0 toolkit pieces the CUDA build needs, from PyPI wheels, into the cache
# folder that outlives a clone (scripts/cache-dir.sh: ~/.cache/candlewick/cuda-13.0, else the
# clone's .cache/), and lays them out as a CUDA_HOME: bin/nvcc, include/, lib64/ with the
# libraries candle links against, and a stub libcuda.so for linking on a machine without a GPU
# (the real one comes with the driver on the GPU machine).
#
# The stub defines every cu* function that cuda.h declares, under the driver's SONAME
# libcuda.so.1: the linker then resolves the build's driver calls against it and records
# NEEDED libcuda.so.1, so the dynamic loader binds them to the driver's library on the GPU
# machine. (An empty stub let `--as-needed` drop libcuda, and the .node failed to load with
# "undefined symbol: cuCtxGetCurrent"; scripts/cuda/check-links.sh guards this in CI.)
#
# Pinned to 13.0: PTX from a newer toolkit does not load on the GPU machine's driver
# (580.x, CUDA 13.0) -- CUDA_ERROR_UNSUPPORTED_PTX_VERSION.
# Several clones may run this at once: an flock on cuda-13.0.lock makes them take turns.
# Prints the CUDA_HOME path last.
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=$(bash scripts/cache-dir.sh)/cuda-13.0
home=$prefix/home
mkdir -p "$prefix"
exec 9> "$prefix.lock"
flock 9
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
wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35 nvidia-cudnn-cu13==9.13.1.26)
frontend_wheel=nvidia-cudnn-frontend==1.32.0
# Each pip target folder records what it holds once its install finished (an interrupted
# download leaves no record and is redone).
installed() { [ "$(cat "$1/.candlewick-installed" 2>/dev/null)" = "${*:2}" ]; }
install_into() {
  installed "$@" && return
  rm -rf "$1"
  pip_install "$@"
  echo "${*:2}" > "$1/.candlewick-installed"
}
install_into "$prefix/site" "${wheels[@]}"
# cuDNN's frontend (C++ headers only) for src/cuda/cudnn/sdpa.cpp: its graph API builds the fused attention.
install_into "$prefix/frontend" "$frontend_wheel"

# The CUDA_HOME layout, with relative links (the folder can be moved or copied whole).
cu=../site/nvidia/cu13
mkdir -p "$home/lib64/stubs"
ln -sfn "$cu/bin" "$home/bin"
ln -sfn "$cu/include" "$home/include"
ln -sfn "$cu/nvvm" "$home/nvvm"
ln -sfn ../site/nvidia/cudnn/include "$home/include-cudnn"
ln -sfn ../frontend/include "$home/include-cudnn-frontend"
(cd "$home/lib64" && for lib in ../$cu/lib/*.so* ../../site/nvidia/cudnn/lib/*.so*; do ln -sf "$lib" .; done)
# Unversioned names for the linker.
for so in cublas cublasLt nvrtc curand cudart cudnn; do
  real=$(cd "$home/lib64" && ls "lib$so.so."* 2>/dev/null | head -1) || true
  [ -n "$real" ] && ln -sf "$real" "$home/lib64/lib$so.so"
done

# The libcuda stub: every function cuda.h declares, under each name the header can map a call
# to (the _v2.._v4 names, the legacy names of __CUDA_API_VERSION_INTERNAL, the per-thread-stream
# _ptsz/_ptds names), each an empty function: only its name matters to the linker.
stub_c=$prefix/libcuda-stub.c
for defines in "" -D__CUDA_API_VERSION_INTERNAL -DCUDA_API_PER_THREAD_DEFAULT_STREAM; do
  cc -E -P $defines -I"$home/include" "$home/include/cuda.h" | tr -s ' \n\t' ' ' | grep -oE '\bcu[A-Z][A-Za-z0-9_]* ?\(' | tr -d ' ('
done | sort -u | sed 's/.*/void &(void) {}/' > "$stub_c.new"
[ "$(wc -l < "$stub_c.new")" -gt 400 ] || { echo "toolkit.sh: found only $(wc -l < "$stub_c.new") driver functions in cuda.h" >&2; exit 1; }
if ! cmp -s "$stub_c.new" "$stub_c" || ! nm -D --defined-only "$home/lib64/stubs/libcuda.so" 2>/dev/null | grep -q ' cuCtxGetCurrent$'; then
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$home/lib64/stubs/libcuda.so" -x c "$stub_c.new"
  mv "$stub_c.new" "$stub_c"
fi
rm -f "$stub_c.new"
ln -sf libcuda.so "$home/lib64/stubs/libcuda.so.1"

# What the build uses from the toolkit: stop on the first piece missing.
for piece in bin/nvcc nvvm/bin/cicc include/cuda.h include-cudnn/cudnn.h include-cudnn-frontend/cudnn_frontend.h \
  lib64/libcudnn.so lib64/libcublas.so lib64/stubs/libcuda.so.1; do
  [ -e "$home/$piece" ] || { echo "toolkit.sh: $home/$piece is missing after the install" >&2; exit 1; }
done
echo "$home"
