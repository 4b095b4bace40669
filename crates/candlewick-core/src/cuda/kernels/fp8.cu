// FP8 (e4m3) quantization for cuBLASLt's FP8 matrix products (src/cuda/fused/fp8.rs, load option
// `fp8`): one scale a tensor, amax / 448 (e4m3's largest finite value), from the largest
// magnitude among its values. Two passes over an f16 tensor with 16-byte loads (its element count a
// multiple of 8, its address 16-byte aligned): amax_partials_f16 writes each block's largest |x|,
// quantize_e4m3_f16 reduces those again in every block, writes the values as x / scale (rounded to
// nearest, saturating at +-448) and, from its first block, the scale (cuBLASLt multiplies the
// product by it). Every launch is stream-ordered, so both run inside a captured CUDA graph.
#include "common.cuh"
#include <cuda_fp8.h>

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, offset));
  return v;
}

// The largest of each thread's `v` over the block (blockDim.x a multiple of 32): every thread
// gets it. Once a kernel (it uses one shared array).
__device__ __forceinline__ float block_max(float v) {
  __shared__ float warps[32];
  const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  v = warp_max(v);
  if (lane == 0) warps[warp] = v;
  __syncthreads();
  return warp_max(lane < (blockDim.x >> 5) ? warps[lane] : 0.f);
}

__device__ __forceinline__ float abs_max8(const uint4 q) {
  const __half2 *h = reinterpret_cast<const __half2 *>(&q);
  float m = 0.f;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const float2 f = __half22float2(h[i]);
    m = fmaxf(m, fmaxf(fabsf(f.x), fabsf(f.y)));
  }
  return m;
}

// partials[blockIdx.x] = max |x| over the block's vectors (8 halves each).
extern "C" __global__ void amax_partials_f16(const uint4 *x, uint64_t vectors, float *partials) {
  float m = 0.f;
  for (uint64_t v = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; v < vectors; v += (uint64_t)blockDim.x * gridDim.x)
    m = fmaxf(m, abs_max8(x[v]));
  m = block_max(m);
  if (threadIdx.x == 0) partials[blockIdx.x] = m;
}

// GEGLU as geglu_vec8_f16 computes it (f16 out), with each block's largest |y| in partials[blockIdx.x]:
// the quantizer's first pass folded into GEGLU for the FP8 layer after it (the feed-forward's net.2), so
// quantize_e4m3_f16 alone follows. Launched with the partials' count of blocks.
extern "C" __global__ void geglu_amax_vec8_f16(const __half *h, const __half *bias, __half *y, uint32_t vectors,
                                               uint32_t n_vectors, int has_bias, float *partials) {
  float m = 0.f;
  for (uint32_t v = blockIdx.x * blockDim.x + threadIdx.x; v < vectors; v += blockDim.x * gridDim.x) {
    const uint32_t r = v / n_vectors, j = v - r * n_vectors;
    const uint4 out = geglu_vec8(h, bias, r, j, n_vectors, has_bias);
    reinterpret_cast<uint4 *>(y)[v] = out;
    m = fmaxf(m, abs_max8(out));
  }
  m = block_max(m);
  if (threadIdx.x == 0) partials[blockIdx.x] = m;
}

// y = x / scale in e4m3 (8 values a vector), scale = max(partials) / 448 (1 for an all-zero x).
extern "C" __global__ void quantize_e4m3_f16(const uint4 *x, uint64_t vectors, const float *partials, uint32_t count,
                                             uint2 *y, float *scale) {
  float m = 0.f;
  for (uint32_t i = threadIdx.x; i < count; i += blockDim.x) m = fmaxf(m, partials[i]);
  const float amax = block_max(m);
  const float inv = amax > 0.f ? 448.f / amax : 1.f;
  if (blockIdx.x == 0 && threadIdx.x == 0) *scale = amax > 0.f ? amax / 448.f : 1.f;
  for (uint64_t v = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; v < vectors; v += (uint64_t)blockDim.x * gridDim.x) {
    const uint4 q = x[v];
    const __half2 *h = reinterpret_cast<const __half2 *>(&q);
    uint2 out;
    __nv_fp8x2_storage_t *o = reinterpret_cast<__nv_fp8x2_storage_t *>(&out);
#pragma unroll
    for (int i = 0; i < 4; i++) {
      float2 f = __half22float2(h[i]);
      f.x *= inv;
      f.y *= inv;
      o[i] = __nv_cvt_float2_to_fp8x2(f, __NV_SATFINITE, __NV_E4M3);
    }
    y[v] = out;
  }
}
