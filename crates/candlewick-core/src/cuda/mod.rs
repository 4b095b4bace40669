//! The CUDA wing: every path that runs only on an NVIDIA GPU, beside the networks in
//! `crate::models` that call it.
//!
//! The fast-path contract: each GPU function returns `Result<Option<Tensor>>`, and `None` means
//! "compose candle's ops" (a CPU tensor, a build without the feature, a dtype or shape the
//! kernel does not take); the CPU path is the golden-checked reference, and no network file
//! carries a `#[cfg]`. The code that needs a feature sits in modules compiled only with it; the
//! always-compiled entry points reach it through `built!` ([`features`]).
//!
//! - [`fused`]: our kernels (src/cuda/kernels/*.cu, by op family: norms, layout, convolution
//!   tails, elementwise) as candle custom ops.
//! - [`cublaslt`]: linear layers and 1x1 convolutions as cuBLASLt products with fused epilogues.
//! - [`fp8`]: FP8 (e4m3) products for the UNet's linear layers (load option `fp8`).
//! - [`cudnn`]: convolutions through cached cuDNN plans, and cuDNN's fused attention.
//! - [`flash`]: FlashAttention-2 (candle-flash-attn).
//! - [`graph`]: the UNet step and the text encoder captured as CUDA graphs.
//! - [`memory`]: how much GPU memory the process's tensors use.
//! - `plan_cache`: cuDNN plans and attention graphs kept on disk across processes.
//! - [`upload`]: large weight tensors copied to the GPU from page-locked memory.
//! - [`features`]: what the build carries ([`build_info`]) and `built!`.
//! - [`settings`]: the paths a pipeline takes ([`CudaSettings`]), resolved once at load and
//!   installed on the pipeline's thread; [`attention`] dispatches on them.
//! - `op`: the custom-op macro, the kernel launch helper and plan timing they share.

pub mod cublaslt;
pub mod cudnn;
pub mod features;
pub mod flash;
pub mod fp8;
pub mod fused;
pub mod graph;
pub mod memory;
#[cfg(feature = "cuda")]
pub(crate) mod op;
pub(crate) mod plan_cache;
pub mod settings;
pub mod upload;

use candle_core::{Result, Tensor};

pub use features::{build_info, BuildInfo};
pub use settings::{AttentionBackend, Autotune, ConvolutionPath, CudaSettings};

/// softmax(q kᵀ / sqrt(d)) v on [b, seq, heads, d] tensors through the fused kernel the thread's
/// [`CudaSettings`] choose for it (see [`AttentionBackend`]); None where none runs, and the caller
/// takes candle's ops.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
    match settings::current().attention {
        AttentionBackend::Math => Ok(None),
        AttentionBackend::Flash2 => flash::attention(q, k, v),
        AttentionBackend::CudnnFused => cudnn::attention(q, k, v),
        AttentionBackend::Auto => {
            if q.dim(1)? == k.dim(1)? {
                if let Some(out) = cudnn::attention(q, k, v)? {
                    return Ok(Some(out));
                }
            }
            flash::attention(q, k, v)
        }
    }
}
