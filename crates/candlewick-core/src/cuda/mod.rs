//! The CUDA wing: every path that runs only on an NVIDIA GPU, beside the networks in
//! `crate::models` that call it.
//!
//! The fast-path contract: each GPU function returns `Result<Option<Tensor>>`, and `None` means
//! "compose candle's ops" (a CPU tensor, a build without the feature, a dtype or shape the
//! kernel does not take); the CPU path is the golden-checked reference, and no network file
//! carries a `#[cfg]`. The code that needs a feature sits in modules compiled only with it; the
//! always-compiled entry points reach it through [`built!`].
//!
//! - [`fused`]: our kernels (src/cuda/kernels/*.cu, by op family: norms, layout, convolution
//!   tails, elementwise) as candle custom ops.
//! - [`cublaslt`]: linear layers and 1x1 convolutions as cuBLASLt products with fused epilogues.
//! - [`cudnn`]: convolutions through cached cuDNN plans, and cuDNN's fused attention.
//! - [`flash`]: FlashAttention-2.
//! - [`graph`]: the UNet step and the text encoder captured as CUDA graphs.
//! - [`memory`]: how much GPU memory the process's tensors use.
//! - `op`: the custom-op macro, the kernel launch helper and plan timing they share.

pub mod cublaslt;
pub mod cudnn;
pub mod flash;
pub mod fused;
pub mod graph;
pub mod memory;
#[cfg(feature = "cuda")]
pub(crate) mod op;

/// `built!("feature", module::function(args))`: in a build with `feature`, the call (a
/// `Result<Tensor>`) as `Ok(Some(..))`; in one without, `Ok(None)` (the caller composes candle's
/// ops), and `module`, compiled only with the feature, is never named.
macro_rules! built {
    ($feature:literal, $($f:ident)::+ ($($arg:expr),* $(,)?)) => {{
        #[cfg(feature = $feature)]
        {
            $($f)::+($($arg),*).map(Some)
        }
        #[cfg(not(feature = $feature))]
        {
            $(let _ = &$arg;)*
            Ok(None)
        }
    }};
}

pub(crate) use built;

/// What this build of the core carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// The crate's version.
    pub version: String,
    /// Whether it was compiled with CUDA.
    pub cuda: bool,
    /// Whether the FlashAttention-2 kernels are compiled in.
    pub flash_attention: bool,
    /// The version of the cuDNN library in use ("9.14.0"), None in a build without cuDNN.
    pub cudnn: Option<String>,
}

/// What this build of the core carries (the binding's `buildInfo()`).
pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        cuda: cfg!(feature = "cuda"),
        flash_attention: flash::compiled(),
        cudnn: cudnn::version(),
    }
}
