//! FP8 (e4m3) quantization (src/cuda/kernels/fp8.cu) of an f16 tensor, one scale a tensor, into
//! one u8 buffer laid out as [`Packed`] says: what `crate::cuda::fp8` gives cuBLASLt's FP8
//! products, for a weight once at load and for a layer's input at every call. Entry point and
//! guards: `crate::cuda::fp8`.

use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::LaunchConfig;
use candle_core::cuda::CudaStorage;
use candle_core::{bail, Layout, Result, Shape, Tensor};
use half::f16;

use super::launch::*;
use crate::cuda::fp8::Packed;
use crate::cuda::op::{cuda_only_op, launch};

struct Quantize;

impl Quantize {
    fn run(&self, (x, xl): (&CudaStorage, &Layout)) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let numel = xl.shape().elem_count();
        let packed = Packed::of(numel);
        let xv = view::<f16>(x, xl)?;
        if numel % 8 != 0 || !aligned(&[ptr(&dev, &xv)], 16) {
            bail!("fp8 quantize: {numel} values at a misaligned address (16-byte vectors of 8)");
        }
        let y = unsafe { dev.alloc::<u8>(packed.bytes) }?;
        let vectors = (numel / 8) as u64;
        let count = packed.partials as u32;
        // Device addresses within y: the values, the scale and the first pass's partials.
        let base = ptr(&dev, &y);
        let (scale, partials) = (base + packed.scale as u64, base + (packed.scale + Packed::SCALE_BYTES) as u64);
        let one_pass = |blocks: usize| LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(dev, FP8, "amax_partials_f16", one_pass(packed.partials), &xv, &vectors, &partials)?;
        let blocks = (elementwise_grid(numel / 8) as usize).min(Packed::MAX_BLOCKS);
        launch!(dev, FP8, "quantize_e4m3_f16", one_pass(blocks), &xv, &vectors, &partials, &count, &base, &scale)?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from(packed.bytes)))
    }
}

cuda_only_op!(CustomOp1 for Quantize, "fp8-quantize", run, x xl);

/// `x` (f16, contiguous, its element count a multiple of 8) as a [`Packed`] u8 tensor.
pub fn quantize(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Quantize)
}
