//! The transformer block, after diffusers' `attention.py`: `BasicTransformerBlock` and
//! `FeedForward` with GEGLU. The attention layers themselves are in attention_processor.rs.

use candle_core::{Result, Tensor, D};
use candle_nn::{Module, VarBuilder};

use super::attention_processor::{refused, Attention, AttentionConfig, Context, Input};
use super::linear::{self, Linear};
use super::norm::{layer_norm, LayerNorm};
use crate::cuda::{fp8, fused};

/// diffusers' `FeedForward` with the GEGLU activation: net.0.proj (to 2 x inner), GELU-gated,
/// then net.2.
#[derive(Debug, Clone)]
pub struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    pub fn new(vb: VarBuilder, dim: usize, mult: usize) -> Result<Self> {
        let inner = dim * mult;
        let proj = linear::token_linear(dim, inner * 2, vb.pp("net").pp("0").pp("proj"))?;
        let out = linear::token_linear(inner, dim, vb.pp("net").pp("2"))?;
        Ok(Self { proj, out })
    }

    /// `residual + feed_forward(xs)` (a transformer block's last residual connection), the
    /// addition fused into net.2's bias on CUDA.
    pub fn forward_residual(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.forward_residual_of(Input::Half(xs), residual)
    }

    /// net.0.proj: the layer that reads this feed-forward's input.
    pub fn input_projection(&self) -> &Linear {
        &self.proj
    }

    /// [`Self::forward_residual`] from an input a LayerNorm wrote in e4m3 for
    /// [`Self::input_projection`] (which said it takes it).
    pub fn forward_residual_quantized(&self, xs: &fp8::Quantized, residual: &Tensor) -> Result<Tensor> {
        self.forward_residual_of(Input::Fp8(xs), residual)
    }

    fn forward_residual_of(&self, xs: Input, residual: &Tensor) -> Result<Tensor> {
        crate::profile::scope("feed_forward", || {
            // The projection's bias is added in GEGLU's kernel on CUDA.
            let h = crate::profile::scope("ff_proj", || match xs {
                Input::Half(xs) => self.proj.product(xs),
                Input::Fp8(xs) => self.proj.product_quantized(xs)?.ok_or_else(refused),
            })?;
            if let Some(out) = self.gated_out_fp8(&h, residual)? {
                return Ok(out);
            }
            let gated = crate::profile::scope("ff_geglu", || match fused::geglu(&h, self.proj.bias())? {
                Some(gated) => Ok(gated),
                None => {
                    let halves = self.proj.add_bias(h)?.chunk(2, D::Minus1)?;
                    &halves[0] * halves[1].gelu_erf()?
                }
            })?;
            crate::profile::scope("ff_out", || self.out.forward_residual(&gated, residual))
        })
    }

    /// GEGLU written in e4m3 for net.2 and net.2 from it (+ `residual`), when net.2 multiplies in
    /// FP8 (`fp8` load option) and takes that input; None otherwise (the f16 GEGLU then runs).
    fn gated_out_fp8(&self, h: &Tensor, residual: &Tensor) -> Result<Option<Tensor>> {
        let mut dims = h.dims().to_vec();
        let Some(width) = dims.pop() else { return Ok(None) };
        dims.push(width / 2);
        if !fp8::geglu_quantizes() || !self.out.takes_fp8(&dims, Some(residual)) {
            return Ok(None);
        }
        let packed = crate::profile::scope("ff_geglu", || fused::geglu_fp8(h, self.proj.bias()))?;
        let Some(packed) = packed else { return Ok(None) };
        let gated = fp8::Quantized { packed, dims };
        crate::profile::scope("ff_out", || self.out.forward_residual_quantized(&gated, residual))?
            .ok_or_else(refused)
            .map(Some)
    }
}

/// diffusers' `BasicTransformerBlock` with layer norms: self-attention (cross-attention when
/// `only_cross_attention`), cross-attention, GEGLU feed-forward, each pre-normed and residual.
#[derive(Debug, Clone)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    only_cross_attention: bool,
}

impl BasicTransformerBlock {
    pub fn new(
        vb: VarBuilder,
        dim: usize,
        heads: usize,
        dim_head: usize,
        cross_attention_dim: usize,
        only_cross_attention: bool,
        upcast_attention: bool,
    ) -> Result<Self> {
        let norm = |name: &str| layer_norm(dim, 1e-5, vb.pp(name));
        let attn = |name: &str, cross: Option<usize>| {
            Attention::new(vb.pp(name), &AttentionConfig::transformer(dim, cross, heads, dim_head, upcast_attention))
        };
        Ok(Self {
            norm1: norm("norm1")?,
            attn1: attn("attn1", only_cross_attention.then_some(cross_attention_dim))?,
            norm2: norm("norm2")?,
            attn2: attn("attn2", Some(cross_attention_dim))?,
            norm3: norm("norm3")?,
            ff: FeedForward::new(vb.pp("ff"), dim, 4)?,
            only_cross_attention,
        })
    }

    /// The attention layers that read the text context: attn2, and attn1 too under
    /// `only_cross_attention`.
    pub fn context_attentions_mut(&mut self) -> impl Iterator<Item = &mut Attention> {
        let first = self.only_cross_attention.then_some(&mut self.attn1);
        first.into_iter().chain(std::iter::once(&mut self.attn2))
    }

    /// Each norm writes e4m3 where the layer after it multiplies in FP8 (`fp8` load option), f16
    /// elsewhere.
    pub fn forward(&self, xs: &Tensor, context: &Context) -> Result<Tensor> {
        let ctx1 = self.only_cross_attention.then_some(context);
        let norm = |n: &LayerNorm, xs: &Tensor| crate::profile::scope("layer_norm", || n.forward(xs));
        let quantized = |n: &LayerNorm, xs: &Tensor, next: Option<&Linear>| match next {
            Some(next) => crate::profile::scope("layer_norm", || n.forward_fp8(xs, next)),
            None => Ok(None),
        };
        let xs = match quantized(&self.norm1, xs, self.attn1.input_projection(ctx1.is_some()))? {
            Some(q) => self.attn1.forward_residual_quantized(&q, ctx1, xs)?,
            None => self.attn1.forward_residual(&norm(&self.norm1, xs)?, ctx1, xs)?,
        };
        let xs = match quantized(&self.norm2, &xs, self.attn2.input_projection(true))? {
            Some(q) => self.attn2.forward_residual_quantized(&q, Some(context), &xs)?,
            None => self.attn2.forward_residual(&norm(&self.norm2, &xs)?, Some(context), &xs)?,
        };
        match quantized(&self.norm3, &xs, Some(self.ff.input_projection()))? {
            Some(q) => self.ff.forward_residual_quantized(&q, &xs),
            None => self.ff.forward_residual(&norm(&self.norm3, &xs)?, &xs),
        }
    }
}
