//! diffusers' `nn.Linear`: on CUDA in f16 one cuBLASLt call that adds the bias (and a residual)
//! in its epilogue (`cublaslt::linear`); elsewhere candle_nn's matrix product, with the bias added by
//! one fused kernel (`fused::bias_add`) or candle's broadcast add. A UNet loaded with `fp8` keeps
//! its weight quantized too and multiplies in FP8 where `cuda::fp8` takes the call.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::cuda::fp8::{self, Fp8Weight};
use crate::cuda::{cublaslt, fused};

#[derive(Debug, Clone)]
pub struct Linear {
    product: candle_nn::Linear,
    bias: Option<Tensor>,
    fp8: Option<Fp8Weight>,
}

impl Linear {
    /// From a weight [out_dim, in_dim] and an optional bias [out_dim].
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let fp8 = fp8::weight(&weight)?;
        Ok(Linear { product: candle_nn::Linear::new(weight, None), bias, fp8 })
    }
}

/// A linear layer from `in_dim` to `out_dim` features, with bias when `bias`.
pub fn linear_b(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
    Linear::new(weight, bias)
}

pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_b(in_dim, out_dim, true, vb)
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if let Some(ys) = self.fp8_product(xs, self.bias.as_ref(), None)? {
            return Ok(ys);
        }
        if let Some(ys) = cublaslt::linear(xs, self.product.weight(), self.bias.as_ref(), None)? {
            return Ok(ys);
        }
        self.add_bias(self.product.forward(xs)?)
    }
}

impl Linear {
    /// `residual + linear(xs)`: a residual connection after the layer, added in the GEMM's
    /// epilogue or the bias's kernel on CUDA.
    pub fn forward_residual(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if let Some(ys) = self.fp8_product(xs, self.bias.as_ref(), Some(residual))? {
            return Ok(ys);
        }
        if let Some(ys) = cublaslt::linear(xs, self.product.weight(), self.bias.as_ref(), Some(residual))? {
            return Ok(ys);
        }
        let ys = self.product.forward(xs)?;
        if let Some(bias) = &self.bias {
            if let Some(out) = fused::bias_add_residual(&ys, bias, ys.rank() - 1, residual)? {
                return Ok(out);
            }
        }
        residual + self.add_bias(ys)?
    }

    /// The matrix product alone, for a caller that adds [`Self::bias`] in a kernel of its own.
    pub fn product(&self, xs: &Tensor) -> Result<Tensor> {
        if let Some(ys) = self.fp8_product(xs, None, None)? {
            return Ok(ys);
        }
        self.product.forward(xs)
    }

    /// Whether this layer multiplies an input of `dims` in FP8: what a producer asks before it
    /// writes its output quantized ([`fp8::Quantized`]) for [`Self::forward_quantized`].
    pub fn takes_fp8(&self, dims: &[usize]) -> bool {
        self.fp8.as_ref().is_some_and(|w| fp8::takes(dims, w, self.bias.as_ref()))
    }

    /// The forward (bias included) from an input already quantized, None when this layer is not
    /// FP8 or refuses the call.
    pub fn forward_quantized(&self, xs: &fp8::Quantized) -> Result<Option<Tensor>> {
        self.quantized_product(xs, self.bias.as_ref())
    }

    /// [`Self::product`] (no bias) from an input already quantized, as [`Self::forward_quantized`].
    pub fn product_quantized(&self, xs: &fp8::Quantized) -> Result<Option<Tensor>> {
        self.quantized_product(xs, None)
    }

    fn quantized_product(&self, xs: &fp8::Quantized, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
        match &self.fp8 {
            Some(weight) => fp8::linear_quantized(xs, weight, bias, None),
            None => Ok(None),
        }
    }

    /// The FP8 product when this layer was quantized and `cuda::fp8` takes the call.
    fn fp8_product(&self, xs: &Tensor, bias: Option<&Tensor>, residual: Option<&Tensor>) -> Result<Option<Tensor>> {
        match &self.fp8 {
            Some(weight) => fp8::linear(xs, weight, bias, residual),
            None => Ok(None),
        }
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The weight, [out_dim, in_dim].
    pub fn weight(&self) -> &Tensor {
        self.product.weight()
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
