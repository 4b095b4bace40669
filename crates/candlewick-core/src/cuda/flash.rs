//! Fused FlashAttention-2 for the UNet's and the VAE's attention on CUDA (f16).
//!
//! Built only with the `flash-attn` feature (candle-flash-attn's kernels, a long nvcc build).
//! Whether a pipeline's attention uses it is its `CudaSettings::attention` (`crate::cuda::attention`).

use candle_core::{Result, Tensor};

/// Whether this build carries the flash-attention kernels.
pub fn compiled() -> bool {
    cfg!(feature = "flash-attn")
}

/// The head dims the CUDA build compiles kernels for (scripts/cuda/flash-attn-sd.sh keeps the f16,
/// non-causal kernels for 64, 96, 128 and 160; a head dim runs on the smallest kernel >= it).
const HEAD_DIMS: std::ops::RangeInclusive<usize> = 33..=160;

/// softmax(q kᵀ / sqrt(d)) v on [batch, seq, heads, d] tensors when flash attention can do it
/// (CUDA, f16, d a multiple of 8 in 33..=160); None otherwise, and the caller takes the unfused path.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
    if !usable(q, k, v)? {
        return Ok(None);
    }
    crate::cuda::features::built!("flash-attn", run(q, k, v))
}

fn usable(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<bool> {
    let d = q.dims4()?.3;
    let f16 = candle_core::DType::F16;
    Ok(compiled()
        && q.device().is_cuda()
        && (q.dtype(), k.dtype(), v.dtype()) == (f16, f16, f16)
        && d % 8 == 0
        && HEAD_DIMS.contains(&d))
}

#[cfg(feature = "flash-attn")]
fn run(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let d = q.dims4()?.3;
    let scale = 1.0 / (d as f32).sqrt();
    // Strided views (of a stacked q/k/v projection) are fine as long as the last dim is dense.
    let dense_rows = |t: &Tensor| if t.stride().last() == Some(&1) { Ok(t.clone()) } else { t.contiguous() };
    let device = match q.device() {
        candle_core::Device::Cuda(device) => device.clone(),
        _ => candle_core::bail!("flash attention runs on CUDA tensors only"),
    };
    crate::cuda::op::sync_check(&device, "before", "flash-attention")?;
    let out = candle_flash_attn::flash_attn(&dense_rows(q)?, &dense_rows(k)?, &dense_rows(v)?, scale, false)?;
    crate::cuda::op::sync_check(&device, "after", "flash-attention")?;
    Ok(out)
}
