//! diffusers' `AutoencoderKL` (`autoencoder_kl.py`, `vae.py`): the `Encoder` (image to the
//! parameters of a diagonal Gaussian over latents), the `Decoder` (latents to image), and the
//! 1x1 `quant_conv` / `post_quant_conv` between them and the latent space.

use super::conv::Conv2d;
use candle_core::{bail, Result, Tensor};
use candle_nn::{Module, VarBuilder};
use serde::Deserialize;

use super::activations::Activation;
use super::norm::{group_norm, GroupNorm};
use super::resnet::{conv, ResnetConfig, TimeEmbeddingNorm};
use super::unet_2d_blocks::{DownEncoderBlock2D, UNetMidBlock2D, UpDecoderBlock2D};

/// vae/config.json, with `AutoencoderKL.__init__`'s defaults for missing keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AutoencoderKLConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: String,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    /// Latents are multiplied by this after encoding and divided by it before decoding.
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    pub force_upcast: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
    /// The images it was trained on: the tiled decode's tile size (`tile_sample_min_size`).
    pub sample_size: SampleSize,
}

/// config.json's `sample_size`: one side, or [height, width] (diffusers then uses the first).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(usize),
    Sides(Vec<usize>),
}

impl SampleSize {
    /// The side diffusers tiles with.
    pub fn first(&self) -> usize {
        match self {
            SampleSize::Square(n) => *n,
            SampleSize::Sides(sides) => sides.first().copied().unwrap_or(0),
        }
    }
}

impl Default for AutoencoderKLConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            sample_size: SampleSize::Square(32),
        }
    }
}

impl AutoencoderKLConfig {
    /// Pixels per latent along each side: 2^(len(block_out_channels) - 1), or usize::MAX for a
    /// config with more than 64 blocks (whose weights cannot load anyway), instead of overflowing.
    pub fn scale_factor(&self) -> usize {
        let shift = self.block_out_channels.len().saturating_sub(1);
        u32::try_from(shift).ok().and_then(|s| 1usize.checked_shl(s)).unwrap_or(usize::MAX)
    }

    fn check(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            bail!("block_out_channels is empty");
        }
        for (field, types, want) in [
            ("down_block_types", &self.down_block_types, "DownEncoderBlock2D"),
            ("up_block_types", &self.up_block_types, "UpDecoderBlock2D"),
        ] {
            if types.len() != n {
                bail!("{field} has {} entries but block_out_channels has {n}", types.len());
            }
            if let Some((i, t)) = types.iter().enumerate().find(|(_, t)| t.as_str() != want) {
                bail!("unsupported {field}[{i}] {t:?}: candlewick's VAE supports {want:?}");
            }
        }
        Ok(())
    }

    fn resnet(&self) -> Result<ResnetConfig> {
        Ok(ResnetConfig {
            temb_channels: None,
            groups: self.norm_num_groups,
            eps: 1e-6,
            act: Activation::parse("act_fn", &self.act_fn)?,
            output_scale_factor: 1.0,
            time_embedding_norm: TimeEmbeddingNorm::Default,
        })
    }
}

/// The mean and log-variance (clamped to [-30, 20]) of the latent distribution.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    pub mean: Tensor,
    pub logvar: Tensor,
}

impl DiagonalGaussian {
    /// mean + exp(logvar / 2) * noise, as diffusers' `latent_dist.sample()` with `noise` drawn
    /// from a standard normal of the mean's shape.
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor> {
        let std = (&self.logvar * 0.5)?.exp()?;
        self.mean.broadcast_add(&std.broadcast_mul(&noise.to_dtype(self.mean.dtype())?)?)
    }
}

/// diffusers' VAE `Encoder` (with `double_z`).
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownEncoderBlock2D>,
    mid_block: UNetMidBlock2D,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    pub fn new(vb: VarBuilder, cfg: &AutoencoderKLConfig) -> Result<Self> {
        cfg.check()?;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let resnet = cfg.resnet()?;
        let conv_in = conv(vb.pp("conv_in"), cfg.in_channels, ch[0], 3)?;
        let vb_down = vb.pp("down_blocks");
        let down_blocks = (0..n)
            .map(|i| {
                let c_in = if i == 0 { ch[0] } else { ch[i - 1] };
                DownEncoderBlock2D::new(vb_down.pp(i), cfg.layers_per_block, c_in, ch[i], &resnet, i + 1 < n, 0)
            })
            .collect::<Result<Vec<_>>>()?;
        let attn = cfg.mid_block_add_attention.then_some(ch[n - 1]);
        let mid_block = UNetMidBlock2D::new(vb.pp("mid_block"), ch[n - 1], &resnet, 1, attn)?;
        let conv_norm_out = group_norm(vb.pp("conv_norm_out"), cfg.norm_num_groups, ch[n - 1], 1e-6)?;
        let conv_out = conv(vb.pp("conv_out"), ch[n - 1], 2 * cfg.latent_channels, 3)?;
        Ok(Self { conv_in, down_blocks, mid_block, conv_norm_out, conv_out })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.conv_in.forward(xs)?;
        for block in &self.down_blocks {
            xs = block.forward(&xs)?;
        }
        let xs = self.mid_block.forward(&xs, None)?;
        self.conv_out.forward(&self.conv_norm_out.forward_then(Activation::Silu, &xs)?)
    }
}

/// diffusers' VAE `Decoder` (group norms).
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: UNetMidBlock2D,
    up_blocks: Vec<UpDecoderBlock2D>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn new(vb: VarBuilder, cfg: &AutoencoderKLConfig) -> Result<Self> {
        cfg.check()?;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let resnet = cfg.resnet()?;
        let conv_in = conv(vb.pp("conv_in"), cfg.latent_channels, ch[n - 1], 3)?;
        let attn = cfg.mid_block_add_attention.then_some(ch[n - 1]);
        let mid_block = UNetMidBlock2D::new(vb.pp("mid_block"), ch[n - 1], &resnet, 1, attn)?;
        let vb_up = vb.pp("up_blocks");
        let up_blocks = (0..n)
            .map(|i| {
                let prev = ch[n - i.max(1)];
                let out = ch[n - 1 - i];
                UpDecoderBlock2D::new(vb_up.pp(i), cfg.layers_per_block + 1, prev, out, &resnet, i + 1 < n)
            })
            .collect::<Result<Vec<_>>>()?;
        let conv_norm_out = group_norm(vb.pp("conv_norm_out"), cfg.norm_num_groups, ch[0], 1e-6)?;
        let conv_out = conv(vb.pp("conv_out"), ch[0], cfg.out_channels, 3)?;
        Ok(Self { conv_in, mid_block, up_blocks, conv_norm_out, conv_out })
    }

    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let xs = self.conv_in.forward(z)?;
        let mut xs = self.mid_block.forward(&xs, None)?;
        for block in &self.up_blocks {
            xs = block.forward(&xs)?;
        }
        self.conv_out.forward(&self.conv_norm_out.forward_then(Activation::Silu, &xs)?)
    }
}

/// diffusers' `AutoencoderKL`.
#[derive(Debug, Clone)]
pub struct AutoencoderKL {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    latent_channels: usize,
}

impl AutoencoderKL {
    pub fn new(vb: VarBuilder, cfg: &AutoencoderKLConfig) -> Result<Self> {
        let lc = cfg.latent_channels;
        let encoder = Encoder::new(vb.pp("encoder"), cfg)?;
        let decoder = Decoder::new(vb.pp("decoder"), cfg)?;
        let quant_conv = if cfg.use_quant_conv { Some(conv(vb.pp("quant_conv"), 2 * lc, 2 * lc, 1)?) } else { None };
        let post_quant_conv =
            if cfg.use_post_quant_conv { Some(conv(vb.pp("post_quant_conv"), lc, lc, 1)?) } else { None };
        Ok(Self { encoder, decoder, quant_conv, post_quant_conv, latent_channels: lc })
    }

    /// Image [b, in_channels, H, W] (values in [-1, 1]) to the latent distribution
    /// [b, latent_channels, H/f, W/f] (unscaled: multiply samples by `scaling_factor`).
    pub fn encode(&self, xs: &Tensor) -> Result<DiagonalGaussian> {
        let h = self.encoder.forward(xs)?;
        let moments = match &self.quant_conv {
            Some(c) => c.forward(&h)?,
            None => h,
        };
        let lc = self.latent_channels;
        let mean = moments.narrow(1, 0, lc)?;
        let logvar = moments.narrow(1, lc, lc)?.clamp(-30f32, 20f32)?;
        Ok(DiagonalGaussian { mean, logvar })
    }

    /// Latents [b, latent_channels, h, w] (already divided by `scaling_factor`) to an image
    /// [b, out_channels, h*f, w*f] in about [-1, 1].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let (_, c, _, _) = z.dims4()?;
        if c != self.latent_channels {
            bail!("VAE decode: latents have {c} channels but the VAE expects {}", self.latent_channels);
        }
        let z = match &self.post_quant_conv {
            Some(c) => c.forward(z)?,
            None => z.clone(),
        };
        self.decoder.forward(&z)
    }
}
