//! GroupNorm with diffusers' semantics (statistics in f32, per-channel affine), optionally
//! followed by SiLU as diffusers' resnets and output blocks apply it; and LayerNorm (one warp a
//! row on CUDA, `fused::layer_norm`; candle_nn's on the CPU).
//!
//! On the CPU it is candle_nn's GroupNorm (exact: the parity tests' bound is 1e-4). On CUDA,
//! candle_nn's version is about 13 kernels and as many passes over the activations; here it is
//! two kernels, SiLU included (`fused::group_norm`: partial sums per chunk of each group, then
//! normalize, scale, shift and activate).

use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::activations::Activation;
use super::linear::Linear;
use crate::cuda::{fp8, fused};

#[derive(Debug, Clone)]
pub struct LayerNorm {
    inner: candle_nn::LayerNorm,
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    /// In a UNet built with `fp8`: the largest magnitude this norm can write (`fp8::norm_bound`),
    /// the static scale of its e4m3 output ([`LayerNorm::forward_fp8`]).
    fp8_bound: Option<f32>,
}

pub fn layer_norm(dim: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    let (weight, bias) = (vb.get(dim, "weight")?, vb.get(dim, "bias")?);
    let inner = candle_nn::LayerNorm::new(weight.clone(), bias.clone(), eps);
    let fp8_bound = if fp8::building() && fp8::norm_quantizes() && weight.device().is_cuda() {
        let host = |t: &Tensor| t.to_dtype(DType::F32)?.to_vec1::<f32>();
        Some(fp8::norm_bound(&host(&weight)?, &host(&bias)?))
    } else {
        None
    };
    Ok(LayerNorm { inner, weight, bias, eps, fp8_bound })
}

impl LayerNorm {
    /// The norm of `xs` written in e4m3 for `next`, the FP8 layer it feeds, when `next` takes
    /// that input and the kernel the shape; None otherwise (the caller runs [`Module::forward`]).
    pub fn forward_fp8(&self, xs: &Tensor, next: &Linear) -> Result<Option<fp8::Quantized>> {
        let Some(bound) = self.fp8_bound else { return Ok(None) };
        if !next.takes_fp8(xs.dims(), None) {
            return Ok(None);
        }
        let packed = fused::layer_norm_fp8(xs, &self.weight, &self.bias, self.eps, bound)?;
        Ok(packed.map(|packed| fp8::Quantized { packed, dims: xs.dims().to_vec() }))
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match fused::layer_norm(xs, &self.weight, &self.bias, self.eps)? {
            Some(ys) => Ok(ys),
            None => self.inner.forward(xs),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

pub fn group_norm(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<GroupNorm> {
    if groups == 0 || channels % groups != 0 {
        bail!("GroupNorm: norm_num_groups ({groups}) must be at least 1 and divide the {channels} channels");
    }
    let (weight, bias) = (vb.get(channels, "weight")?, vb.get(channels, "bias")?);
    let inner = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?;
    Ok(GroupNorm { inner, weight, bias, groups, eps })
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        crate::profile::scope("group_norm", || {
            match fused::group_norm(xs, &self.weight, &self.bias, self.groups, self.eps, false)? {
                Some(ys) => Ok(ys),
                None => self.inner.forward(xs),
            }
        })
    }
}

impl GroupNorm {
    /// `act(norm(xs))`, in one pass with the norm on CUDA when `act` is SiLU.
    pub fn forward_then(&self, act: Activation, xs: &Tensor) -> Result<Tensor> {
        if act == Activation::Silu {
            let fused = crate::profile::scope("group_norm", || {
                fused::group_norm(xs, &self.weight, &self.bias, self.groups, self.eps, true)
            })?;
            if let Some(ys) = fused {
                return Ok(ys);
            }
        }
        act.forward(&self.forward(xs)?)
    }

    /// `act(norm(v))` written as tokens [b, p*q, c] (a channels-last convolution's input), where
    /// v is what a channels-last convolution's tail makes of its raw output `y` [b, p, q, c]:
    /// y + `conv_bias` + `per_sample` (`fused::group_norm_of_conv_tail`, on CUDA in f16; v itself
    /// is never written). None where that kernel cannot run (the caller applies the tail, then
    /// this norm).
    pub fn forward_tokens_of_conv_tail(
        &self,
        act: Activation,
        y: &Tensor,
        conv_bias: &Tensor,
        per_sample: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        if act != Activation::Silu {
            return Ok(None);
        }
        crate::profile::scope("group_norm", || {
            fused::group_norm_of_conv_tail(
                y,
                conv_bias,
                per_sample,
                &self.weight,
                &self.bias,
                self.groups,
                self.eps,
                true,
            )
        })
    }

    /// `act(norm(xs))` (no activation when `act` is None) for [b, c, h, w], written
    /// channels-last as [b, h*w, c] by the norm's own kernel on CUDA. None where that kernel
    /// cannot run (the CPU, an activation other than SiLU): the caller composes the ops.
    pub fn forward_tokens(&self, act: Option<Activation>, xs: &Tensor) -> Result<Option<Tensor>> {
        let silu = match act {
            None => false,
            Some(Activation::Silu) => true,
            Some(_) => return Ok(None),
        };
        crate::profile::scope("group_norm", || {
            fused::group_norm_tokens(xs, &self.weight, &self.bias, self.groups, self.eps, silu)
        })
    }
}
