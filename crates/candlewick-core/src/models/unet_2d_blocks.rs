//! The UNet's and the VAE's blocks, after diffusers' `unet_2d_blocks.py`: DownBlock2D,
//! CrossAttnDownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D, CrossAttnUpBlock2D (UNet) and
//! DownEncoderBlock2D, UpDecoderBlock2D, UNetMidBlock2D (VAE).

use candle_core::{bail, Result, Tensor};
use candle_nn::VarBuilder;

use super::attention_processor::{Attention, AttentionConfig, Context};
use super::resnet::{Downsample2D, ResnetBlock2D, ResnetConfig, TimeEmbedding, Upsample2D};
use super::transformer_2d::{Transformer2DConfig, Transformer2DModel};
use crate::cuda::fused;

/// Settings of the transformers inside a cross-attention block.
#[derive(Debug, Clone)]
pub struct CrossAttnConfig {
    /// Transformer blocks per Transformer2DModel, one entry per resnet layer.
    pub transformer_layers: Vec<usize>,
    pub heads: usize,
    pub cross_attention_dim: usize,
    pub use_linear_projection: bool,
    pub only_cross_attention: bool,
    pub upcast_attention: bool,
}

fn resnets(
    vb: &VarBuilder,
    io: impl Iterator<Item = (usize, usize)>,
    cfg: &ResnetConfig,
) -> Result<Vec<ResnetBlock2D>> {
    let vb = vb.pp("resnets");
    io.enumerate().map(|(i, (c_in, c_out))| ResnetBlock2D::new(vb.pp(i), c_in, c_out, cfg)).collect()
}

fn transformers(
    vb: &VarBuilder,
    channels: usize,
    groups: usize,
    cfg: &CrossAttnConfig,
) -> Result<Vec<Transformer2DModel>> {
    let vb = vb.pp("attentions");
    cfg.transformer_layers
        .iter()
        .enumerate()
        .map(|(i, &num_layers)| {
            let t = Transformer2DConfig {
                num_layers,
                heads: cfg.heads,
                cross_attention_dim: cfg.cross_attention_dim,
                norm_num_groups: groups,
                use_linear_projection: cfg.use_linear_projection,
                only_cross_attention: cfg.only_cross_attention,
                upcast_attention: cfg.upcast_attention,
            };
            Transformer2DModel::new(vb.pp(i), channels, &t)
        })
        .collect()
}

fn downsampler(vb: &VarBuilder, add: bool, channels: usize, padding: usize) -> Result<Option<Downsample2D>> {
    if add {
        Ok(Some(Downsample2D::new(vb.pp("downsamplers").pp(0), channels, channels, padding)?))
    } else {
        Ok(None)
    }
}

fn upsampler(vb: &VarBuilder, add: bool, channels: usize) -> Result<Option<Upsample2D>> {
    if add {
        Ok(Some(Upsample2D::new(vb.pp("upsamplers").pp(0), channels, channels)?))
    } else {
        Ok(None)
    }
}

/// (in, out) channels of each resnet of a down block.
fn down_io(num_layers: usize, c_in: usize, c_out: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..num_layers).map(move |i| (if i == 0 { c_in } else { c_out }, c_out))
}

/// (in, out) channels of each resnet of a UNet up block: the previous output (or this block's
/// output) concatenated with a skip connection.
fn up_io(num_layers: usize, c_in: usize, prev: usize, c_out: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..num_layers).map(move |i| {
        let skip = if i + 1 == num_layers { c_in } else { c_out };
        let from = if i == 0 { prev } else { c_out };
        (from + skip, c_out)
    })
}

/// A UNet down block: resnets, optionally each followed by a transformer, then a downsampler.
/// Without transformers it is diffusers' `DownBlock2D`, with them `CrossAttnDownBlock2D`.
#[derive(Debug, Clone)]
pub struct DownBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

/// diffusers' `CrossAttnDownBlock2D` (a [`DownBlock2D`] with transformers).
pub type CrossAttnDownBlock2D = DownBlock2D;

impl DownBlock2D {
    /// The block's resnets, in the order its forward runs them.
    pub fn resnets_mut(&mut self) -> &mut [ResnetBlock2D] {
        &mut self.resnets
    }

    /// The block's transformers (the UNet numbers their cross-attention layers).
    pub fn transformers_mut(&mut self) -> &mut [Transformer2DModel] {
        &mut self.attentions
    }

    /// `cross`: None for `DownBlock2D`, Some for `CrossAttnDownBlock2D`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: VarBuilder,
        num_layers: usize,
        in_channels: usize,
        out_channels: usize,
        resnet: &ResnetConfig,
        cross: Option<&CrossAttnConfig>,
        add_downsample: bool,
        downsample_padding: usize,
    ) -> Result<Self> {
        let resnets = resnets(&vb, down_io(num_layers, in_channels, out_channels), resnet)?;
        let attentions = match cross {
            Some(c) => transformers(&vb, out_channels, resnet.groups, c)?,
            None => Vec::new(),
        };
        let downsampler = downsampler(&vb, add_downsample, out_channels, downsample_padding)?;
        Ok(Self { resnets, attentions, downsampler })
    }

    /// Returns the block's output and the skip connections it adds (one per resnet, plus the
    /// downsampled output).
    pub fn forward(&self, xs: &Tensor, temb: &TimeEmbedding, context: &Context) -> Result<(Tensor, Vec<Tensor>)> {
        let mut xs = xs.clone();
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            xs = resnet.forward(&xs, Some(temb))?;
            if let Some(attn) = self.attentions.get(i) {
                xs = attn.forward(&xs, context)?;
            }
            skips.push(xs.clone());
        }
        if let Some(down) = &self.downsampler {
            xs = down.forward(&xs)?;
            skips.push(xs.clone());
        }
        Ok((xs, skips))
    }
}

/// A UNet up block: for each resnet, concatenate a skip connection, run the resnet (and its
/// transformer), then upsample. Without transformers it is diffusers' `UpBlock2D`, with them
/// `CrossAttnUpBlock2D`.
#[derive(Debug, Clone)]
pub struct UpBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

/// diffusers' `CrossAttnUpBlock2D` (an [`UpBlock2D`] with transformers).
pub type CrossAttnUpBlock2D = UpBlock2D;

impl UpBlock2D {
    /// The block's resnets, in the order its forward runs them.
    pub fn resnets_mut(&mut self) -> &mut [ResnetBlock2D] {
        &mut self.resnets
    }

    /// The block's transformers (the UNet numbers their cross-attention layers).
    pub fn transformers_mut(&mut self) -> &mut [Transformer2DModel] {
        &mut self.attentions
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: VarBuilder,
        num_layers: usize,
        in_channels: usize,
        prev_output_channel: usize,
        out_channels: usize,
        resnet: &ResnetConfig,
        cross: Option<&CrossAttnConfig>,
        add_upsample: bool,
    ) -> Result<Self> {
        let resnets = resnets(&vb, up_io(num_layers, in_channels, prev_output_channel, out_channels), resnet)?;
        let attentions = match cross {
            Some(c) => transformers(&vb, out_channels, resnet.groups, c)?,
            None => Vec::new(),
        };
        let upsampler = upsampler(&vb, add_upsample, out_channels)?;
        Ok(Self { resnets, attentions, upsampler })
    }

    /// How many skip connections this block consumes.
    pub fn num_skips(&self) -> usize {
        self.resnets.len()
    }

    /// `skips`: this block's skip connections, oldest first (the last is used first).
    /// `upsample_size`: the size to upsample to (the next skip connection's), None for 2x.
    pub fn forward(
        &self,
        xs: &Tensor,
        skips: &[Tensor],
        temb: &TimeEmbedding,
        context: &Context,
        upsample_size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        if skips.len() != self.resnets.len() {
            bail!("up block: expected {} skip connections, got {}", self.resnets.len(), skips.len());
        }
        let mut xs = xs.clone();
        for (i, (resnet, skip)) in self.resnets.iter().zip(skips.iter().rev()).enumerate() {
            xs = match fused::cat_dim1(&xs, skip)? {
                Some(cat) => cat,
                None => Tensor::cat(&[&xs, skip], 1)?,
            };
            xs = resnet.forward(&xs, Some(temb))?;
            if let Some(attn) = self.attentions.get(i) {
                xs = attn.forward(&xs, context)?;
            }
        }
        match &self.upsampler {
            Some(up) => up.forward(&xs, upsample_size),
            None => Ok(xs),
        }
    }
}

/// diffusers' `UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet) per layer.
#[derive(Debug, Clone)]
pub struct UNetMidBlock2DCrossAttn {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl UNetMidBlock2DCrossAttn {
    /// The block's resnets, in the order its forward runs them.
    pub fn resnets_mut(&mut self) -> &mut [ResnetBlock2D] {
        &mut self.resnets
    }

    /// The block's transformers (the UNet numbers their cross-attention layers).
    pub fn transformers_mut(&mut self) -> &mut [Transformer2DModel] {
        &mut self.attentions
    }

    pub fn new(vb: VarBuilder, channels: usize, resnet: &ResnetConfig, cross: &CrossAttnConfig) -> Result<Self> {
        let n = cross.transformer_layers.len();
        let resnets = resnets(&vb, (0..=n).map(|_| (channels, channels)), resnet)?;
        let attentions = transformers(&vb, channels, resnet.groups, cross)?;
        Ok(Self { resnets, attentions })
    }

    pub fn forward(&self, xs: &Tensor, temb: &TimeEmbedding, context: &Context) -> Result<Tensor> {
        let Some((first, rest)) = self.resnets.split_first() else { bail!("mid block has no resnets") };
        let mut xs = first.forward(xs, Some(temb))?;
        for (attn, resnet) in self.attentions.iter().zip(rest) {
            xs = attn.forward(&xs, context)?;
            xs = resnet.forward(&xs, Some(temb))?;
        }
        Ok(xs)
    }
}

/// diffusers' `UNetMidBlock2D`: resnet, then (spatial self-attention, resnet) per layer. The
/// VAE uses one layer with attention; the UNet's `UNetMidBlock2D` mid block has none.
#[derive(Debug, Clone)]
pub struct UNetMidBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Attention>,
}

impl UNetMidBlock2D {
    /// The block's resnets, in the order its forward runs them.
    pub fn resnets_mut(&mut self) -> &mut [ResnetBlock2D] {
        &mut self.resnets
    }

    /// `attention_head_dim`: Some to add attention layers (heads = channels / head dim).
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        resnet: &ResnetConfig,
        num_layers: usize,
        attention_head_dim: Option<usize>,
    ) -> Result<Self> {
        let resnets = resnets(&vb, (0..=num_layers).map(|_| (channels, channels)), resnet)?;
        let mut attentions = Vec::new();
        if let Some(head_dim) = attention_head_dim {
            if head_dim == 0 {
                bail!("UNetMidBlock2D: attention head dim must be positive");
            }
            let cfg = AttentionConfig {
                query_dim: channels,
                cross_attention_dim: None,
                heads: channels / head_dim,
                dim_head: head_dim,
                bias: true,
                group_norm: Some((resnet.groups, resnet.eps)),
                residual_connection: true,
                rescale_output_factor: resnet.output_scale_factor,
                upcast_attention: false,
            };
            let vb = vb.pp("attentions");
            for i in 0..num_layers {
                attentions.push(Attention::new(vb.pp(i), &cfg)?);
            }
        }
        Ok(Self { resnets, attentions })
    }

    pub fn forward(&self, xs: &Tensor, temb: Option<&TimeEmbedding>) -> Result<Tensor> {
        let Some((first, rest)) = self.resnets.split_first() else { bail!("mid block has no resnets") };
        let mut xs = first.forward(xs, temb)?;
        for (i, resnet) in rest.iter().enumerate() {
            if let Some(attn) = self.attentions.get(i) {
                xs = attn.forward_spatial(&xs)?;
            }
            xs = resnet.forward(&xs, temb)?;
        }
        Ok(xs)
    }
}

/// diffusers' `DownEncoderBlock2D`: resnets without time embedding, then a downsampler.
#[derive(Debug, Clone)]
pub struct DownEncoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
}

impl DownEncoderBlock2D {
    pub fn new(
        vb: VarBuilder,
        num_layers: usize,
        in_channels: usize,
        out_channels: usize,
        resnet: &ResnetConfig,
        add_downsample: bool,
        downsample_padding: usize,
    ) -> Result<Self> {
        let resnets = resnets(&vb, down_io(num_layers, in_channels, out_channels), resnet)?;
        let downsampler = downsampler(&vb, add_downsample, out_channels, downsample_padding)?;
        Ok(Self { resnets, downsampler })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = xs.clone();
        for resnet in &self.resnets {
            xs = resnet.forward(&xs, None)?;
        }
        match &self.downsampler {
            Some(down) => down.forward(&xs),
            None => Ok(xs),
        }
    }
}

/// diffusers' `UpDecoderBlock2D`: resnets without time embedding, then an upsampler.
#[derive(Debug, Clone)]
pub struct UpDecoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

impl UpDecoderBlock2D {
    pub fn new(
        vb: VarBuilder,
        num_layers: usize,
        in_channels: usize,
        out_channels: usize,
        resnet: &ResnetConfig,
        add_upsample: bool,
    ) -> Result<Self> {
        let resnets = resnets(&vb, down_io(num_layers, in_channels, out_channels), resnet)?;
        let upsampler = upsampler(&vb, add_upsample, out_channels)?;
        Ok(Self { resnets, upsampler })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = xs.clone();
        for resnet in &self.resnets {
            xs = resnet.forward(&xs, None)?;
        }
        match &self.upsampler {
            Some(up) => up.forward(&xs, None),
            None => Ok(xs),
        }
    }
}
