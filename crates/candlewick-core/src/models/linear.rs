//! diffusers' `nn.Linear`: on CUDA in f16 one cuBLASLt call that adds the bias (and a residual)
//! in its epilogue (`cublaslt::linear`); elsewhere candle_nn's matrix product, with the bias added by
//! one fused kernel (`fused::bias_add`) or candle's broadcast add.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::cuda::{cublaslt, fused};

#[derive(Debug, Clone)]
pub struct Linear {
    product: candle_nn::Linear,
    bias: Option<Tensor>,
}

impl Linear {
    /// From a weight [out_dim, in_dim] and an optional bias [out_dim].
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { product: candle_nn::Linear::new(weight, None), bias }
    }
}

/// A linear layer from `in_dim` to `out_dim` features, with bias when `bias`.
pub fn linear_b(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
    Ok(Linear { product: candle_nn::Linear::new(weight, None), bias })
}

pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_b(in_dim, out_dim, true, vb)
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
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
        self.product.forward(xs)
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
