//! diffusers' `nn.Linear`: on CUDA in f16 one cuBLASLt call that adds the bias (and a residual)
//! in its epilogue (`cublaslt::linear`); elsewhere candle_nn's matrix product, with the bias added by
//! one fused kernel (`fused::bias_add`) or candle's broadcast add. A layer over the image's tokens
//! ([`token_linear`], [`Linear::over_tokens`]) in a UNet loaded with `fp8` holds its weight in e4m3
//! only and multiplies in FP8 (`cuda::fp8`).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::cuda::fp8::{self, Fp8Weight};
use crate::cuda::{cublaslt, fused};

#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

#[derive(Debug, Clone)]
enum Weight {
    Half(candle_nn::Linear),
    /// Quantized at load; the f16 weight is not kept.
    Fp8(Fp8Weight),
}

impl Linear {
    /// From a weight [out_dim, in_dim] and an optional bias [out_dim], in the weight's dtype.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight: Weight::Half(candle_nn::Linear::new(weight, None)), bias }
    }

    /// A layer whose input is the image's tokens (a transformer's projections, attention and
    /// feed-forward): quantized in place of its f16 weight when a UNet is built with `fp8` and
    /// the layer qualifies (`fp8::weight`), as [`Self::new`] otherwise.
    pub fn over_tokens(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(match fp8::weight(&weight)? {
            Some(fp8) => Linear { weight: Weight::Fp8(fp8), bias },
            None => Self::new(weight, bias),
        })
    }
}

fn weight_and_bias(in_dim: usize, out_dim: usize, bias: bool, vb: &VarBuilder) -> Result<(Tensor, Option<Tensor>)> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
    Ok((weight, bias))
}

/// A linear layer from `in_dim` to `out_dim` features, with bias when `bias`.
pub fn linear_b(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let (weight, bias) = weight_and_bias(in_dim, out_dim, bias, &vb)?;
    Ok(Linear::new(weight, bias))
}

pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_b(in_dim, out_dim, true, vb)
}

/// [`linear`] for a layer over the image's tokens ([`Linear::over_tokens`]).
pub fn token_linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let (weight, bias) = weight_and_bias(in_dim, out_dim, true, &vb)?;
    Linear::over_tokens(weight, bias)
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let half = match &self.weight {
            Weight::Fp8(weight) => return fp8::linear(xs, weight, self.bias.as_ref(), None),
            Weight::Half(half) => half,
        };
        if let Some(ys) = cublaslt::linear(xs, half.weight(), self.bias.as_ref(), None)? {
            return Ok(ys);
        }
        self.add_bias(half.forward(xs)?)
    }
}

impl Linear {
    /// `residual + linear(xs)`: a residual connection after the layer, added in the GEMM's
    /// epilogue or the bias's kernel on CUDA.
    pub fn forward_residual(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let half = match &self.weight {
            Weight::Fp8(weight) => return fp8::linear(xs, weight, self.bias.as_ref(), Some(residual)),
            Weight::Half(half) => half,
        };
        if let Some(ys) = cublaslt::linear(xs, half.weight(), self.bias.as_ref(), Some(residual))? {
            return Ok(ys);
        }
        let ys = half.forward(xs)?;
        if let Some(bias) = &self.bias {
            if let Some(out) = fused::bias_add_residual(&ys, bias, ys.rank() - 1, residual)? {
                return Ok(out);
            }
        }
        residual + self.add_bias(ys)?
    }

    /// The matrix product alone, for a caller that adds [`Self::bias`] in a kernel of its own.
    pub fn product(&self, xs: &Tensor) -> Result<Tensor> {
        match &self.weight {
            Weight::Fp8(weight) => fp8::linear(xs, weight, None, None),
            Weight::Half(half) => half.forward(xs),
        }
    }

    /// Whether this layer multiplies an input of `dims` in FP8 (with `residual` added, when given):
    /// what a producer asks before it writes its output quantized ([`fp8::Quantized`]) for
    /// [`Self::forward_quantized`] or [`Self::forward_residual_quantized`].
    pub fn takes_fp8(&self, dims: &[usize], residual: Option<&Tensor>) -> bool {
        matches!(&self.weight, Weight::Fp8(w) if fp8::takes(dims, w, self.bias.as_ref(), residual))
    }

    /// The forward (bias included) from an input already quantized, None when this layer is not
    /// FP8 or refuses the call.
    pub fn forward_quantized(&self, xs: &fp8::Quantized) -> Result<Option<Tensor>> {
        self.quantized_product(xs, self.bias.as_ref(), None)
    }

    /// [`Self::forward_residual`] from an input already quantized, as [`Self::forward_quantized`].
    pub fn forward_residual_quantized(&self, xs: &fp8::Quantized, residual: &Tensor) -> Result<Option<Tensor>> {
        self.quantized_product(xs, self.bias.as_ref(), Some(residual))
    }

    /// [`Self::product`] (no bias) from an input already quantized, as [`Self::forward_quantized`].
    pub fn product_quantized(&self, xs: &fp8::Quantized) -> Result<Option<Tensor>> {
        self.quantized_product(xs, None, None)
    }

    fn quantized_product(
        &self,
        xs: &fp8::Quantized,
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        match &self.weight {
            Weight::Fp8(weight) => fp8::linear_quantized(xs, weight, bias, residual),
            Weight::Half(_) => Ok(None),
        }
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The f16 (or f32) weight, [out_dim, in_dim]; None for a layer held in FP8 only.
    pub fn weight(&self) -> Option<&Tensor> {
        match &self.weight {
            Weight::Half(half) => Some(half.weight()),
            Weight::Fp8(_) => None,
        }
    }

    /// The weight's [out_dim, in_dim].
    pub fn dims(&self) -> (usize, usize) {
        match &self.weight {
            Weight::Half(half) => {
                let d = half.weight().dims();
                (d[0], d[1])
            }
            Weight::Fp8(w) => (w.n, w.k),
        }
    }

    /// `ys + bias`: what [`Self::product`] left out.
    pub fn add_bias(&self, ys: Tensor) -> Result<Tensor> {
        let Some(bias) = &self.bias else { return Ok(ys) };
        match fused::bias_add(&ys, bias, ys.rank() - 1)? {
            Some(ys) => Ok(ys),
            None => ys.broadcast_add(bias),
        }
    }
}
