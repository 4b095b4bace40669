//! What every CUDA custom op shares (cuBLASLt products, cuDNN's attention, the fused kernels):
//! [`cuda_only_op!`], the one macro that writes their candle `CustomOp1/2/3` impls (callers
//! check the device first and take candle's own ops on the CPU, so the CPU side only refuses);
//! [`launch!`], the one way a kernel of our PTX is launched; [`contiguous_view`]; and [`timing`],
//! which picks the fastest of a library's candidate plans (cuDNN's, cuBLASLt's).

use std::sync::OnceLock;

/// The plan cache's folder (`crate::cuda::plan_cache`) for `library` (its name and version, such
/// as "cudnn91300") on this device: the GPU's name and compute capability added ("NVIDIA
/// H200-sm90"); None when the cache is off.
pub(crate) fn plan_folder(device: &CudaDevice, library: &str) -> Option<std::path::PathBuf> {
    use candle_core::cuda::cudarc::driver::sys::CUdevice_attribute as Attribute;
    let context = device.cuda_stream().context().clone();
    let major = context.attribute(Attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).ok()?;
    let minor = context.attribute(Attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).ok()?;
    crate::cuda::plan_cache::folder(&format!("{library}-{}-sm{major}{minor}", context.name().ok()?))
}

use candle_core::cuda::cudarc::driver::CudaView;
use candle_core::cuda::{CudaDType, CudaDevice, CudaStorage};
use candle_core::{bail, Layout, Result};

/// `cuda_only_op!(CustomOp3 for Op, "op-name", run, a al, b bl, c cl)`: `cuda_fwd` calls
/// `self.run((a, al), (b, bl), (c, cl))`. With `run::<f16 | f32>`, it calls `self.run::<T>(...)`
/// with T the first input's dtype (f16, else f32: the callers admit only those two), as
/// candle-core's `Map1`/`Map2` traits dispatch. `cpu_fwd` fails with an error naming the op.
macro_rules! cuda_only_op {
    ($trait:ident for $op:ty, $name:literal, $run:ident::<f16 | f32>, $($s:ident $l:ident),+) => {
        $crate::cuda::op::cuda_only_op!(@impl by_dtype $trait for $op, $name, $run, $($s $l),+);
    };
    ($trait:ident for $op:ty, $name:literal, $run:ident, $($s:ident $l:ident),+) => {
        $crate::cuda::op::cuda_only_op!(@impl plain $trait for $op, $name, $run, $($s $l),+);
    };
    (@impl $dispatch:ident $trait:ident for $op:ty, $name:literal, $run:ident, $($s:ident $l:ident),+) => {
        impl candle_core::$trait for $op {
            fn name(&self) -> &'static str {
                $name
            }
            #[allow(unused_variables)]
            fn cpu_fwd(
                &self,
                $($s: &candle_core::CpuStorage, $l: &candle_core::Layout),+
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                candle_core::bail!("{} runs on CUDA tensors only", $name)
            }
            fn cuda_fwd(
                &self,
                $($s: &candle_core::cuda::CudaStorage, $l: &candle_core::Layout),+
            ) -> candle_core::Result<(candle_core::cuda::CudaStorage, candle_core::Shape)> {
                use candle_core::backend::BackendStorage as _;
                let device = [$($s.device()),+][0].clone();
                $crate::cuda::op::sync_check(&device, "before", $name)?;
                let out = $crate::cuda::op::cuda_only_op!(@call $dispatch self, $run, $($s $l),+);
                $crate::cuda::op::sync_check(&device, "after", $name)?;
                out
            }
        }
    };
    (@call plain $self:ident, $run:ident, $($s:ident $l:ident),+) => {
        $self.$run($(($s, $l)),+)
    };
    (@call by_dtype $self:ident, $run:ident, $($s:ident $l:ident),+) => {{
        use candle_core::backend::BackendStorage as _;
        match [$($s.dtype()),+][0] {
            candle_core::DType::F16 => $self.$run::<half::f16>($(($s, $l)),+),
            _ => $self.$run::<f32>($(($s, $l)),+),
        }
    }};
}

pub(crate) use cuda_only_op;

/// With `CANDLEWICK_CUDA_SYNC_CHECK=1` in the environment (finding which op faults on a GPU: a
/// kernel's illegal address otherwise surfaces at some later call), the stream is synchronized
/// before and after each op of the wing (and each cuDNN convolution and flash attention call), and
/// an error there names the op and whether it was pending before it ran or raised by it. Off by
/// default; skipped while a CUDA graph is being captured (nothing can synchronize then).
pub(crate) fn sync_check(device: &CudaDevice, when: &str, op: &str) -> Result<()> {
    static ON: OnceLock<bool> = OnceLock::new();
    if !*ON.get_or_init(|| std::env::var("CANDLEWICK_CUDA_SYNC_CHECK").is_ok_and(|v| v == "1")) {
        return Ok(());
    }
    let stream = device.cuda_stream();
    if timing::capturing(&stream) {
        return Ok(());
    }
    stream.synchronize().map_err(|e| candle_core::Error::Msg(format!("CUDA error {when} {op}: {e}")))
}

/// PTX embedded in the library (build.rs compiles it) and the name candle caches its module by.
pub(crate) struct PtxModule {
    pub name: &'static str,
    pub ptx: &'static str,
}

/// `launch!(device, MODULE, "kernel", config, arg, arg, ...)`: the kernel of `MODULE` (loaded on
/// first use, then cached by candle's device) launched on the device's stream with the arguments
/// in order; a `candle_core::Result<()>`.
macro_rules! launch {
    ($dev:expr, $module:expr, $kernel:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        use candle_core::cuda::cudarc::driver::PushKernelArg as _;
        let module: &$crate::cuda::op::PtxModule = &$module;
        match $dev.get_or_load_custom_func($kernel, module.name, module.ptx) {
            Ok(func) => {
                let mut args = func.builder();
                $(args.arg($arg);)+
                candle_core::cuda::WrapErr::w(unsafe { args.launch($cfg) }).map(|_| ())
            }
            Err(e) => Err(e),
        }
    }};
}

pub(crate) use launch;

/// The elements of a contiguous input as a device view; `what` names the op in the error.
pub(crate) fn contiguous_view<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout, what: &str) -> Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(s.as_cuda_slice::<T>()?.slice(start..end)),
        None => bail!("{what}: inputs must be contiguous"),
    }
}

/// Timing candidate plans on the stream they will run on (cuDNN's and cuBLASLt's autotuning).
pub(crate) mod timing {
    use std::sync::Arc;

    use candle_core::cuda::cudarc::driver::sys::{CUevent_flags, CUstreamCaptureStatus};
    use candle_core::cuda::cudarc::driver::{CudaEvent, CudaStream};
    use candle_core::{Error, Result};

    /// Whether `stream` is being captured into a CUDA graph (nothing can be timed then).
    pub fn capturing(stream: &CudaStream) -> bool {
        matches!(stream.capture_status(), Ok(status) if status != CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
    }

    /// The index of the candidate whose `runs` runs in a row take the least time on `stream`,
    /// each run once untimed first (None when there are no candidates).
    pub fn fastest<C>(
        stream: &Arc<CudaStream>,
        candidates: &[C],
        runs: usize,
        mut run: impl FnMut(&C) -> Result<()>,
    ) -> Result<Option<usize>> {
        let mut best: Option<(f32, usize)> = None;
        for (i, candidate) in candidates.iter().enumerate() {
            run(candidate)?; // warm-up
            let start = event(stream)?;
            for _ in 0..runs {
                run(candidate)?;
            }
            let end = event(stream)?;
            end.synchronize().map_err(Error::wrap)?;
            let ms = start.elapsed_ms(&end).map_err(Error::wrap)?;
            if best.is_none_or(|(fastest, _)| ms < fastest) {
                best = Some((ms, i));
            }
        }
        Ok(best.map(|(_, i)| i))
    }

    fn event(stream: &Arc<CudaStream>) -> Result<CudaEvent> {
        let event = stream.context().new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(Error::wrap)?;
        event.record(stream).map_err(Error::wrap)?;
        Ok(event)
    }
}
