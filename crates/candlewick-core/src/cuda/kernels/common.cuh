// What every kernel family shares: conversions between the storage types and f32 (each kernel
// rounds to the storage type where PyTorch's separate ops would, so that f16 results match
// diffusers' op by op), activations, warp reductions, GroupNorm's mean and rstd, and the tiles of
// the transposing kernels. Included by each family's .cu (norm, layout, conv_tail, elementwise);
// build.rs compiles each of those to a PTX module of its own.
#pragma once
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
// Round to the storage type and back: where PyTorch would store an intermediate result.
template <typename T> __device__ __forceinline__ float round_as(float v) { return to_f(from_f<T>(v)); }

__device__ __forceinline__ float silu(float v) { return v / (1.0f + expf(-v)); }
__device__ __forceinline__ float gelu_erf(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }

// GEGLU of 8 f16 outputs from 16-byte loads (geglu_vec8_f16; geglu_amax_vec8_f16 in fp8.cu): vector j of
// row r of h [rows, 2n] (n_vectors = n / 8 vectors a half-row), the bias [2n] added first when has_bias.
// The arithmetic of elementwise.cu's geglu, element by element.
__device__ __forceinline__ uint4 geglu_vec8(const __half *h, const __half *bias, uint32_t r, uint32_t j,
                                            uint32_t n_vectors, int has_bias) {
  const uint4 *hr = reinterpret_cast<const uint4 *>(h) + (uint64_t)r * 2 * n_vectors;
  const uint4 a4 = hr[j], g4 = hr[n_vectors + j];
  uint4 ba4 = make_uint4(0, 0, 0, 0), bg4 = make_uint4(0, 0, 0, 0);
  if (has_bias) {
    ba4 = reinterpret_cast<const uint4 *>(bias)[j];
    bg4 = reinterpret_cast<const uint4 *>(bias)[n_vectors + j];
  }
  const __half *a = reinterpret_cast<const __half *>(&a4), *g = reinterpret_cast<const __half *>(&g4);
  const __half *ba = reinterpret_cast<const __half *>(&ba4), *bg = reinterpret_cast<const __half *>(&bg4);
  uint4 out4;
  __half *o = reinterpret_cast<__half *>(&out4);
#pragma unroll
  for (int k = 0; k < 8; k++) {
    float av = __half2float(a[k]), gv = __half2float(g[k]);
    if (has_bias) {
      av = round_as<__half>(av + __half2float(ba[k]));
      gv = round_as<__half>(gv + __half2float(bg[k]));
    }
    o[k] = __float2half_rn(av * round_as<__half>(gelu_erf(gv)));
  }
  return out4;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffff, v, offset);
  return v;
}

// A group's mean and rstd from its sums of x and x*x over `count` elements (the variance as
// E[x^2] - mean^2, clamped at 0): what every GroupNorm kernel's pass 2 starts from.
__device__ __forceinline__ float2 mean_rstd(float s, float ss, float count, float eps) {
  const float mean = s / count;
  return make_float2(mean, rsqrtf(fmaxf(ss / count - mean * mean, 0.f) + eps));
}

// The 32x32 tile of x [rows, cols] at (r0, c0) into shared memory (block (32, 8)), then a barrier.
template <typename T>
__device__ __forceinline__ void load_tile(const T *x, T (*tile)[33], uint32_t rows, uint32_t cols, uint32_t r0,
                                          uint32_t c0) {
  for (uint32_t j = threadIdx.y; j < 32; j += blockDim.y) {
    const uint32_t r = r0 + j, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[j][threadIdx.x] = x[(uint64_t)r * cols + c];
  }
  __syncthreads();
}

// The f16 transposing kernels on 64x64 tiles with two elements a thread (4-byte loads and
// stores instead of 2-byte ones): both dims even, pointers 4-byte aligned. Grid (ceil(cols / 64),
// ceil(rows / 64), batch), block (32, TILE_ROWS). Same arithmetic as the 32x32 versions. Each
// thread covers 64 / TILE_ROWS rows of the tile in loops with a compile-time stride, unrolled so
// that its loads can be issued together (at SD's lower levels these kernels have a few dozen
// blocks).
#define TILE_ROWS 8u
