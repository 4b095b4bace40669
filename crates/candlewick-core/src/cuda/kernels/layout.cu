// Layout kernels: a batched transpose through shared-memory tiles, 2x nearest upsampling written
// channels-last, and the concatenation along dim 1 of the up blocks' skip connections. Called
// from src/cuda/fused/layout.rs.
#include "common.cuh"

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

#define LAYOUT_KERNELS(T, SUFFIX)                                                                       \
  extern "C" __global__ void transpose_##SUFFIX(const T *x, T *y, uint32_t rows, uint32_t cols) {         \
    transpose<T>(x, y, rows, cols);                                                                      \
  }                                                                                                      \
  extern "C" __global__ void upsample2x_tokens_##SUFFIX(const T *x, T *y, uint32_t rows, uint32_t cols,     \
                                                        uint32_t width) {                                   \
    upsample2x_tokens<T>(x, y, rows, cols, width);                                                       \
  }

LAYOUT_KERNELS(__half, f16)
LAYOUT_KERNELS(float, f32)
