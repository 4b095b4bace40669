//! candle custom ops that run on CUDA tensors only (cuBLASLt products, cuDNN's attention, the
//! fused kernels' wrappers): [`cuda_only_op!`] writes their `CustomOp1/2/3` impl. Callers check
//! the device first and take candle's own ops on the CPU, so the CPU side only refuses.
//! [`timing`] picks the fastest of a library's candidate plans (cuDNN's, cuBLASLt's).

/// `cuda_only_op!(CustomOp3 for Op, "op-name", run, a al, b bl, c cl)`: `cuda_fwd` calls
/// `self.run((a, al), (b, bl), (c, cl))`; `cpu_fwd` fails with an error naming the op.
macro_rules! cuda_only_op {
    ($trait:ident for $op:ty, $name:literal, $run:ident, $($s:ident $l:ident),+) => {
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
                self.$run($(($s, $l)),+)
            }
        }
    };
}

pub(crate) use cuda_only_op;

/// Timing candidate plans on the stream they will run on (`cudnnBenchmark`, `gemmBenchmark`).
#[cfg(feature = "cuda")]
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
