//! The GPU paths one pipeline takes, as one value: which kernel runs attention, how convolutions
//! run, CUDA graphs, autotuning and TF32.
//!
//! A caller asks with [`CudaSettings`] in `LoadOptions` (`Auto` where it lets candlewick choose);
//! the pipeline resolves it once at load against this build, its device and its dtype
//! ([`CudaSettings::resolve`]: a requested path that cannot run here falls back, with a sentence
//! saying why), installs the result once on its own thread ([`CudaSettings::install`]) and reports
//! it as is (`PipelineInfo::cuda`). The CUDA wing's fast paths read it with [`current`]. Each
//! pipeline runs on a thread of its own (`pipeline::PipelineWorker`), so the installed settings
//! are its own; a second pipeline loaded on the same thread replaces the first's.

use std::cell::Cell;
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::error::{expected, Error, Result};

/// Which kernel runs attention, after diffusers' `AttentionBackendName`. A kernel that does not
/// take a shape (a head dim it has no kernel for, a shape cuDNN refuses) leaves that attention to
/// candle's ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionBackend {
    /// The fastest there is here: cuDNN's fused kernel for self-attention (faster than
    /// FlashAttention-2's at Stable Diffusion's head dims on Hopper), FlashAttention-2 for
    /// cross-attention and what cuDNN refuses, each where the build has it; candle's ops where
    /// neither runs.
    #[default]
    Auto,
    /// cuDNN's fused attention for all attention (diffusers' `_native_cudnn`): CUDA builds with
    /// cuDNN, f16.
    CudnnFused,
    /// FlashAttention-2 for all attention (diffusers' `flash`): CUDA builds with flash attention, f16.
    Flash2,
    /// candle's ops: matmul, softmax in f32, matmul (diffusers' `_native_math`).
    Math,
}

impl AttentionBackend {
    pub const NAMES: &'static str = "\"auto\", \"cudnn\", \"flash\", \"math\"";

    /// The name a caller uses ("auto", "cudnn", "flash", "math").
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::CudnnFused => "cudnn",
            Self::Flash2 => "flash",
            Self::Math => "math",
        }
    }
}

impl FromStr for AttentionBackend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "cudnn" => Ok(Self::CudnnFused),
            "flash" => Ok(Self::Flash2),
            "math" => Ok(Self::Math),
            other => Err(expected(&format!("one of {}", Self::NAMES), "attention", format!("{other:?}"))),
        }
    }
}

/// How convolutions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvolutionPath {
    /// cuDNN channels-last where the build has cuDNN and the device is a GPU, else candle's.
    #[default]
    Auto,
    /// cuDNN's execution plans, cached per shape, with kxk filters kept channels-last (converted
    /// once at load) on cuDNN's NHWC kernels, the bias, time embedding and shortcut fused into
    /// the layout change back.
    CudnnChannelsLast,
    /// cuDNN's execution plans on NCHW tensors (cuDNN converts them on every call).
    CudnnNchw,
    /// candle's convolution (im2col + GEMM on CUDA).
    Candle,
}

impl ConvolutionPath {
    pub const NAMES: &'static str = "\"auto\", \"cudnn-nhwc\", \"cudnn-nchw\", \"candle\"";

    /// The name a caller uses ("auto", "cudnn-nhwc", "cudnn-nchw", "candle").
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::CudnnChannelsLast => "cudnn-nhwc",
            Self::CudnnNchw => "cudnn-nchw",
            Self::Candle => "candle",
        }
    }

    /// Whether convolutions go to cuDNN.
    pub fn cudnn(self) -> bool {
        matches!(self, Self::CudnnChannelsLast | Self::CudnnNchw)
    }
}

impl FromStr for ConvolutionPath {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "cudnn-nhwc" => Ok(Self::CudnnChannelsLast),
            "cudnn-nchw" => Ok(Self::CudnnNchw),
            "candle" => Ok(Self::Candle),
            other => Err(expected(&format!("one of {}", Self::NAMES), "convolution", format!("{other:?}"))),
        }
    }
}

/// Choosing a library's plan for each new shape by timing its first few candidates on the first
/// call of that shape, instead of taking its heuristics' first choice: a slower first call at
/// each new size, and since the choice follows timings, results may differ in the last bits from
/// one process to the next. Off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Autotune {
    /// cuDNN's convolution plans (PyTorch's `torch.backends.cudnn.benchmark`); with a cuDNN convolution path.
    pub cudnn: bool,
    /// cuBLASLt's matrix-product algorithms (PyTorch's TunableOp); CUDA, f16.
    pub gemm: bool,
}

/// The GPU paths of a pipeline: what a caller asks for (`LoadOptions::cuda`), and, resolved, what
/// runs (`PipelineInfo::cuda`: `Auto` attention then means the rule [`AttentionBackend::Auto`]
/// describes, with at least one of its kernels here; a convolution path is never `Auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaSettings {
    pub attention: AttentionBackend,
    pub convolution: ConvolutionPath,
    /// Capture the UNet step and the text encoder as CUDA graphs per shape and replay them (CUDA;
    /// default true).
    pub cuda_graphs: bool,
    pub autotune: Autotune,
    /// Allow TF32 matrix units for f32 matrix products on CUDA (default false). candle holds this
    /// switch process-wide: the last CUDA pipeline loaded sets it for all.
    pub tf32: bool,
    /// FP8 (e4m3) products for the UNet's linear layers (`crate::cuda::fp8`; default false): faster
    /// on Ada and Hopper, not diffusers' numbers (the image differs from f16's).
    pub fp8: bool,
}

impl Default for CudaSettings {
    fn default() -> Self {
        Self {
            attention: AttentionBackend::Auto,
            convolution: ConvolutionPath::Auto,
            cuda_graphs: true,
            autotune: Autotune { cudnn: false, gemm: false },
            tf32: false,
            fp8: false,
        }
    }
}

/// The settings resolved for one pipeline, and why each requested path that cannot run here fell back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub settings: CudaSettings,
    /// One sentence a fallback ("attention \"flash\" is unavailable: ...; using \"math\"").
    pub fallbacks: Vec<String>,
}

impl CudaSettings {
    /// What code sees on a thread where no pipeline installed settings (a model used directly, a
    /// benchmark): every fast path its guards allow, no autotuning.
    pub const UNINSTALLED: Self = Self {
        attention: AttentionBackend::Auto,
        convolution: ConvolutionPath::CudnnChannelsLast,
        cuda_graphs: false,
        autotune: Autotune { cudnn: false, gemm: false },
        tf32: false,
        fp8: false,
    };

    /// These settings as they can run with this build on `device` in `dtype`.
    pub fn resolve(&self, device: &Device, dtype: DType) -> Resolved {
        let cuda = device.is_cuda();
        let f16 = dtype == DType::F16;
        let mut fallbacks = Vec::new();
        // What the build carries (`cuda::build_info`), read here so that the libraries' modules,
        // which read the installed settings, are not read back.
        let (flash_built, cudnn_built) = (cfg!(feature = "flash-attn"), cfg!(feature = "cudnn"));
        let flash = flash_built && cuda && f16;
        let cudnn_attention = cudnn_built && cuda && f16;
        let cudnn = cudnn_built && cuda;

        let attention = match self.attention {
            AttentionBackend::Auto if flash || cudnn_attention => AttentionBackend::Auto,
            AttentionBackend::Auto | AttentionBackend::Math => AttentionBackend::Math,
            AttentionBackend::Flash2 if flash => AttentionBackend::Flash2,
            AttentionBackend::CudnnFused if cudnn_attention => AttentionBackend::CudnnFused,
            AttentionBackend::Flash2 => {
                let why = unavailable(flash_built, "FlashAttention-2", cuda, f16);
                fallbacks.push(format!("attention \"flash\" is unavailable: {why}; using \"math\""));
                AttentionBackend::Math
            }
            AttentionBackend::CudnnFused => {
                let why = unavailable(cudnn_built, "cuDNN", cuda, f16);
                fallbacks.push(format!("attention \"cudnn\" is unavailable: {why}; using \"math\""));
                AttentionBackend::Math
            }
        };
        let convolution = match self.convolution {
            ConvolutionPath::Auto if cudnn => ConvolutionPath::CudnnChannelsLast,
            ConvolutionPath::Auto | ConvolutionPath::Candle => ConvolutionPath::Candle,
            path if cudnn => path,
            path => {
                let why = unavailable(cudnn_built, "cuDNN", cuda, true);
                fallbacks.push(format!("convolution \"{}\" is unavailable: {why}; using \"candle\"", path.name()));
                ConvolutionPath::Candle
            }
        };
        let autotune =
            Autotune { cudnn: self.autotune.cudnn && convolution.cudnn(), gemm: self.autotune.gemm && cuda && f16 };
        if self.autotune.cudnn && !autotune.cudnn {
            fallbacks.push("autotune.cudnn is off: convolutions do not run through cuDNN here".into());
        }
        if self.autotune.gemm && !autotune.gemm {
            let why = if cuda { "it applies to f16 only" } else { "it needs a CUDA device" };
            fallbacks.push(format!("autotune.gemm is off: {why}"));
        }
        if self.tf32 && !cuda {
            fallbacks.push("tf32 is off: it needs a CUDA device".into());
        }
        let fp8_refused = if self.fp8 && !f16 {
            Some("it applies to f16 only".to_string())
        } else if self.fp8 {
            fp8_unsupported(device)
        } else {
            None
        };
        if let Some(why) = &fp8_refused {
            fallbacks.push(format!("fp8 is off: {why}"));
        }
        let settings = Self {
            attention,
            convolution,
            cuda_graphs: self.cuda_graphs && cuda,
            autotune,
            tf32: self.tf32 && cuda,
            fp8: self.fp8 && fp8_refused.is_none(),
        };
        Resolved { settings, fallbacks }
    }

    /// Make these the settings of the calling thread (the pipeline's: models read them while they
    /// load and run) and, for a pipeline on a CUDA `device`, set candle's process-wide TF32 switch.
    pub fn install(self, device: &Device) {
        INSTALLED.with(|s| s.set(self));
        if device.is_cuda() {
            candle_core::cuda::set_gemm_reduced_precision_f32(self.tf32);
        }
    }
}

/// Why a kernel library cannot run here.
fn unavailable(compiled: bool, library: &str, cuda: bool, dtype_ok: bool) -> String {
    if !compiled {
        format!("this build has no {library} (the CUDA build has it: npm run build:cuda)")
    } else if !cuda {
        format!("{library} needs a CUDA device")
    } else {
        debug_assert!(!dtype_ok);
        format!("{library}'s fused attention runs in f16 only")
    }
}

thread_local! {
    static INSTALLED: Cell<CudaSettings> = const { Cell::new(CudaSettings::UNINSTALLED) };
}

/// The settings installed on the calling thread ([`CudaSettings::UNINSTALLED`] where none were).
pub fn current() -> CudaSettings {
    INSTALLED.with(|s| s.get())
}

/// Why FP8 products cannot run on `device` (None when they can).
fn fp8_unsupported(device: &Device) -> Option<String> {
    if !cfg!(feature = "cuda") {
        return Some("this build has no CUDA (the CUDA build has it: npm run build:cuda)".into());
    }
    match compute_capability(device) {
        None => Some("it needs a CUDA device".into()),
        Some((major, minor)) if (major, minor) < (8, 9) => {
            Some(format!("it needs compute capability 8.9 or later (Ada, Hopper); this GPU has {major}.{minor}"))
        }
        Some(_) => None,
    }
}

fn compute_capability(device: &Device) -> Option<(i32, i32)> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        use candle_core::cuda::cudarc::driver::sys::CUdevice_attribute as A;
        let context = d.cuda_stream().context().clone();
        let major = context.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).ok()?;
        let minor = context.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).ok()?;
        return Some((major, minor));
    }
    let _ = device;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_values_name_the_option_and_the_allowed_values() {
        for a in
            [AttentionBackend::Auto, AttentionBackend::CudnnFused, AttentionBackend::Flash2, AttentionBackend::Math]
        {
            assert_eq!(a.name().parse::<AttentionBackend>().unwrap(), a);
        }
        for c in [
            ConvolutionPath::Auto,
            ConvolutionPath::CudnnChannelsLast,
            ConvolutionPath::CudnnNchw,
            ConvolutionPath::Candle,
        ] {
            assert_eq!(c.name().parse::<ConvolutionPath>().unwrap(), c);
        }
        let e = "fast".parse::<AttentionBackend>().unwrap_err().to_string();
        assert!(
            e.contains(r#"Expected one of "auto", "cudnn", "flash", "math" for attention but received "fast""#),
            "{e}"
        );
        let e = "nhwc".parse::<ConvolutionPath>().unwrap_err().to_string();
        assert!(
            e.contains(
                r#"Expected one of "auto", "cudnn-nhwc", "cudnn-nchw", "candle" for convolution but received "nhwc""#
            ),
            "{e}"
        );
    }

    #[test]
    fn on_the_cpu_everything_resolves_to_candle_and_says_why_a_requested_path_fell_back() {
        let defaults = CudaSettings::default().resolve(&Device::Cpu, DType::F32);
        assert_eq!(
            defaults.settings,
            CudaSettings {
                attention: AttentionBackend::Math,
                convolution: ConvolutionPath::Candle,
                cuda_graphs: false,
                autotune: Autotune::default(),
                tf32: false,
                fp8: false,
            }
        );
        assert!(defaults.fallbacks.is_empty(), "defaults fall back silently: {:?}", defaults.fallbacks);

        let asked = CudaSettings {
            attention: AttentionBackend::Flash2,
            convolution: ConvolutionPath::CudnnNchw,
            cuda_graphs: true,
            autotune: Autotune { cudnn: true, gemm: true },
            tf32: true,
            fp8: true,
        };
        let resolved = asked.resolve(&Device::Cpu, DType::F16);
        assert_eq!(resolved.settings, defaults.settings);
        let said = resolved.fallbacks.join("\n");
        for part in [
            "attention \"flash\" is unavailable",
            "using \"math\"",
            "convolution \"cudnn-nchw\" is unavailable",
            "using \"candle\"",
            "autotune.cudnn is off",
            "autotune.gemm is off",
            "tf32 is off",
            "fp8 is off: this build has no CUDA",
        ] {
            assert!(said.contains(part), "{part:?} missing from {said}");
        }
    }

    #[test]
    fn installed_settings_are_the_threads_own() {
        let math = CudaSettings { attention: AttentionBackend::Math, ..CudaSettings::UNINSTALLED };
        math.install(&Device::Cpu);
        assert_eq!(current(), math);
        let other = std::thread::spawn(current).join().unwrap();
        assert_eq!(other, CudaSettings::UNINSTALLED);
    }
}
