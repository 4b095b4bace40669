//! diffusers' `transformers/transformer_2d.py`: `Transformer2DModel` on continuous inputs.

use candle_core::{bail, Result, Tensor};
use candle_nn::{Module, VarBuilder};

use super::attention::BasicTransformerBlock;
use super::attention_processor::{Attention, Context};
use super::conv::Conv2d;
use super::linear::{self, Linear};
use super::norm::{group_norm, GroupNorm};
use super::resnet::conv;
use crate::cuda::fused;

/// The input and output projections of [`Transformer2DModel`]: 1x1 convolutions, or linear
/// layers with `use_linear_projection`.
#[derive(Debug, Clone)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// The settings of one [`Transformer2DModel`].
#[derive(Debug, Clone, Copy)]
pub struct Transformer2DConfig {
    pub num_layers: usize,
    pub heads: usize,
    pub cross_attention_dim: usize,
    pub norm_num_groups: usize,
    pub use_linear_projection: bool,
    pub only_cross_attention: bool,
    pub upcast_attention: bool,
}

/// diffusers' `Transformer2DModel` on continuous inputs: group norm, proj_in, transformer
/// blocks over the h*w tokens, proj_out, plus the input.
#[derive(Debug, Clone)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    pub fn new(vb: VarBuilder, in_channels: usize, cfg: &Transformer2DConfig) -> Result<Self> {
        if cfg.heads == 0 || in_channels / cfg.heads == 0 {
            bail!("Transformer2DModel: {} attention heads do not fit {in_channels} channels", cfg.heads);
        }
        // diffusers: attention_head_dim = out_channels // num_attention_heads.
        let dim_head = in_channels / cfg.heads;
        let inner = cfg.heads * dim_head;
        let norm = group_norm(vb.pp("norm"), cfg.norm_num_groups, in_channels, 1e-6)?;
        let projection = |name: &str, i, o| -> Result<Projection> {
            Ok(if cfg.use_linear_projection {
                Projection::Linear(linear::token_linear(i, o, vb.pp(name))?)
            } else {
                Projection::Conv(conv(vb.pp(name), i, o, 1)?)
            })
        };
        let proj_in = projection("proj_in", in_channels, inner)?;
        let vb_blocks = vb.pp("transformer_blocks");
        let transformer_blocks = (0..cfg.num_layers)
            .map(|i| {
                BasicTransformerBlock::new(
                    vb_blocks.pp(i),
                    inner,
                    cfg.heads,
                    dim_head,
                    cfg.cross_attention_dim,
                    cfg.only_cross_attention,
                    cfg.upcast_attention,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let proj_out = projection("proj_out", inner, in_channels)?;
        Ok(Self { norm, proj_in, transformer_blocks, proj_out })
    }

    /// `xs`: [b, c, h, w]; `context`: the text, hidden states [b, seq, cross_attention_dim].
    pub fn forward(&self, xs: &Tensor, context: &Context) -> Result<Tensor> {
        crate::profile::scope("transformer", || self.forward_unprofiled(xs, context))
    }

    /// The attention layers that read the text context (cross-attention), in order.
    pub fn context_attentions_mut(&mut self) -> impl Iterator<Item = &mut Attention> {
        self.transformer_blocks.iter_mut().flat_map(BasicTransformerBlock::context_attentions_mut)
    }

    fn forward_unprofiled(&self, xs: &Tensor, context: &Context) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let mut hs = match &self.proj_in {
            Projection::Conv(p) => p.forward_normed_to_tokens(&self.norm, xs)?,
            Projection::Linear(p) => {
                let tokens = match self.norm.forward_tokens(None, xs)? {
                    Some(tokens) => tokens,
                    None => fused::to_tokens(&self.norm.forward(xs)?)?,
                };
                p.forward(&tokens)?
            }
        };
        for block in &self.transformer_blocks {
            hs = block.forward(&hs, context)?;
        }
        match &self.proj_out {
            Projection::Conv(p) => p.forward_tokens_residual(&hs, h, w, xs),
            Projection::Linear(p) => fused::from_tokens(&p.forward(&hs)?, h, w)? + xs,
        }
    }
}
