//! FP8 (e4m3) matrix products for the UNet's linear layers (load option `fp8`, off by default;
//! compute capability 8.9 and up: Ada, Hopper). Each weight is quantized once at load with one
//! scale for the tensor (its largest magnitude / 448), each layer's input at every call the same
//! way (two kernels, src/cuda/kernels/fp8.cu), and cuBLASLt multiplies the two in FP8 with f32
//! accumulation, adding the bias (and a residual) in its epilogue and writing f16
//! (`cublaslt::linear_fp8`). The text encoders, the VAE, convolutions and attention stay f16.
//!
//! A transformer block's LayerNorms write their output straight in e4m3 when the layer after them
//! multiplies in FP8 ([`Quantized`], `LayerNorm::forward_fp8`): a static scale from the norm's own
//! weight and bias bounds every value it can write ([`norm_bound`]), so the two quantizing passes
//! and the f16 write are gone for the self-attention's q/k/v, the cross-attention's queries and the
//! feed-forward's projection (`CANDLEWICK_FP8_NORM=0` puts them back, for the GPU benchmark).
//!
//! Only the layers over the image's tokens are quantized (a transformer's projections in and out,
//! its attention's q/k/v and to_out, its feed-forward: `Linear::over_tokens`), and they keep no f16
//! copy of their weight: a UNet loaded with `fp8` holds those weights in half the memory. The
//! layers fed by the time embedding or the text (the cross-attention's keys and values, made once a
//! call) stay f16: a few rows, where an FP8 product gains nothing.
//!
//! It is not diffusers' arithmetic: the image differs from the f16 one, and the GPU benchmark
//! measures by how much beside its speed (bench/gpu/bench.mjs's FP8 rows, `vs_f16`).

pub mod packed;

use std::cell::{Cell, RefCell};

use candle_core::{bail, DType, Result, Tensor, TensorId};

use crate::cuda::features::built;
use crate::cuda::{cublaslt, settings};

/// A linear layer's weight [n, k] quantized at load.
#[derive(Debug, Clone)]
pub struct Fp8Weight {
    pub packed: Tensor,
    pub n: usize,
    pub k: usize,
}

/// Layers with fewer outputs than this stay f16 (`CANDLEWICK_FP8_MIN_OUTPUTS` changes it, for the
/// GPU benchmark): quantizing a layer's input costs in proportion to its inputs, the FP8 product
/// saves in proportion to inputs x outputs, so narrow layers (a transformer block's output
/// projections at SD1.5's 320 and 640 channels) gain nothing.
pub fn min_outputs() -> usize {
    static MIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| {
        std::env::var("CANDLEWICK_FP8_MIN_OUTPUTS").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(1024)
    })
}

thread_local! {
    static QUANTIZING: Cell<bool> = const { Cell::new(false) };
    /// The f16 tensors [`weight`] quantized during [`quantizing`] (what a weight record should
    /// stop holding: the layers dropped them).
    static QUANTIZED: RefCell<Vec<TensorId>> = const { RefCell::new(Vec::new()) };
}

/// Whether the constructor running on this thread builds FP8 layers (see [`quantizing`]).
pub fn building() -> bool {
    QUANTIZING.with(|q| q.get())
}

/// Whether LayerNorms write e4m3 for the FP8 layer after them (on unless `CANDLEWICK_FP8_NORM=0`).
pub fn norm_quantizes() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("CANDLEWICK_FP8_NORM").map_or(true, |v| v.trim() != "0"))
}

/// Whether GEGLU writes its output's largest magnitude for the FP8 layer after it, so that one
/// quantizing pass is left (on unless `CANDLEWICK_FP8_GEGLU=0`, for the GPU benchmark's A/B).
pub fn geglu_quantizes() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("CANDLEWICK_FP8_GEGLU").map_or(true, |v| v.trim() != "0"))
}

/// The largest magnitude a LayerNorm over `weight.len()` features can write: its normalized
/// values' squares sum to at most the feature count, so none exceeds its square root, and
/// `sqrt(features) * max|weight| + max|bias|` bounds every output, whatever the input.
pub fn norm_bound(weight: &[f32], bias: &[f32]) -> f32 {
    let max_abs = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
    (weight.len() as f32).sqrt() * max_abs(weight) + max_abs(bias)
}

/// An f16 tensor of `dims` already quantized to e4m3 (the [`packed::Packed`] layout), by a producer that
/// wrote it so (a LayerNorm), for [`linear_quantized`].
#[derive(Debug, Clone)]
pub struct Quantized {
    pub packed: Tensor,
    pub dims: Vec<usize>,
}

/// The rows of an input of `dims` when an FP8 product with `weight` takes it (rows of the
/// weight's width, as many as cuBLASLt counts): what [`linear`] checks of the input's shape.
fn rows(dims: &[usize], weight: &Fp8Weight) -> Option<usize> {
    let &k = dims.last()?;
    let m = dims.iter().product::<usize>() / k.max(1);
    (k == weight.k && (1..=i32::MAX as usize).contains(&m)).then_some(m)
}

/// Whether [`linear_quantized`] takes an input of `dims` with `bias` and `residual`.
pub fn takes(dims: &[usize], weight: &Fp8Weight, bias: Option<&Tensor>, residual: Option<&Tensor>) -> bool {
    rows(dims, weight).is_some() && epilogue_fits(dims, weight, bias, residual).is_some()
}

/// Runs `f` (the UNet's constructor) with the linear layers it makes quantized when the installed
/// settings ask for FP8; with the f16 tensors it quantized (their layers hold no other copy).
pub fn quantizing<R>(f: impl FnOnce() -> R) -> (R, Vec<TensorId>) {
    /// Puts the flag back when the constructor returns or unwinds (the pipeline thread survives a panic).
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            QUANTIZING.with(|q| q.set(self.0));
        }
    }
    let _restore = Restore(QUANTIZING.with(|q| q.replace(settings::current().fp8)));
    let before = QUANTIZED.with(|q| q.take());
    let made = f();
    (made, QUANTIZED.with(|q| q.replace(before)))
}

/// `weight` [n, k] quantized, when a UNet is being built with FP8 on and the layer qualifies (f16
/// on CUDA, n and k multiples of 16 as cuBLASLt's FP8 kernels want, n at least [`min_outputs`]);
/// else None. The caller keeps the FP8 weight in place of the f16 one.
pub fn weight(weight: &Tensor) -> Result<Option<Fp8Weight>> {
    if !QUANTIZING.with(|q| q.get()) || weight.dtype() != DType::F16 || !weight.device().is_cuda() {
        return Ok(None);
    }
    let Ok((n, k)) = weight.dims2() else { return Ok(None) };
    if n % 16 != 0 || k % 16 != 0 || n < min_outputs() {
        return Ok(None);
    }
    let packed: Result<Option<Tensor>> = built!("cuda", crate::cuda::fused::fp8_quantize(weight));
    let Some(packed) = packed? else { return Ok(None) };
    QUANTIZED.with(|q| q.borrow_mut().push(weight.id()));
    Ok(Some(Fp8Weight { packed, n, k }))
}

/// `residual + xs · weightᵀ + bias` in FP8 (see the module), for any input of the weight's width.
/// The UNet's layers give f16 activations at aligned addresses and a bias and residual cuBLASLt's
/// epilogue takes: one quantizing pass and one product. Anything else is made so first (an f32
/// input cast, a view at an odd offset copied) or added after the product (a bias or residual the
/// epilogue refuses), so that a layer held only in FP8 answers every call a linear layer would.
pub fn linear(xs: &Tensor, weight: &Fp8Weight, bias: Option<&Tensor>, residual: Option<&Tensor>) -> Result<Tensor> {
    let Some(m) = rows(xs.dims(), weight) else {
        bail!(
            "linear layer (FP8, weight [{}, {}]): an input of shape {:?} is not rows of {} features (at most {} rows)",
            weight.n,
            weight.k,
            xs.dims(),
            weight.k,
            i32::MAX
        )
    };
    let xs = if xs.dtype() != DType::F16 {
        xs.to_dtype(DType::F16)?
    } else if !cublaslt::starts_aligned(xs) {
        xs.copy()?
    } else {
        xs.clone()
    };
    if let Some(out_dims) = epilogue_fits(xs.dims(), weight, bias, residual) {
        return fp8_product(&xs, (m, weight), bias, residual, &out_dims);
    }
    let out_dims = epilogue_fits(xs.dims(), weight, None, None).expect("no epilogue always fits");
    let mut ys = fp8_product(&xs, (m, weight), None, None, &out_dims)?;
    if let Some(bias) = bias {
        ys = ys.broadcast_add(&bias.to_dtype(DType::F16)?)?;
    }
    match residual {
        Some(r) => ys + r.to_dtype(DType::F16)?,
        None => Ok(ys),
    }
}

/// `residual + xs · weightᵀ + bias` from an input a producer quantized ([`Quantized`]), or None
/// where [`linear`] would refuse its shape, bias or residual.
pub fn linear_quantized(
    xs: &Quantized,
    weight: &Fp8Weight,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    let Some(m) = rows(&xs.dims, weight) else { return Ok(None) };
    let Some(out_dims) = epilogue_fits(&xs.dims, weight, bias, residual) else { return Ok(None) };
    built!("cuda", cublaslt::linear_fp8(&xs.packed, &weight.packed, (m, weight.n, weight.k), bias, residual, &out_dims))
}

/// The product's dims when `bias` ([n], f16) and `residual` (the output's dims, f16) fit
/// cuBLASLt's epilogue, aligned as it wants; else None.
fn epilogue_fits(
    dims: &[usize],
    weight: &Fp8Weight,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Option<Vec<usize>> {
    let mut out_dims = dims.to_vec();
    out_dims.pop();
    out_dims.push(weight.n);
    let fits = residual.is_none_or(|r| r.dims() == out_dims.as_slice() && r.dtype() == DType::F16)
        && bias.is_none_or(|b| b.dims() == [weight.n] && b.dtype() == DType::F16)
        && [bias, residual].into_iter().flatten().all(cublaslt::starts_aligned);
    fits.then_some(out_dims)
}

fn fp8_product(
    xs: &Tensor,
    (m, weight): (usize, &Fp8Weight),
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    out_dims: &[usize],
) -> Result<Tensor> {
    let product: Result<Option<Tensor>> = built!("cuda", quantized_product(xs, (m, weight), bias, residual, out_dims));
    product?.ok_or_else(|| candle_core::Error::Msg("FP8 products need the CUDA build".into()))
}

#[cfg(feature = "cuda")]
fn quantized_product(
    xs: &Tensor,
    (m, weight): (usize, &Fp8Weight),
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    out_dims: &[usize],
) -> Result<Tensor> {
    let xs_q = crate::cuda::fused::fp8_quantize(xs)?;
    cublaslt::linear_fp8(&xs_q, &weight.packed, (m, weight.n, weight.k), bias, residual, out_dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn no_layer_norm_output_passes_its_bound() -> Result<()> {
        // Rows built to push one feature as far as a LayerNorm can: one outlier among equal values.
        let cols = 320;
        let weight: Vec<f32> = (0..cols).map(|i| 0.5 + (i as f32 * 0.37).sin()).collect();
        let bias: Vec<f32> = (0..cols).map(|i| 0.1 * (i as f32 * 0.11).cos()).collect();
        let bound = norm_bound(&weight, &bias);
        let widest = (0..cols).max_by(|&a, &b| weight[a].abs().total_cmp(&weight[b].abs())).unwrap();
        let mut rows = vec![0f32; 3 * cols];
        for (c, v) in rows.iter_mut().enumerate() {
            *v = match c / cols {
                0 => {
                    if c % cols == widest {
                        1e4
                    } else {
                        -3.0
                    }
                }
                1 => (c as f32 * 1.7).sin() * 50.0,
                _ => 0.0,
            };
        }
        let device = Device::Cpu;
        let norm = candle_nn::LayerNorm::new(
            Tensor::new(weight.as_slice(), &device)?,
            Tensor::new(bias.as_slice(), &device)?,
            1e-5,
        );
        let ys = candle_core::Module::forward(&norm, &Tensor::from_vec(rows, (3, cols), &device)?)?;
        let largest = ys.abs()?.max_keepdim(1)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(largest.iter().all(|&m| m <= bound), "{largest:?} against {bound}");
        let max_bias = bias.iter().fold(0f32, |m, b| m.max(b.abs()));
        assert!(largest[0] > 0.98 * (bound - max_bias), "the outlier row comes near it: {largest:?}, {bound}");
        Ok(())
    }

    #[test]
    fn nothing_is_quantized_outside_a_unet_built_with_fp8_on() {
        let w = Tensor::zeros((1024, 1024), DType::F16, &Device::Cpu).unwrap();
        assert!(weight(&w).unwrap().is_none());
        let (made, quantized) = quantizing(|| weight(&w).unwrap());
        assert!(made.is_none() && quantized.is_empty(), "the CPU has no FP8 products");
        assert!(!QUANTIZING.with(|q| q.get()), "the flag is the constructor's only");
    }

    #[test]
    fn a_constructor_that_panics_leaves_the_flag_as_it_was() {
        settings::CudaSettings { fp8: true, ..settings::CudaSettings::UNINSTALLED }.install(&Device::Cpu);
        let caught = std::panic::catch_unwind(|| quantizing(|| assert!(QUANTIZING.with(|q| q.get()), "set inside")));
        assert!(caught.is_ok());
        let caught = std::panic::catch_unwind(|| quantizing(|| panic!("a constructor's panic")));
        assert!(caught.is_err());
        assert!(!QUANTIZING.with(|q| q.get()), "the flag stayed set after the panic");
    }
}
