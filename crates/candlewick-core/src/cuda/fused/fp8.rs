//! FP8 (e4m3) quantization (src/cuda/kernels/fp8.cu) of an f16 tensor, one scale a tensor, into
//! one u8 buffer laid out as [`Packed`] says: what `crate::cuda::fp8` gives cuBLASLt's FP8
//! products, for a weight once at load and for a layer's input at every call. Entry point and
//! guards: `crate::cuda::fp8`.

use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, LaunchConfig};
use candle_core::cuda::{CudaDevice, CudaStorage};
use candle_core::{bail, Layout, Result, Shape, Tensor};
use half::f16;

use super::launch::*;
use crate::cuda::fp8::packed::Packed;
use crate::cuda::op::{cuda_only_op, launch};

/// A [`Packed`] output being written: its buffer and the device addresses of its values (`base`),
/// scale and per-block partial maxima.
struct PackedOut {
    buffer: CudaSlice<u8>,
    packed: Packed,
    base: u64,
    scale: u64,
    partials: u64,
}

impl PackedOut {
    fn alloc(dev: &CudaDevice, numel: usize) -> Result<Self> {
        let packed = Packed::of(numel);
        let buffer = unsafe { dev.alloc::<u8>(packed.bytes) }?;
        let base = ptr(dev, &buffer);
        let (scale, partials) = (base + packed.scale as u64, base + (packed.scale + Packed::SCALE_BYTES) as u64);
        Ok(PackedOut { buffer, packed, base, scale, partials })
    }

    /// The quantizer's second pass (`quantize_e4m3_f16`): the f16 values `x`, whose block maxima a
    /// first pass wrote to the partials, as e4m3, and the scale.
    fn quantize(&self, dev: &CudaDevice, x: &CudaView<f16>) -> Result<()> {
        let vectors = (x.len() / 8) as u64;
        let count = self.packed.partials as u32;
        let grid = (elementwise_grid(x.len() / 8) as usize).min(Packed::MAX_BLOCKS);
        let (base, scale, partials) = (self.base, self.scale, self.partials);
        launch!(dev, FP8, "quantize_e4m3_f16", blocks(grid), x, &vectors, &partials, &count, &base, &scale)
    }

    fn into_storage(self, dev: CudaDevice) -> (CudaStorage, Shape) {
        let bytes = self.packed.bytes;
        (CudaStorage::wrap_cuda_slice(self.buffer, dev), Shape::from(bytes))
    }
}

/// `n` blocks of [`THREADS`] (the quantizing kernels loop over their vectors).
fn blocks(n: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

struct Quantize;

impl Quantize {
    fn run(&self, (x, xl): (&CudaStorage, &Layout)) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let numel = xl.shape().elem_count();
        let xv = view::<f16>(x, xl)?;
        if numel % 8 != 0 || !aligned(&[ptr(&dev, &xv)], 16) {
            bail!("fp8 quantize: {numel} values at a misaligned address (16-byte vectors of 8)");
        }
        let out = PackedOut::alloc(&dev, numel)?;
        let (vectors, partials) = ((numel / 8) as u64, out.partials);
        launch!(dev, FP8, "amax_partials_f16", blocks(out.packed.partials), &xv, &vectors, &partials)?;
        out.quantize(&dev, &xv)?;
        Ok(out.into_storage(dev))
    }
}

cuda_only_op!(CustomOp1 for Quantize, "fp8-quantize", run, x xl);

/// `x` (f16, contiguous, its element count a multiple of 8) as a [`Packed`] u8 tensor.
pub fn quantize(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Quantize)
}

/// diffusers' GEGLU on the projection's output `h` [..., 2n] (the projection's bias added first),
/// quantized as [`Quantize`] would quantize its f16 result, for the FP8 layer after it: GEGLU's
/// kernel writes each block's largest magnitude as it goes (`geglu_amax_vec8_f16`), so only the
/// quantizer's second pass follows.
struct GegluQuantize {
    has_bias: bool,
}

impl GegluQuantize {
    fn run(&self, (h, hl): (&CudaStorage, &Layout), (b, bl): (&CudaStorage, &Layout)) -> Result<(CudaStorage, Shape)> {
        let dev = h.device().clone();
        let last = hl.shape().dims().last().copied().unwrap_or(0);
        let (hv, bv) = (view::<f16>(h, hl)?, view::<f16>(b, bl)?);
        let numel = hl.shape().elem_count() / 2;
        if last == 0 || last % 16 != 0 || numel / 8 >= u32::MAX as usize {
            bail!("fp8 GEGLU: a projection of width {last} ({numel} outputs): the width must be a multiple of 16");
        }
        if self.has_bias && bl.shape().elem_count() != last {
            bail!("fp8 GEGLU: a bias of {} values for {last} features", bl.shape().elem_count());
        }
        if !aligned(&[ptr(&dev, &hv), ptr(&dev, &bv)], 16) {
            bail!("fp8 GEGLU: the projection or its bias at a misaligned address (16-byte vectors of 8)");
        }
        let out = PackedOut::alloc(&dev, numel)?;
        let mut gated = unsafe { dev.alloc::<f16>(numel) }?;
        let (vectors, n_vectors, has_bias) = ((numel / 8) as u32, (last / 16) as u32, self.has_bias as i32);
        let partials = out.partials;
        launch!(
            dev,
            FP8,
            "geglu_amax_vec8_f16",
            blocks(out.packed.partials),
            &hv,
            &bv,
            &mut gated,
            &vectors,
            &n_vectors,
            &has_bias,
            &partials
        )?;
        out.quantize(&dev, &gated.slice(..))?;
        Ok(out.into_storage(dev))
    }
}

cuda_only_op!(CustomOp2 for GegluQuantize, "fp8-geglu", run, x xl, a al);

/// `h` [..., 2n] (f16, n a multiple of 8) through GEGLU and quantized as a [`Packed`] u8 tensor;
/// `bias` None: any tensor stands in for the kernel's unused pointer.
pub fn geglu_quantize(h: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let h = h.contiguous()?;
    let b = bias.unwrap_or(&h).contiguous()?;
    h.apply_op2_no_bwd(&b, &GegluQuantize { has_bias: bias.is_some() })
}
