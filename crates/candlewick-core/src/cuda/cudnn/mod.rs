//! Convolutions through cuDNN on CUDA, with an execution plan chosen once per shape.
//!
//! candle's own CUDA convolution is im2col + GEMM (a 9x larger matrix written and read for
//! every 3x3 convolution), and its cuDNN path asks cuDNN's heuristics for an algorithm and
//! zeroes a workspace on every call. Here each shape's plan is built on first use and cached,
//! as PyTorch does, and each call takes its workspace from the memory pool and gives it back
//! (`op::own_workspace`; `CANDLEWICK_CUDNN_WORKSPACE=shared` keeps one a thread instead).
//!
//! Built only with the `cudnn` feature. Whether a pipeline's convolutions and attention use it
//! is its `CudaSettings` (`crate::cuda::settings`); each pipeline runs on a thread of its own
//! (`pipeline::worker`), and its cached plans are its thread's (freed when the thread ends).

use candle_core::{Result, Tensor};

use crate::cuda::features::built;
use crate::cuda::settings;

#[cfg(feature = "cudnn")]
mod backend;
#[cfg(feature = "cudnn")]
mod op;
#[cfg(feature = "cudnn")]
mod plan;
#[cfg(feature = "cudnn")]
mod sdpa;

/// softmax(q kᵀ / sqrt(d)) v with cuDNN's fused attention kernel, for q [b, s_q, h, d] and k, v
/// [b, s_kv, h, d] (FlashAttention-2's layout; strided views with a dense last dim), f16 on CUDA
/// with d a multiple of 8 up to 256, when this build links cuDNN; None otherwise, or when cuDNN
/// refuses the shape, and the caller takes another path.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
    let f16 = candle_core::DType::F16;
    let d = q.dims4()?.3;
    if !compiled()
        || !q.device().is_cuda()
        || (q.dtype(), k.dtype(), v.dtype()) != (f16, f16, f16)
        || d % 8 != 0
        || d > 256
    {
        return Ok(None);
    }
    built!("cudnn", sdpa::attention(q, k, v)).map(Option::flatten)
}

/// Whether each new shape's plan is the fastest of cuDNN's first few (autotune.cudnn), timed on
/// its first call, instead of cuDNN's first choice.
#[cfg(feature = "cudnn")]
fn benchmarking() -> bool {
    settings::current().autotune.cudnn
}

thread_local! {
    static TF32_CONVOLUTIONS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's f32 cuDNN convolutions allowed to use TF32 tensor cores, as
/// PyTorch's are by default (`torch.backends.cudnn.allow_tf32 = True`): the f32 VAE decode of an
/// f16 model under `force_upcast`, which diffusers runs that way. The `tf32` load option still
/// turns TF32 on for all f32 work; this changes only convolutions, only inside `f`.
pub fn with_tf32_convolutions<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            TF32_CONVOLUTIONS.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(TF32_CONVOLUTIONS.with(|c| c.replace(true)));
    f()
}

/// Whether [`with_tf32_convolutions`] is in force on this thread.
#[cfg(feature = "cudnn")]
fn tf32_convolutions() -> bool {
    TF32_CONVOLUTIONS.with(|c| c.get())
}

/// Whether this build links cuDNN.
pub fn compiled() -> bool {
    cfg!(feature = "cudnn")
}

/// Free this thread's cuDNN workspace (the next convolution allocates what it needs): after a
/// failed call, so that a workspace grown for a size that did not fit is not kept.
pub fn release_workspace() {
    #[cfg(feature = "cudnn")]
    op::release_workspace();
}

/// Padding, stride and dilation, the same along both spatial axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    pub padding: usize,
    pub stride: usize,
    pub dilation: usize,
}

/// A 2-D convolution of `x` [n, c, h, w] with `weight` [k, c, r, s], without bias, when cuDNN
/// can do it here (CUDA, f16 or f32, built with cuDNN, a cuDNN convolution path in the thread's
/// settings); None otherwise,
/// and the caller takes candle's path.
pub fn conv2d(x: &Tensor, weight: &Tensor, params: Conv2dParams) -> Result<Option<Tensor>> {
    if !usable(x, weight) {
        return Ok(None);
    }
    built!("cudnn", run(x, weight, params, false))
}

/// The same convolution in channels-last memory: `x` [n, h, w, c] and `weight` [k, r, s, c] give
/// [n, p, q, k]. cuDNN's fast Hopper kernels work in this layout; given NCHW tensors, cuDNN
/// converts the input and the filter on every call.
pub fn conv2d_channels_last(x: &Tensor, weight: &Tensor, params: Conv2dParams) -> Result<Option<Tensor>> {
    if !usable(x, weight) {
        return Ok(None);
    }
    built!("cudnn", run(x, weight, params, true))
}

fn usable(x: &Tensor, weight: &Tensor) -> bool {
    compiled()
        && settings::current().convolution.cudnn()
        && x.device().is_cuda()
        && matches!(x.dtype(), candle_core::DType::F16 | candle_core::DType::F32)
        && weight.dtype() == x.dtype()
}

#[cfg(feature = "cudnn")]
fn run(x: &Tensor, weight: &Tensor, params: Conv2dParams, channels_last: bool) -> Result<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(&weight.contiguous()?, &op::CudnnConv2d { params, channels_last })
}
