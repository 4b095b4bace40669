// The tail of a channels-last convolution (cuDNN's NHWC output): back to NCHW with the bias, a
// resnet's time embedding and its shortcut added in one pass, or straight into the GroupNorm
// (+ SiLU) that follows, never writing the tail's result. Called from src/cuda/fused/conv_tail.rs.
#include "common.cuh"

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

#define CONV_TAIL_KERNELS(T, SUFFIX)                                                                    \
  extern "C" __global__ void conv_epilogue_##SUFFIX(const T *x, const T *bias, const T *extra, T *y,        \
                                                    uint32_t rows, uint32_t cols, uint32_t per_sample_stride, \
                                                    int extra_kind) {                                      \
    conv_epilogue<T>(x, bias, extra, y, rows, cols, per_sample_stride, extra_kind);                      \
  }

CONV_TAIL_KERNELS(__half, f16)
CONV_TAIL_KERNELS(float, f32)
