// Elementwise kernels: a per-channel bias add (with a residual after it) and diffusers' GEGLU,
// each one pass where candle runs several kernels (and computes an index per element for the
// broadcast). Called from src/cuda/fused/elementwise.rs.
#include "common.cuh"

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

// GEGLU on f16, 8 outputs a thread with 16-byte loads and stores (geglu's scalar loads use a
// fraction of the memory bandwidth): n a multiple of 8, pointers 16-byte aligned, fewer than
// 2^32 vectors. The same arithmetic as geglu, element by element.
extern "C" __global__ void geglu_vec8_f16(const __half *h, const __half *bias, __half *y, uint32_t vectors,
                                          uint32_t n_vectors, int has_bias) {
  for (uint32_t v = blockIdx.x * blockDim.x + threadIdx.x; v < vectors; v += blockDim.x * gridDim.x) {
    const uint32_t r = v / n_vectors, j = v - r * n_vectors;
    reinterpret_cast<uint4 *>(y)[v] = geglu_vec8(h, bias, r, j, n_vectors, has_bias);
  }
}

#define ELEMENTWISE_KERNELS(T, SUFFIX)                                                                  \
  extern "C" __global__ void bias_add_##SUFFIX(const T *x, const T *bias, T *y, uint64_t numel,            \
                                               uint32_t inner, uint32_t channels) {                       \
    bias_add<T>(x, bias, y, numel, inner, channels);                                                     \
  }                                                                                                      \
  extern "C" __global__ void bias_add_residual_##SUFFIX(const T *x, const T *bias, const T *residual, T *y, \
                                                        uint64_t numel, uint32_t inner, uint32_t channels) { \
    bias_add_residual<T>(x, bias, residual, y, numel, inner, channels);                                  \
  }                                                                                                      \
  extern "C" __global__ void geglu_##SUFFIX(const T *h, const T *bias, T *y, uint64_t numel, uint32_t n, \
                                            int has_bias) {                                              \
    geglu<T>(h, bias, y, numel, n, has_bias);                                                            \
  }

ELEMENTWISE_KERNELS(__half, f16)
ELEMENTWISE_KERNELS(float, f32)
