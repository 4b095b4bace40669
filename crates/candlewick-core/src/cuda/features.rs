//! What this build carries: the features it was compiled with ([`build_info`]), and `built!`, the
//! one way the always-compiled code of the CUDA wing reaches a module compiled only with a feature.

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
        flash_attention: cfg!(feature = "flash-attn"),
        cudnn: cudnn_version(),
    }
}

/// cuDNN's version as major.minor.patch, when this build links it.
fn cudnn_version() -> Option<String> {
    #[cfg(feature = "cudnn")]
    {
        let v = unsafe { cudarc::cudnn::sys::cudnnGetVersion() };
        Some(format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100))
    }
    #[cfg(not(feature = "cudnn"))]
    None
}
