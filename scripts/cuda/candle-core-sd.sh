#!/usr/bin/env bash
# candle-core 0.11.1's cuDNN convolutions run f16 with an f16 compute type (cuDNN's
# TRUE_HALF_CONFIG) and leave the math type at its default. Measured on an H200 (bench/NOTES.md,
# 2026-11-26): f16 Stable Diffusion ran 4x slower than f32, with 20 dB less PSNR than diffusers'
# f16. PyTorch runs f16 convolutions with an f32 compute type on tensor cores (PSEUDO_HALF_CONFIG).
#
# This makes a copy of the published crate in .cache/candle-core-sd (git-ignored) with two
# changes, for the CUDA build only (scripts/cuda/env.sh points cargo at it with --config patch):
#   1. f16 convolutions compute in f32 (as candle already does for bf16);
#   2. the convolution's math type: tensor cores for f16/bf16; for f32, FMA (true f32) unless
#      TF32 is allowed (candle's gemm_reduced_precision_f32, candlewick's `tf32` option).
# Prints the copy's path last.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=0.11.1
dest=$PWD/.cache/candle-core-sd
if [ -f "$dest/.candlewick-patched" ]; then echo "$dest"; exit 0; fi
cargo fetch -q >&2
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-core-$version | head -1)
[ -d "$src" ] || { echo "candle-core $version not found in the cargo registry" >&2; exit 1; }
rm -rf "$dest" && cp -r "$src" "$dest" && chmod -R u+w "$dest"
python3 - "$dest" <<'PY'
import sys
dest = sys.argv[1]
mod = f"{dest}/src/cuda_backend/mod.rs"
text = open(mod).read()
assert text.count("crate::cudnn::launch_conv2d::<f16, f16>(") == 1
open(mod, "w").write(text.replace("crate::cudnn::launch_conv2d::<f16, f16>(", "crate::cudnn::launch_conv2d::<f16, f32>("))
# Only launch_conv2d (the file's first function) gets the math type.
cudnn = f"{dest}/src/cuda_backend/cudnn.rs"
text = open(cudnn).read()
conv2d, rest = text.split("pub(crate) fn launch_conv1d", 1)
old = "    let conv = cudnn.create_conv2d::<Y>("
assert conv2d.count(old) == 1
head, tail = conv2d.split(old, 1)
call_end = tail.index(")?;\n") + len(")?;\n")
math = """    // candlewick (scripts/cuda/candle-core-sd.sh): tensor cores for half types; true f32 unless TF32 is allowed.
    conv.set_math_type(match T::DTYPE {
        crate::DType::F32 if !crate::cuda_backend::gemm_reduced_precision_f32() => {
            cudarc::cudnn::sys::cudnnMathType_t::CUDNN_FMA_MATH
        }
        crate::DType::F16 | crate::DType::BF16 => cudarc::cudnn::sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        _ => cudarc::cudnn::sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
    })?;
"""
conv2d = head + "    let mut conv = cudnn.create_conv2d::<Y>(" + tail[:call_end] + math + tail[call_end:]
open(cudnn, "w").write(conv2d + "pub(crate) fn launch_conv1d" + rest)
PY
touch "$dest/.candlewick-patched"
echo "$dest"
