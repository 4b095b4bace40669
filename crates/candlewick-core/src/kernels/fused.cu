// Fused CUDA kernels for what candle composes from several generic (and, for broadcasts,
// index-computing) kernels: bias adds, GroupNorm (+ SiLU), GEGLU, layout transposes and the
// tail of a channels-last convolution. Compiled to PTX by build.rs
// for CUDA builds; called from src/models/fused.rs. Each rounds to the storage type where
// PyTorch's separate ops would, so f16 results match diffusers' op by op.
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

// y[i] = x[i] + bias[(i / inner) % channels]: a per-channel bias on [n, channels, inner...]
// (inner = h*w for NCHW, 1 for the last dim of a linear layer's output).
template <typename T>
__device__ void bias_add(const T *x, const T *bias, T *y, uint64_t numel, uint32_t inner, uint32_t channels) {
  if (numel < (1ull << 32)) {
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += blockDim.x * gridDim.x) {
      y[i] = from_f<T>(to_f(x[i]) + to_f(bias[(i / inner) % channels]));
    }
  } else {
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += (uint64_t)blockDim.x * gridDim.x) {
      y[i] = from_f<T>(to_f(x[i]) + to_f(bias[(i / inner) % channels]));
    }
  }
}

// y[i] = residual[i] + (x[i] + bias[(i / inner) % channels]): a linear layer's (or a 1x1
// convolution's) bias and the residual connection after it, rounded as two separate ops.
template <typename T>
__device__ void bias_add_residual(const T *x, const T *bias, const T *residual, T *y, uint64_t numel,
                                  uint32_t inner, uint32_t channels) {
  for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += (uint64_t)blockDim.x * gridDim.x) {
    y[i] = from_f<T>(to_f(residual[i]) + round_as<T>(to_f(x[i]) + to_f(bias[(i / inner) % channels])));
  }
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

// GEGLU: h [rows, 2n] -> y [rows, n], y = h[:, :n] * gelu(h[:, n:]) (diffusers' GEGLU, the
// GELU's result rounded to T before the product as PyTorch's two ops do). With `has_bias`, the
// projection's bias [2n] is added first (rounded to T, as the projection's output would be).
template <typename T>
__device__ void geglu(const T *h, const T *bias, T *y, uint64_t numel, uint32_t n, int has_bias) {
  for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += (uint64_t)blockDim.x * gridDim.x) {
    const uint64_t r = i / n;
    const uint32_t j = (uint32_t)(i - r * n);
    const T *hr = h + r * 2 * n;
    float a = to_f(hr[j]), g = to_f(hr[n + j]);
    if (has_bias) {
      a = round_as<T>(a + to_f(bias[j]));
      g = round_as<T>(g + to_f(bias[n + j]));
    }
    y[i] = from_f<T>(a * round_as<T>(gelu_erf(g)));
  }
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

// Batched transpose: x [batch, rows, cols] -> y [batch, cols, rows], through 32x32 tiles in
// shared memory so that reads and writes are both coalesced (candle's strided copy computes an
// index per element). Grid (ceil(cols / 32), ceil(rows / 32), batch), block (32, 8).
template <typename T>
__device__ void transpose(const T *x, T *y, uint32_t rows, uint32_t cols) {
  __shared__ T tile[32][33];
  const uint64_t base = (uint64_t)blockIdx.z * rows * cols;
  const uint32_t r0 = blockIdx.y * 32, c0 = blockIdx.x * 32;
  load_tile(x + base, tile, rows, cols, r0, c0);
  for (uint32_t j = threadIdx.y; j < 32; j += blockDim.y) {
    const uint32_t c = c0 + j, r = r0 + threadIdx.x;
    if (r < rows && c < cols) y[base + (uint64_t)c * rows + r] = tile[threadIdx.x][j];
  }
}

// 2x nearest-neighbour upsampling into channels-last: x [batch, rows = c, cols = h*w] (NCHW,
// `width` = w) -> y [batch, 2h, 2w, c], each pixel written to its four destinations: the next
// channels-last convolution's input in one pass (instead of an upsampling copy, then a
// transpose). Grid and block as transpose's.
template <typename T>
__device__ void upsample2x_tokens(const T *x, T *y, uint32_t rows, uint32_t cols, uint32_t width) {
  __shared__ T tile[32][33];
  const uint32_t r0 = blockIdx.y * 32, c0 = blockIdx.x * 32;
  load_tile(x + (uint64_t)blockIdx.z * rows * cols, tile, rows, cols, r0, c0);
  const uint64_t out_base = (uint64_t)blockIdx.z * rows * cols * 4;
  for (uint32_t j = threadIdx.y; j < 32; j += blockDim.y) {
    const uint32_t pixel = c0 + j, r = r0 + threadIdx.x;
    if (r < rows && pixel < cols) {
      const T v = tile[threadIdx.x][j];
      const uint64_t py = pixel / width, px = pixel % width;
      for (uint32_t dy = 0; dy < 2; ++dy) {
        const uint64_t row = ((2 * py + dy) * 2 * width + 2 * px) * rows + r;
        y[out_base + row] = v;
        y[out_base + row + rows] = v;
      }
    }
  }
}

// A channels-last convolution's output back to NCHW, with what follows the convolution in a
// resnet fused in: x [batch, rows = p*q, cols = k] -> y [batch, k, p*q],
//   y = x + bias[c], then by `extra_kind`: 0 nothing more; 1 + extra[b * per_sample_stride + c]
//   (a time embedding); 2 extra[b, c, r] + y (a shortcut),
// each step rounded to T as PyTorch's separate ops are. Grid and block as transpose's.
template <typename T>
__device__ void conv_epilogue(const T *x, const T *bias, const T *extra, T *y, uint32_t rows, uint32_t cols,
                              uint32_t per_sample_stride, int extra_kind) {
  __shared__ T tile[32][33];
  const uint64_t base = (uint64_t)blockIdx.z * rows * cols;
  const uint32_t r0 = blockIdx.y * 32, c0 = blockIdx.x * 32;
  load_tile(x + base, tile, rows, cols, r0, c0);
  for (uint32_t j = threadIdx.y; j < 32; j += blockDim.y) {
    const uint32_t c = c0 + j, r = r0 + threadIdx.x;
    if (r < rows && c < cols) {
      float v = round_as<T>(to_f(tile[threadIdx.x][j]) + to_f(bias[c]));
      const uint64_t o = base + (uint64_t)c * rows + r;
      if (extra_kind == 1) v = v + to_f(extra[(uint64_t)blockIdx.z * per_sample_stride + c]);
      if (extra_kind == 2) v = to_f(extra[o]) + v;
      y[o] = from_f<T>(v);
    }
  }
}

#define FUSED_KERNELS(T, SUFFIX)                                                                        \
  extern "C" __global__ void bias_add_##SUFFIX(const T *x, const T *bias, T *y, uint64_t numel,            \
                                               uint32_t inner, uint32_t channels) {                       \
    bias_add<T>(x, bias, y, numel, inner, channels);                                                     \
  }                                                                                                      \
  extern "C" __global__ void bias_add_residual_##SUFFIX(const T *x, const T *bias, const T *residual, T *y, \
                                                        uint64_t numel, uint32_t inner, uint32_t channels) { \
    bias_add_residual<T>(x, bias, residual, y, numel, inner, channels);                                  \
  }                                                                                                      \
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
  }                                                                                                      \
  extern "C" __global__ void geglu_##SUFFIX(const T *h, const T *bias, T *y, uint64_t numel, uint32_t n, \
                                            int has_bias) {                                              \
    geglu<T>(h, bias, y, numel, n, has_bias);                                                            \
  }                                                                                                      \
  extern "C" __global__ void transpose_##SUFFIX(const T *x, T *y, uint32_t rows, uint32_t cols) {         \
    transpose<T>(x, y, rows, cols);                                                                      \
  }                                                                                                      \
  extern "C" __global__ void upsample2x_tokens_##SUFFIX(const T *x, T *y, uint32_t rows, uint32_t cols,     \
                                                        uint32_t width) {                                   \
    upsample2x_tokens<T>(x, y, rows, cols, width);                                                       \
  }                                                                                                      \
  extern "C" __global__ void conv_epilogue_##SUFFIX(const T *x, const T *bias, const T *extra, T *y,        \
                                                    uint32_t rows, uint32_t cols, uint32_t per_sample_stride, \
                                                    int extra_kind) {                                      \
    conv_epilogue<T>(x, bias, extra, y, rows, cols, per_sample_stride, extra_kind);                      \
  }

// GEGLU on f16, 8 outputs a thread with 16-byte loads and stores (geglu's scalar loads use a
// fraction of the memory bandwidth): n a multiple of 8, pointers 16-byte aligned, fewer than
// 2^32 vectors. The same arithmetic as geglu, element by element.
extern "C" __global__ void geglu_vec8_f16(const __half *h, const __half *bias, __half *y, uint32_t vectors,
                                          uint32_t n_vectors, int has_bias) {
  for (uint32_t v = blockIdx.x * blockDim.x + threadIdx.x; v < vectors; v += blockDim.x * gridDim.x) {
    const uint32_t r = v / n_vectors, j = v - r * n_vectors;
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
    reinterpret_cast<uint4 *>(y)[v] = out4;
  }
}

// The f16 transposing kernels on 64x64 tiles with two elements a thread (4-byte loads and
// stores instead of 2-byte ones): both dims even, pointers 4-byte aligned. Grid (ceil(cols / 64),
// ceil(rows / 64), batch), block (32, TILE_ROWS). Same arithmetic as the 32x32 versions. Each
// thread covers 64 / TILE_ROWS rows of the tile in loops with a compile-time stride, unrolled so
// that its loads can be issued together (at SD's lower levels these kernels have a few dozen
// blocks; bench/NOTES.md, run 36).
#define TILE_ROWS 8u

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

// conv_epilogue: x [batch, rows = p*q, cols = k] -> y [batch, k, p*q], bias and extra as there.
extern "C" __global__ void conv_epilogue_pairs_f16(const __half *x, const __half *bias, const __half *extra,
                                                   __half *y, uint32_t rows, uint32_t cols,
                                                   uint32_t per_sample_stride, int extra_kind) {
  __shared__ __half tile[64][65];
  const uint64_t base = (uint64_t)blockIdx.z * rows * cols;
  const uint32_t r0 = blockIdx.y * 64, c0 = blockIdx.x * 64, tx2 = 2 * threadIdx.x;
#pragma unroll
  for (uint32_t j = threadIdx.y; j < 64; j += TILE_ROWS) {
    const uint32_t r = r0 + j, c = c0 + tx2;
    if (r < rows && c < cols) {
      const __half2 v = *reinterpret_cast<const __half2 *>(x + base + (uint64_t)r * cols + c);
      tile[j][tx2] = __low2half(v);
      tile[j][tx2 + 1] = __high2half(v);
    }
  }
  __syncthreads();
#pragma unroll
  for (uint32_t j = threadIdx.y; j < 64; j += TILE_ROWS) {
    const uint32_t c = c0 + j, r = r0 + tx2;
    if (r < rows && c < cols) {
      const float b = __half2float(bias[c]);
      float v0 = round_as<__half>(__half2float(tile[tx2][j]) + b);
      float v1 = round_as<__half>(__half2float(tile[tx2 + 1][j]) + b);
      const uint64_t o = base + (uint64_t)c * rows + r;
      if (extra_kind == 1) {
        const float e = __half2float(extra[(uint64_t)blockIdx.z * per_sample_stride + c]);
        v0 = v0 + e;
        v1 = v1 + e;
      }
      if (extra_kind == 2) {
        const float2 e = __half22float2(*reinterpret_cast<const __half2 *>(extra + o));
        v0 = e.x + v0;
        v1 = e.y + v1;
      }
      *reinterpret_cast<__half2 *>(y + o) = __floats2half2_rn(v0, v1);
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

// GroupNorm of a channels-last convolution's raw output, the convolution's tail included:
// y [batch, pixels, channels] f16 (cuDNN's NHWC output), v = y + bias[c] (rounded to f16), then
// + extra[b * extra_stride + c] (a resnet's time embedding, rounded) when `has_extra`: what
// conv_epilogue would write, here never written. Both kernels split the channels into blocks of
// whole groups (`block_channels`, a multiple of the group width) and the pixels into chunks:
// grid (chunks, channels / block_channels, batch); each thread keeps one channel pair of the
// block, block_channels / 2 threads a pixel and blockDim.x / (block_channels / 2) pixels a pass.
__device__ __forceinline__ float conv_tail(float y, float b, float e, int has_extra) {
  const float v = round_as<__half>(y + b);
  return has_extra ? round_as<__half>(v + e) : v;
}

__device__ __forceinline__ float2 conv_tail(const __half2 *y, uint64_t i, float2 b, float2 e, int has_extra) {
  const float2 f = __half22float2(y[i]);
  return make_float2(conv_tail(f.x, b.x, e.x, has_extra), conv_tail(f.y, b.y, e.y, has_extra));
}

// Pass 1: partial sums of v and v*v of each group over the block's pixels, into
// partial[((b * groups + g) * chunks + chunk) * 2 + {0, 1}], summed in a fixed order.
// Dynamic shared memory: 2 * blockDim.x floats.
extern "C" __global__ void group_norm_stats_nhwc_f16(const __half *y, const __half *bias, const __half *extra,
                                                     uint32_t extra_stride, int has_extra, float *partial,
                                                     uint32_t channels, uint32_t pixels, uint32_t pixels_per_chunk,
                                                     uint32_t groups, uint32_t block_channels) {
  extern __shared__ float sums[];
  const uint32_t block_pairs = block_channels / 2, lanes = blockDim.x / block_pairs;
  const uint32_t lane = threadIdx.x / block_pairs;
  const uint32_t pair = blockIdx.y * block_pairs + threadIdx.x % block_pairs, pairs = channels / 2;
  float s = 0.f, ss = 0.f;
  if (lane < lanes) {
    const float2 b = __half22float2(reinterpret_cast<const __half2 *>(bias)[pair]);
    const float2 e = has_extra ? __half22float2(reinterpret_cast<const __half2 *>(extra + (uint64_t)blockIdx.z * extra_stride)[pair])
                               : make_float2(0.f, 0.f);
    const __half2 *src = reinterpret_cast<const __half2 *>(y) + (uint64_t)blockIdx.z * pixels * pairs;
    const uint32_t end = min((blockIdx.x + 1) * pixels_per_chunk, pixels);
#pragma unroll 4
    for (uint32_t p = blockIdx.x * pixels_per_chunk + lane; p < end; p += lanes) {
      const float2 v = conv_tail(src, (uint64_t)p * pairs + pair, b, e, has_extra);
      s += v.x + v.y;
      ss += v.x * v.x + v.y * v.y;
    }
  }
  sums[threadIdx.x] = s;
  sums[blockDim.x + threadIdx.x] = ss;
  __syncthreads();
  // Two short fixed-order sums instead of one long one: over the lanes for each channel pair,
  // then over the pairs of each group.
  if (threadIdx.x < block_pairs) {
    for (uint32_t l = 1; l < lanes; l++) {
      s += sums[l * block_pairs + threadIdx.x];
      ss += sums[blockDim.x + l * block_pairs + threadIdx.x];
    }
  }
  __syncthreads();
  if (threadIdx.x < block_pairs) {
    sums[threadIdx.x] = s;
    sums[blockDim.x + threadIdx.x] = ss;
  }
  __syncthreads();
  const uint32_t group_pairs = pairs / groups, block_groups = block_pairs / group_pairs;
  for (uint32_t i = threadIdx.x; i < block_groups; i += blockDim.x) {
    float gs = 0.f, gss = 0.f;
    for (uint32_t q = 0; q < group_pairs; q++) {
      gs += sums[i * group_pairs + q];
      gss += sums[blockDim.x + i * group_pairs + q];
    }
    const uint32_t g = blockIdx.y * block_groups + i;
    float *out = partial + (((uint64_t)blockIdx.z * groups + g) * gridDim.x + blockIdx.x) * 2;
    out[0] = gs;
    out[1] = gss;
  }
}

// Pass 2: each block first takes the mean and rstd of its groups from pass 1's `stats_chunks`
// (at most 32) partials, a warp a group summing them in a fixed tree order (with stats_chunks
// 0, `partial` holds group_norm_finalize's mean and rstd), then writes
// out[b, p, c] = (v - mean) * rstd * weight[c] + gn_bias[c] (SiLU after when `silu_after`;
// computed as v * scale + shift), channels-last: the next channels-last convolution's input.
// Each thread takes 8 channels
// (16-byte loads and stores: block_channels a multiple of 8, pointers and extra_stride
// 16-byte aligned), block_channels / 8 threads a pixel. Its chunks of pixels need not be pass
// 1's. Static shared memory for up to 64 groups a block.
extern "C" __global__ void group_norm_apply_nhwc_f16(const __half *y, const __half *bias, const __half *extra,
                                                     uint32_t extra_stride, int has_extra, const float *partial,
                                                     const __half *weight, const __half *gn_bias, __half *out,
                                                     uint32_t channels, uint32_t pixels, uint32_t pixels_per_chunk,
                                                     uint32_t groups, uint32_t block_channels, uint32_t stats_chunks,
                                                     float eps, int silu_after) {
  __shared__ float stats[64][2];
  const uint32_t width = channels / groups, block_groups = block_channels / width;
  const uint32_t per_group = width * pixels;
  const uint32_t warp = threadIdx.x / 32, lane32 = threadIdx.x % 32;
  for (uint32_t i = warp; i < block_groups; i += blockDim.x / 32) {
    const uint64_t row = (uint64_t)blockIdx.z * groups + blockIdx.y * block_groups + i;
    if (stats_chunks == 0) {  // group_norm_finalize's mean and rstd
      if (lane32 < 2) stats[i][lane32] = partial[row * 2 + lane32];
      continue;
    }
    const float *p = partial + row * stats_chunks * 2;
    const float s = warp_sum(lane32 < stats_chunks ? p[2 * lane32] : 0.f);
    const float ss = warp_sum(lane32 < stats_chunks ? p[2 * lane32 + 1] : 0.f);
    if (lane32 == 0) {
      const float2 st = mean_rstd(s, ss, per_group, eps);
      stats[i][0] = st.x;
      stats[i][1] = st.y;
    }
  }
  __syncthreads();
  const uint32_t block_vectors = block_channels / 8, lanes = blockDim.x / block_vectors;
  const uint32_t lane = threadIdx.x / block_vectors;
  if (lane >= lanes) return;
  const uint32_t local = threadIdx.x % block_vectors * 8, c0 = blockIdx.y * block_channels + local;
  // Per channel: the tail's bias and time embedding, and the norm folded into a * scale + shift.
  float b[8], e[8], scale[8], shift[8];
  {
    const uint4 b4 = *reinterpret_cast<const uint4 *>(bias + c0);
    const uint4 w4 = *reinterpret_cast<const uint4 *>(weight + c0);
    const uint4 gb4 = *reinterpret_cast<const uint4 *>(gn_bias + c0);
    uint4 e4 = make_uint4(0, 0, 0, 0);
    if (has_extra) e4 = *reinterpret_cast<const uint4 *>(extra + (uint64_t)blockIdx.z * extra_stride + c0);
    const __half *bh = reinterpret_cast<const __half *>(&b4), *wh = reinterpret_cast<const __half *>(&w4);
    const __half *gbh = reinterpret_cast<const __half *>(&gb4), *eh = reinterpret_cast<const __half *>(&e4);
#pragma unroll
    for (int k = 0; k < 8; k++) {
      b[k] = __half2float(bh[k]);
      e[k] = __half2float(eh[k]);
      const float *st = stats[(local + k) / width];
      scale[k] = st[1] * __half2float(wh[k]);
      shift[k] = __half2float(gbh[k]) - st[0] * scale[k];
    }
  }
  const uint64_t base = (uint64_t)blockIdx.z * pixels * channels;
  const uint32_t end = min((blockIdx.x + 1) * pixels_per_chunk, pixels);
#pragma unroll 4
  for (uint32_t p = blockIdx.x * pixels_per_chunk + lane; p < end; p += lanes) {
    const uint64_t i = base + (uint64_t)p * channels + c0;
    const uint4 y4 = *reinterpret_cast<const uint4 *>(y + i);
    const __half *yh = reinterpret_cast<const __half *>(&y4);
    uint4 o4;
    __half *oh = reinterpret_cast<__half *>(&o4);
#pragma unroll
    for (int k = 0; k < 8; k++) {
      float a = conv_tail(__half2float(yh[k]), b[k], e[k], has_extra) * scale[k] + shift[k];
      if (silu_after) a = silu(round_as<__half>(a));
      oh[k] = __float2half_rn(a);
    }
    *reinterpret_cast<uint4 *>(out + i) = o4;
  }
}

// [a, b] along dim 1 of [n, ...] tensors, any dtype: each sample's a_vectors 16-byte vectors of
// a, then its b_vectors of b (per-sample sizes multiples of 16 bytes, pointers 16-byte aligned).
extern "C" __global__ void cat_dim1_vec16(const uint4 *a, const uint4 *b, uint4 *y, uint32_t a_vectors,
                                          uint32_t b_vectors, uint32_t vectors) {
  const uint32_t per_sample = a_vectors + b_vectors;
  for (uint32_t v = blockIdx.x * blockDim.x + threadIdx.x; v < vectors; v += blockDim.x * gridDim.x) {
    const uint32_t n = v / per_sample, j = v - n * per_sample;
    y[v] = j < a_vectors ? a[(uint64_t)n * a_vectors + j] : b[(uint64_t)n * b_vectors + (j - a_vectors)];
  }
}

extern "C" __global__ void group_norm_finalize(const float *partial, float *stats, uint32_t rows,
                                               uint32_t chunks, uint32_t per_row, float eps) {
  finalize_group_stats(partial, stats, rows, chunks, per_row, eps);
}

FUSED_KERNELS(__half, f16)
FUSED_KERNELS(float, f32)
