// Norms: LayerNorm over the last dim (a warp a row, a block a row, rows in registers) and
// diffusers' GroupNorm (+ SiLU), in two passes (partial sums per chunk of each group, then the
// affine) or, for small groups, one kernel; written NCHW or channels-last ([n, pixels, c]: a
// transformer's tokens or a channels-last convolution's input). Called from src/cuda/fused/norm.rs.
#include "common.cuh"
#include <cuda_fp8.h>

// LayerNorm over the last dim: x [rows, cols] -> y, one warp a row, statistics in f32 (mean,
// then the mean of squared deviations, as PyTorch), then the per-column affine.
template <typename T>
__device__ void layer_norm(const T *x, const T *weight, const T *bias, T *y, uint32_t rows, uint32_t cols,
                           float eps) {
  const uint64_t row = (uint64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const uint32_t lane = threadIdx.x % 32;
  if (row >= rows) return;
  const T *xr = x + row * cols;
  T *yr = y + row * cols;
  float s = 0.f;
  for (uint32_t c = lane; c < cols; c += 32) s += to_f(xr[c]);
  const float mean = warp_sum(s) / cols;
  float ss = 0.f;
  for (uint32_t c = lane; c < cols; c += 32) {
    const float d = to_f(xr[c]) - mean;
    ss += d * d;
  }
  const float rstd = rsqrtf(warp_sum(ss) / cols + eps);
  for (uint32_t c = lane; c < cols; c += 32) yr[c] = from_f<T>((to_f(xr[c]) - mean) * rstd * to_f(weight[c]) + to_f(bias[c]));
}

// The same for f16 rows of an even length up to 64 * PAIRS, every pointer 4-byte aligned: each
// lane reads PAIRS half2 values into registers once (a kernel per PAIRS, so that short rows do
// not pay long rows' registers).
template <int PAIRS>
__device__ void layer_norm_pairs(const __half *x, const __half *weight, const __half *bias, __half *y,
                                 uint32_t rows, uint32_t cols, float eps) {
  const uint64_t row = (uint64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const uint32_t lane = threadIdx.x % 32;
  if (row >= rows) return;
  const uint32_t pairs = cols / 2;
  const __half2 *xr = reinterpret_cast<const __half2 *>(x + row * cols);
  float2 v[PAIRS];
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < PAIRS; i++) {
    const uint32_t p = lane + 32 * i;
    v[i] = p < pairs ? __half22float2(xr[p]) : make_float2(0.f, 0.f);
    s += v[i].x + v[i].y;
  }
  const float mean = warp_sum(s) / cols;
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < PAIRS; i++) {
    if (lane + 32 * i < pairs) {
      const float dx = v[i].x - mean, dy = v[i].y - mean;
      ss += dx * dx + dy * dy;
    }
  }
  const float rstd = rsqrtf(warp_sum(ss) / cols + eps);
  const __half2 *w2 = reinterpret_cast<const __half2 *>(weight);
  const __half2 *b2 = reinterpret_cast<const __half2 *>(bias);
  __half2 *yr = reinterpret_cast<__half2 *>(y + row * cols);
#pragma unroll
  for (int i = 0; i < PAIRS; i++) {
    const uint32_t p = lane + 32 * i;
    if (p < pairs) {
      const float2 w = __half22float2(w2[p]), b = __half22float2(b2[p]);
      yr[p] = __floats2half2_rn((v[i].x - mean) * rstd * w.x + b.x, (v[i].y - mean) * rstd * w.y + b.y);
    }
  }
}

#define LAYER_NORM_PAIRS(PAIRS)                                                                         \
  extern "C" __global__ void layer_norm_pairs##PAIRS##_f16(const __half *x, const __half *weight,         \
                                                           const __half *bias, __half *y, uint32_t rows,  \
                                                           uint32_t cols, float eps) {                    \
    layer_norm_pairs<PAIRS>(x, weight, bias, y, rows, cols, eps);                                        \
  }
LAYER_NORM_PAIRS(4)
LAYER_NORM_PAIRS(8)
LAYER_NORM_PAIRS(16)
LAYER_NORM_PAIRS(24)

// The block's sums of s and ss into partial[(row * chunks + chunk) * 2 + {0, 1}].
__device__ __forceinline__ void store_partial_sums(float s, float ss, float *partial, uint32_t row) {
  __shared__ float sh[2][32];
  s = warp_sum(s);
  ss = warp_sum(ss);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) { sh[0][warp] = s; sh[1][warp] = ss; }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x / 32;
    s = lane < warps ? sh[0][lane] : 0.f;
    ss = lane < warps ? sh[1][lane] : 0.f;
    s = warp_sum(s);
    ss = warp_sum(ss);
    if (lane == 0) {
      float *p = partial + ((uint64_t)row * gridDim.x + blockIdx.x) * 2;
      p[0] = s;
      p[1] = ss;
    }
  }
}

// GroupNorm, pass 1: partial sums of x and x*x over chunks of each group's elements.
// x: [rows = n * groups, per_row] contiguous. Grid (chunks, rows); partial[(row * chunks + chunk) * 2 + {0, 1}].
// No atomics: pass 2 adds the partials in a fixed order, so results repeat run to run.
template <typename T>
__device__ void group_norm_stats(const T *x, float *partial, uint32_t per_row, uint32_t chunk) {
  const uint32_t row = blockIdx.y;
  const uint32_t start = blockIdx.x * chunk;
  const uint32_t end = min(start + chunk, per_row);
  const T *xr = x + (uint64_t)row * per_row;
  float s = 0.f, ss = 0.f;
#pragma unroll 8
  for (uint32_t i = start + threadIdx.x; i < end; i += blockDim.x) {
    const float v = to_f(xr[i]);
    s += v;
    ss += v * v;
  }
  store_partial_sums(s, ss, partial, row);
}

// group_norm_stats on f16 with 16-byte loads: per_row and chunk multiples of 8, x 16-byte aligned.
extern "C" __global__ void group_norm_stats_vec8_f16(const __half *x, float *partial, uint32_t per_row,
                                                     uint32_t chunk) {
  const uint32_t row = blockIdx.y;
  const uint32_t start = blockIdx.x * chunk / 8;
  const uint32_t end = min(blockIdx.x * chunk + chunk, per_row) / 8;
  const uint4 *xr = reinterpret_cast<const uint4 *>(x + (uint64_t)row * per_row);
  float s = 0.f, ss = 0.f;
  for (uint32_t i = start + threadIdx.x; i < end; i += blockDim.x) {
    const uint4 v4 = xr[i];
    const __half2 *h = reinterpret_cast<const __half2 *>(&v4);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const float2 f = __half22float2(h[k]);
      s += f.x + f.y;
      ss += f.x * f.x + f.y * f.y;
    }
  }
  store_partial_sums(s, ss, partial, row);
}

// GroupNorm, pass 2: y = (x - mean) * rstd * weight[c] + bias[c], then SiLU when `silu` is set.
// Same grid as pass 1; `chunks` partials per row; channel c = group * channels_per_group + i / inner.
template <typename T>
__device__ void group_norm_apply(const T *x, const float *partial, const T *weight, const T *bias, T *y,
                                 uint32_t per_row, uint32_t chunk, uint32_t chunks, uint32_t inner,
                                 uint32_t groups, uint32_t channels_per_group, float eps, int silu_after) {
  const uint32_t row = blockIdx.y;
  const float *p = partial + (uint64_t)row * chunks * 2;
  float s = 0.f, ss = 0.f;
  for (uint32_t k = 0; k < chunks; k++) { s += p[2 * k]; ss += p[2 * k + 1]; }
  const float2 st = mean_rstd(s, ss, per_row, eps);
  const float mean = st.x, rstd = st.y;
  const uint32_t group = row % groups;
  const uint32_t start = blockIdx.x * chunk;
  const uint32_t end = min(start + chunk, per_row);
  const uint64_t base = (uint64_t)row * per_row;
  for (uint32_t i = start + threadIdx.x; i < end; i += blockDim.x) {
    const uint32_t c = group * channels_per_group + i / inner;
    float v = (to_f(x[base + i]) - mean) * rstd * to_f(weight[c]) + to_f(bias[c]);
    if (silu_after) v = silu(round_as<T>(v));
    y[base + i] = from_f<T>(v);
  }
}

// GroupNorm between the passes, for group_norm_apply_tokens: mean and rstd of each row from
// pass 1's partials, one warp a row (a VAE group at 512x512 has 256 partials). Block 256 threads.
__device__ void finalize_group_stats(const float *partial, float *stats, uint32_t rows, uint32_t chunks,
                                     uint32_t per_row, float eps) {
  const uint32_t row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float *p = partial + (uint64_t)row * chunks * 2;
  float s = 0.f, ss = 0.f;
  for (uint32_t k = lane; k < chunks; k += 32) { s += p[2 * k]; ss += p[2 * k + 1]; }
  s = warp_sum(s);
  ss = warp_sum(ss);
  if (lane != 0) return;
  const float2 st = mean_rstd(s, ss, per_row, eps);
  stats[2 * row] = st.x;
  stats[2 * row + 1] = st.y;
}

// GroupNorm, pass 2 written channels-last: x [batch, channels, pixels] -> y [batch, pixels,
// channels] (the input of a channels-last convolution, or a transformer's tokens), through
// transpose's 32x32 tiles; the same arithmetic as group_norm_apply. Grid (ceil(pixels / 32),
// ceil(channels / 32), batch), block (32, 8).
template <typename T>
__device__ void group_norm_apply_tokens(const T *x, const float *stats, const T *weight, const T *bias, T *y,
                                        uint32_t channels, uint32_t pixels, uint32_t groups,
                                        uint32_t channels_per_group, int silu_after) {
  __shared__ T tile[32][33];
  const uint64_t base = (uint64_t)blockIdx.z * channels * pixels;
  const uint32_t c0 = blockIdx.y * 32, p0 = blockIdx.x * 32;
  for (uint32_t j = threadIdx.y; j < 32; j += blockDim.y) {
    const uint32_t c = c0 + j, p = p0 + threadIdx.x;
    if (c < channels && p < pixels) {
      const float *st = stats + 2 * ((uint64_t)blockIdx.z * groups + c / channels_per_group);
      float v = (to_f(x[base + (uint64_t)c * pixels + p]) - st[0]) * st[1] * to_f(weight[c]) + to_f(bias[c]);
      if (silu_after) v = silu(round_as<T>(v));
      tile[j][threadIdx.x] = from_f<T>(v);
    }
  }
  __syncthreads();
  for (uint32_t j = threadIdx.y; j < 32; j += blockDim.y) {
    const uint32_t p = p0 + j, c = c0 + threadIdx.x;
    if (c < channels && p < pixels) y[base + (uint64_t)p * channels + c] = tile[threadIdx.x][j];
  }
}

// group_norm_apply_tokens: x [batch, channels, pixels] -> y [batch, pixels, channels].
// With `chunks` > 0, `stats` holds pass 1's partials (`chunks` a row, rows of `per_row`
// elements) and each block finalizes the groups its 64 channels touch (as finalize_group_stats
// does, summing the partials in order) instead of a launch of its own.
extern "C" __global__ void group_norm_apply_tokens_pairs_f16(const __half *x, const float *stats,
                                                             const __half *weight, const __half *bias, __half *y,
                                                             uint32_t channels, uint32_t pixels, uint32_t groups,
                                                             uint32_t channels_per_group, int silu_after,
                                                             uint32_t chunks, uint32_t per_row, float eps) {
  __shared__ __half tile[64][65];
  __shared__ float block_stats[65][2];
  const uint64_t base = (uint64_t)blockIdx.z * channels * pixels;
  const uint32_t c0 = blockIdx.y * 64, p0 = blockIdx.x * 64, tx2 = 2 * threadIdx.x;
  const uint32_t first_group = c0 / channels_per_group;
  if (chunks > 0) {
    const uint32_t last_group = min(c0 + 63, channels - 1) / channels_per_group;
    const uint32_t g = first_group + threadIdx.y * 32 + threadIdx.x;
    if (g <= last_group) {
      const uint32_t row = blockIdx.z * groups + g;
      const float *p = stats + (uint64_t)row * chunks * 2;
      float s = 0.f, ss = 0.f;
      for (uint32_t k = 0; k < chunks; k++) { s += p[2 * k]; ss += p[2 * k + 1]; }
      const float2 st = mean_rstd(s, ss, per_row, eps);
      block_stats[g - first_group][0] = st.x;
      block_stats[g - first_group][1] = st.y;
    }
    __syncthreads();
  }
#pragma unroll
  for (uint32_t j = threadIdx.y; j < 64; j += TILE_ROWS) {
    const uint32_t c = c0 + j, p = p0 + tx2;
    if (c < channels && p < pixels) {
      const float *st = chunks > 0 ? block_stats[c / channels_per_group - first_group]
                                   : stats + 2 * ((uint64_t)blockIdx.z * groups + c / channels_per_group);
      const float w = __half2float(weight[c]), b = __half2float(bias[c]);
      const float2 v = __half22float2(*reinterpret_cast<const __half2 *>(x + base + (uint64_t)c * pixels + p));
      float a0 = (v.x - st[0]) * st[1] * w + b, a1 = (v.y - st[0]) * st[1] * w + b;
      if (silu_after) {
        a0 = silu(round_as<__half>(a0));
        a1 = silu(round_as<__half>(a1));
      }
      tile[j][tx2] = __float2half_rn(a0);
      tile[j][tx2 + 1] = __float2half_rn(a1);
    }
  }
  __syncthreads();
#pragma unroll
  for (uint32_t j = threadIdx.y; j < 64; j += TILE_ROWS) {
    const uint32_t p = p0 + j, c = c0 + tx2;
    if (c < channels && p < pixels) {
      *reinterpret_cast<__half2 *>(y + base + (uint64_t)p * channels + c) = __halves2half2(tile[tx2][j], tile[tx2 + 1][j]);
    }
  }
}

// The sum of `v` over the block, returned to every thread (block a multiple of 32 threads).
__device__ float block_sum(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // `partial` and `total` are free: every thread has read a previous result
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = warp_sum(lane < (int)(blockDim.x / 32) ? partial[lane] : 0.f);
    if (lane == 0) total = v;
  }
  __syncthreads();
  return total;
}

// LayerNorm for f16 rows whose length is a multiple of 8, up to 8 * 1024, every pointer 16-byte
// aligned: a block a row, each thread one 16-byte chunk of 8 values held in registers (block a
// multiple of 32 threads, at least cols / 8). A block a row keeps every SM busy where SD's
// transformers have few rows (512 and 128 at the 16x16 and 8x8 levels); statistics as the
// other LayerNorm kernels: the mean, then the mean of squared deviations, in f32.
extern "C" __global__ void layer_norm_vec8_f16(const __half *x, const __half *weight, const __half *bias, __half *y,
                                               uint32_t rows, uint32_t cols, float eps) {
  const uint64_t offset = (uint64_t)blockIdx.x * cols;
  const uint32_t chunk = threadIdx.x;
  const bool active = chunk < cols / 8;
  float v[8];
  float s = 0.f;
  if (active) {
    const uint4 raw = reinterpret_cast<const uint4 *>(x + offset)[chunk];
    const __half2 *h = reinterpret_cast<const __half2 *>(&raw);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const float2 f = __half22float2(h[k]);
      v[2 * k] = f.x;
      v[2 * k + 1] = f.y;
      s += f.x + f.y;
    }
  }
  const float mean = block_sum(s) / cols;
  float ss = 0.f;
  if (active) {
#pragma unroll
    for (int k = 0; k < 8; k++) ss += (v[k] - mean) * (v[k] - mean);
  }
  const float rstd = rsqrtf(block_sum(ss) / cols + eps);
  if (!active) return;
  const uint4 w_raw = reinterpret_cast<const uint4 *>(weight)[chunk];
  const uint4 b_raw = reinterpret_cast<const uint4 *>(bias)[chunk];
  const __half2 *w = reinterpret_cast<const __half2 *>(&w_raw);
  const __half2 *b = reinterpret_cast<const __half2 *>(&b_raw);
  uint4 out;
  __half2 *o = reinterpret_cast<__half2 *>(&out);
#pragma unroll
  for (int k = 0; k < 4; k++) {
    const float2 wf = __half22float2(w[k]), bf = __half22float2(b[k]);
    o[k] = __floats2half2_rn((v[2 * k] - mean) * rstd * wf.x + bf.x, (v[2 * k + 1] - mean) * rstd * wf.y + bf.y);
  }
  reinterpret_cast<uint4 *>(y + offset)[chunk] = out;
}

// LayerNorm straight into e4m3 for an FP8 matrix product (load option `fp8`): the normalized
// row times 448 / bound, rounded to nearest and saturated, 8 values a uint2, where the f16 path
// writes the row and the quantizer reads it twice (its largest magnitude, then the values). The
// scale is static: `bound` = sqrt(cols) * max|weight| + max|bias| can never be exceeded (the
// normalized values' squares sum to at most cols), so no pass for the largest magnitude is needed;
// scale_out (the packed buffer's scale) gets bound / 448 from the first thread. A warp a row, each
// lane CHUNKS 16-byte chunks of 8 values in registers: cols a multiple of 8, up to 256 * CHUNKS;
// x, weight and bias 16-byte aligned, y 8-byte aligned. Statistics as layer_norm_vec8_f16's.
template <int CHUNKS>
__device__ void layer_norm_e4m3(const __half *x, const __half *weight, const __half *bias, uint2 *y, uint32_t rows,
                                uint32_t cols, float eps, float bound, float *scale_out) {
  const uint64_t row = (uint64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const uint32_t lane = threadIdx.x % 32, chunks = cols / 8;
  if (blockIdx.x == 0 && threadIdx.x == 0) *scale_out = bound / 448.f;
  if (row >= rows) return;
  const uint4 *xr = reinterpret_cast<const uint4 *>(x + row * cols);
  float v[CHUNKS][8];
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < CHUNKS; i++) {
    const uint32_t c = lane + 32 * i;
    const uint4 raw = c < chunks ? xr[c] : make_uint4(0, 0, 0, 0);
    const __half2 *h = reinterpret_cast<const __half2 *>(&raw);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const float2 f = __half22float2(h[k]);
      v[i][2 * k] = f.x;
      v[i][2 * k + 1] = f.y;
      s += f.x + f.y;
    }
  }
  const float mean = warp_sum(s) / cols;
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < CHUNKS; i++) {
    if (lane + 32 * i < chunks) {
#pragma unroll
      for (int k = 0; k < 8; k++) ss += (v[i][k] - mean) * (v[i][k] - mean);
    }
  }
  const float rstd = rsqrtf(warp_sum(ss) / cols + eps);
  const float inv = 448.f / bound;
  uint2 *yr = y + row * chunks;
#pragma unroll
  for (int i = 0; i < CHUNKS; i++) {
    const uint32_t c = lane + 32 * i;
    if (c >= chunks) continue;
    const uint4 w_raw = reinterpret_cast<const uint4 *>(weight)[c];
    const uint4 b_raw = reinterpret_cast<const uint4 *>(bias)[c];
    const __half2 *w = reinterpret_cast<const __half2 *>(&w_raw);
    const __half2 *b = reinterpret_cast<const __half2 *>(&b_raw);
    uint2 out;
    __nv_fp8x2_storage_t *o = reinterpret_cast<__nv_fp8x2_storage_t *>(&out);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const float2 wf = __half22float2(w[k]), bf = __half22float2(b[k]);
      const float2 f = make_float2(((v[i][2 * k] - mean) * rstd * wf.x + bf.x) * inv,
                                   ((v[i][2 * k + 1] - mean) * rstd * wf.y + bf.y) * inv);
      o[k] = __nv_cvt_float2_to_fp8x2(f, __NV_SATFINITE, __NV_E4M3);
    }
    yr[c] = out;
  }
}

#define LAYER_NORM_E4M3(CHUNKS)                                                                         \
  extern "C" __global__ void layer_norm_e4m3_##CHUNKS##_f16(const __half *x, const __half *weight,        \
                                                           const __half *bias, uint2 *y, uint32_t rows,   \
                                                           uint32_t cols, float eps, float bound,        \
                                                           float *scale_out) {                           \
    layer_norm_e4m3<CHUNKS>(x, weight, bias, y, rows, cols, eps, bound, scale_out);                      \
  }
LAYER_NORM_E4M3(2)
LAYER_NORM_E4M3(4)
LAYER_NORM_E4M3(8)

// GroupNorm in one kernel where a group fits in shared memory: x [batch, channels, pixels] ->
// y [batch, pixels, channels] (channels-last, as group_norm_apply_tokens writes), SiLU after
// when `silu_after`. One block a group of one sample, grid (groups, batch): the block reads the
// group once into shared memory, takes the mean, then the variance about the mean, and writes
// the normalized values channels-last, where the two-kernel path launches twice and reads the
// activations twice. channels_per_group even, pixels a multiple of 8, x 16-byte and y 4-byte
// aligned. Dynamic shared memory: channels_per_group * (pixels + 2) halves (rows padded so that
// neighbouring channels start on different banks).
extern "C" __global__ void group_norm_tokens_single_f16(const __half *x, const __half *weight, const __half *bias,
                                                        __half *y, uint32_t channels, uint32_t pixels,
                                                        uint32_t channels_per_group, float eps, int silu_after) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  __half *group = reinterpret_cast<__half *>(shared_bytes);
  const uint32_t row = pixels + 2, n = channels_per_group * pixels;
  const uint32_t first_channel = blockIdx.x * channels_per_group;
  const uint4 *src = reinterpret_cast<const uint4 *>(x + ((uint64_t)blockIdx.y * channels + first_channel) * pixels);
  float s = 0.f;
#pragma unroll 4
  for (uint32_t v = threadIdx.x; v < n / 8; v += blockDim.x) {
    const uint4 v4 = src[v];
    const uint32_t c = v * 8 / pixels, p = v * 8 - c * pixels;
    const __half2 *h = reinterpret_cast<const __half2 *>(&v4);
    __half2 *dst = reinterpret_cast<__half2 *>(group + c * row + p);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      dst[k] = h[k];
      const float2 f = __half22float2(h[k]);
      s += f.x + f.y;
    }
  }
  const float mean = block_sum(s) / n;
  float ss = 0.f;
  for (uint32_t i = threadIdx.x; i < n / 2; i += blockDim.x) {
    const uint32_t c = 2 * i / pixels, p = 2 * i - c * pixels;
    const float2 f = __half22float2(*reinterpret_cast<const __half2 *>(group + c * row + p));
    ss += (f.x - mean) * (f.x - mean) + (f.y - mean) * (f.y - mean);
  }
  const float rstd = rsqrtf(block_sum(ss) / n + eps);
  const uint32_t pairs = channels_per_group / 2;
  __half *out = y + (uint64_t)blockIdx.y * pixels * channels + first_channel;
  for (uint32_t i = threadIdx.x; i < pixels * pairs; i += blockDim.x) {
    const uint32_t p = i / pairs, c = 2 * (i - p * pairs);
    const float w0 = __half2float(weight[first_channel + c]), w1 = __half2float(weight[first_channel + c + 1]);
    const float b0 = __half2float(bias[first_channel + c]), b1 = __half2float(bias[first_channel + c + 1]);
    float a0 = (__half2float(group[c * row + p]) - mean) * rstd * w0 + b0;
    float a1 = (__half2float(group[(c + 1) * row + p]) - mean) * rstd * w1 + b1;
    if (silu_after) {
      a0 = silu(round_as<__half>(a0));
      a1 = silu(round_as<__half>(a1));
    }
    *reinterpret_cast<__half2 *>(out + (uint64_t)p * channels + c) = __floats2half2_rn(a0, a1);
  }
}

extern "C" __global__ void group_norm_finalize(const float *partial, float *stats, uint32_t rows,
                                               uint32_t chunks, uint32_t per_row, float eps) {
  finalize_group_stats(partial, stats, rows, chunks, per_row, eps);
}

#define NORM_KERNELS(T, SUFFIX)                                                                         \
  extern "C" __global__ void layer_norm_##SUFFIX(const T *x, const T *weight, const T *bias, T *y,        \
                                                 uint32_t rows, uint32_t cols, float eps) {              \
    layer_norm<T>(x, weight, bias, y, rows, cols, eps);                                                  \
  }                                                                                                      \
  extern "C" __global__ void group_norm_stats_##SUFFIX(const T *x, float *partial, uint32_t per_row,       \
                                                       uint32_t chunk) {                                  \
    group_norm_stats<T>(x, partial, per_row, chunk);                                                     \
  }                                                                                                      \
  extern "C" __global__ void group_norm_apply_##SUFFIX(                                                  \
      const T *x, const float *partial, const T *weight, const T *bias, T *y, uint32_t per_row,           \
      uint32_t chunk, uint32_t chunks, uint32_t inner, uint32_t groups, uint32_t channels_per_group,      \
      float eps, int silu_after) {                                                                       \
    group_norm_apply<T>(x, partial, weight, bias, y, per_row, chunk, chunks, inner, groups,             \
                        channels_per_group, eps, silu_after);                                            \
  }                                                                                                      \
  extern "C" __global__ void group_norm_apply_tokens_##SUFFIX(                                           \
      const T *x, const float *stats, const T *weight, const T *bias, T *y, uint32_t channels,            \
      uint32_t pixels, uint32_t groups, uint32_t channels_per_group, int silu_after) {                    \
    group_norm_apply_tokens<T>(x, stats, weight, bias, y, channels, pixels, groups, channels_per_group,   \
                               silu_after);                                                              \
  }

NORM_KERNELS(__half, f16)
NORM_KERNELS(float, f32)
