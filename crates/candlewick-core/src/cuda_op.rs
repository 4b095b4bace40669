//! candle custom ops that run on CUDA tensors only (cuBLASLt products, cuDNN's attention, the
//! fused kernels' wrappers): [`cuda_only_op!`] writes their `CustomOp1/2/3` impl. Callers check
//! the device first and take candle's own ops on the CPU, so the CPU side only refuses.

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
