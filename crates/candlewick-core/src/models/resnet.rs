//! Residual blocks and resamplers of the UNet and the VAE, after diffusers' `resnet.py`,
//! `downsampling.py` and `upsampling.py`: `ResnetBlock2D`, `Downsample2D`, `Upsample2D`.

use candle_core::{bail, Result, Tensor};
use candle_nn::{Module, VarBuilder};

use super::activations::Activation;
use super::conv::Conv2d;
use super::linear::{self, Linear};

/// How a resnet block mixes in the time embedding (diffusers' `time_embedding_norm`,
/// from the UNet's `resnet_time_scale_shift`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeEmbeddingNorm {
    /// Add the projected embedding before `norm2`.
    Default,
    /// Project to 2x channels and apply as scale and shift after `norm2`.
    ScaleShift,
}

impl TimeEmbeddingNorm {
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        match value {
            "default" => Ok(Self::Default),
            "scale_shift" => Ok(Self::ScaleShift),
            _ => bail!("unsupported {field} {value:?} (expected \"default\" or \"scale_shift\")"),
        }
    }
}

/// The settings every resnet of a block shares.
#[derive(Debug, Clone, Copy)]
pub struct ResnetConfig {
    /// Channels of the time embedding, or None for the VAE (no `time_emb_proj`).
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    pub act: Activation,
    pub output_scale_factor: f64,
    pub time_embedding_norm: TimeEmbeddingNorm,
}

/// A 3x3 (or kxk) convolution with "same" padding, stride 1.
pub(crate) fn conv(vb: VarBuilder, c_in: usize, c_out: usize, k: usize) -> Result<Conv2d> {
    Conv2d::new(vb, c_in, c_out, k, k.saturating_sub(1) / 2, 1)
}

pub(crate) use super::norm::{group_norm, GroupNorm};

/// diffusers' `ResnetBlock2D`: norm1, act, conv1, (+ time embedding), norm2, act, conv2,
/// plus the input (through a 1x1 `conv_shortcut` when the channel count changes),
/// divided by `output_scale_factor`.
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    /// Where this block's projection starts in [`TimeEmbedding::projected`], once stacked.
    time_columns: Option<usize>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    /// conv_shortcut's bias is in conv2's (CUDA f16): the shortcut then adds its product to
    /// conv2's output, the two biases included ([`Conv2d::forward_unbiased_plus`]).
    shortcut_bias_in_conv2: bool,
    act: Activation,
    output_scale_factor: f64,
    time_embedding_norm: TimeEmbeddingNorm,
}

impl ResnetBlock2D {
    pub fn new(vb: VarBuilder, in_channels: usize, out_channels: usize, cfg: &ResnetConfig) -> Result<Self> {
        let norm1 = group_norm(vb.pp("norm1"), cfg.groups, in_channels, cfg.eps)?;
        let conv1 = conv(vb.pp("conv1"), in_channels, out_channels, 3)?;
        let time_emb_proj = match cfg.temb_channels {
            None => None,
            Some(t) => {
                let out = match cfg.time_embedding_norm {
                    TimeEmbeddingNorm::Default => out_channels,
                    TimeEmbeddingNorm::ScaleShift => 2 * out_channels,
                };
                Some(linear::linear(t, out, vb.pp("time_emb_proj"))?)
            }
        };
        let norm2 = group_norm(vb.pp("norm2"), cfg.groups, out_channels, cfg.eps)?;
        let mut conv2 = conv(vb.pp("conv2"), out_channels, out_channels, 3)?;
        let conv_shortcut = if in_channels != out_channels {
            Some(conv(vb.pp("conv_shortcut"), in_channels, out_channels, 1)?)
        } else {
            None
        };
        // On CUDA in f16, the shortcut becomes one product that adds conv2's output (bias
        // folded in). Elsewhere the block keeps diffusers' order of operations exactly.
        let shortcut_bias_in_conv2 = conv_shortcut.is_some()
            && cfg.output_scale_factor == 1.0
            && vb.device().is_cuda()
            && vb.dtype() == candle_core::DType::F16;
        if let (true, Some(shortcut)) = (shortcut_bias_in_conv2, &conv_shortcut) {
            conv2.add_to_bias(shortcut.bias())?;
        }
        Ok(Self {
            norm1,
            conv1,
            time_emb_proj,
            time_columns: None,
            norm2,
            conv2,
            conv_shortcut,
            shortcut_bias_in_conv2,
            act: cfg.act,
            output_scale_factor: cfg.output_scale_factor,
            time_embedding_norm: cfg.time_embedding_norm,
        })
    }

    /// `xs`: [b, c, h, w]; `temb`: the time embedding after the block's activation (the UNet
    /// applies it once for all its resnets), and perhaps every resnet's projection of it
    /// ([`TimeEmbedding`]); ignored when the block has no `time_emb_proj`.
    pub fn forward(&self, xs: &Tensor, temb: Option<&TimeEmbedding>) -> Result<Tensor> {
        crate::profile::scope("resnet", || self.forward_unprofiled(xs, temb))
    }

    /// The block's time projection, for the UNet to stack with the other blocks' (then
    /// [`Self::use_stacked_time_projection`]).
    pub fn time_emb_proj(&self) -> Option<&Linear> {
        self.time_emb_proj.as_ref()
    }

    /// Replace the time projection by `proj` (views of the stacked weights, for the eager path)
    /// and read columns `first_column..` of [`TimeEmbedding::projected`] when it is given.
    pub fn use_stacked_time_projection(&mut self, proj: Linear, first_column: usize) {
        self.time_emb_proj = Some(proj);
        self.time_columns = Some(first_column);
    }

    fn project_time(&self, proj: &Linear, t: &TimeEmbedding) -> Result<Tensor> {
        match (&t.projected, self.time_columns) {
            (Some(all), Some(first)) => all.narrow(1, first, proj.dims().0),
            _ => proj.forward(&t.activated),
        }
    }

    fn forward_unprofiled(&self, xs: &Tensor, temb: Option<&TimeEmbedding>) -> Result<Tensor> {
        let temb = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(t)) => Some(self.project_time(proj, t)?),
            (Some(_), None) => bail!("ResnetBlock2D: this block needs a time embedding"),
            (None, _) => None,
        };
        let h = self.first_half(xs, temb.as_ref())?;
        if let (true, Some(shortcut)) = (self.shortcut_bias_in_conv2, &self.conv_shortcut) {
            // norm2, act, conv2 (both biases), then the shortcut's product adds itself to that.
            let h = self.second_half(&h, temb.as_ref(), None)?;
            return shortcut.forward_unbiased_plus(xs, &h);
        }
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(xs)?,
            None => xs.clone(),
        };
        // norm2, act, conv2, + shortcut (in conv2's tail on CUDA), / output_scale_factor.
        let residual = (self.output_scale_factor == 1.0).then_some(&shortcut);
        let h = self.second_half(&h, temb.as_ref(), residual)?;
        match residual {
            Some(_) => Ok(h),
            None => (shortcut + h)? / self.output_scale_factor,
        }
    }

    /// norm1, act, conv1, plus the time embedding (`Default`: in conv1's tail on CUDA). On CUDA
    /// in f16 this goes on through norm2 and act: norm2 reads conv1's raw channels-last output
    /// and applies its tail itself, and writes conv2's channels-last input.
    fn first_half(&self, xs: &Tensor, temb: Option<&Tensor>) -> Result<HalfWay> {
        let per_sample = match self.time_embedding_norm {
            TimeEmbeddingNorm::Default => temb,
            TimeEmbeddingNorm::ScaleShift => None,
        };
        if self.time_embedding_norm == TimeEmbeddingNorm::Default {
            if let Some(raw) = self.conv1.forward_normed_raw(&self.norm1, self.act, xs)? {
                let bias = self.conv1.bias();
                if let Some(tokens) = self.norm2.forward_tokens_of_conv_tail(self.act, &raw, bias, per_sample)? {
                    let (b, p, q, c) = raw.dims4()?;
                    return Ok(HalfWay::Conv2Input(tokens.reshape((b, p, q, c))?));
                }
                return Ok(HalfWay::Conv1Output(self.conv1.tail_channels_last(&raw, per_sample, None)?));
            }
        }
        Ok(HalfWay::Conv1Output(self.conv1.forward_normed(&self.norm1, self.act, xs, per_sample, None)?))
    }

    /// norm2 (then the time embedding's scale and shift with `ScaleShift`), act, conv2, plus
    /// `residual` in conv2's tail.
    fn second_half(&self, h: &HalfWay, temb: Option<&Tensor>, residual: Option<&Tensor>) -> Result<Tensor> {
        let h = match h {
            HalfWay::Conv1Output(h) => h,
            HalfWay::Conv2Input(nhwc) => {
                if let Some(out) =
                    crate::profile::scope("conv", || self.conv2.conv_channels_last(nhwc, None, residual))?
                {
                    return Ok(out);
                }
                return self.conv2.forward_fused(&nhwc.permute((0, 3, 1, 2))?.contiguous()?, None, residual);
            }
        };
        match (self.time_embedding_norm, temb) {
            (TimeEmbeddingNorm::ScaleShift, Some(t)) => {
                let chunks = t.unsqueeze(2)?.unsqueeze(3)?.chunk(2, 1)?;
                let h = self.norm2.forward(h)?;
                let h = self.act.forward(&h.broadcast_mul(&(&chunks[0] + 1.0)?)?.broadcast_add(&chunks[1])?)?;
                self.conv2.forward_fused(&h, None, residual)
            }
            _ => self.conv2.forward_normed(&self.norm2, self.act, h, None, residual),
        }
    }
}

/// Where a resnet block is between its halves: conv1's output (NCHW), or already conv2's input
/// (norm2 and act applied, channels-last [b, h, w, c]) when norm2 read conv1's raw output.
enum HalfWay {
    Conv1Output(Tensor),
    Conv2Input(Tensor),
}

/// diffusers' `Downsample2D` with `use_conv=True`: a stride-2 3x3 convolution. With
/// `padding == 0` (the VAE encoder) the input is first padded by one on the right and bottom.
#[derive(Debug, Clone)]
pub struct Downsample2D {
    conv: Conv2d,
    pad_right_bottom: bool,
}

impl Downsample2D {
    pub fn new(vb: VarBuilder, channels: usize, out_channels: usize, padding: usize) -> Result<Self> {
        let conv = Conv2d::new(vb.pp("conv"), channels, out_channels, 3, padding, 2)?;
        Ok(Self { conv, pad_right_bottom: padding == 0 })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if self.pad_right_bottom {
            let xs = xs.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
            self.conv.forward(&xs)
        } else {
            self.conv.forward(xs)
        }
    }
}

/// What a resnet receives of the time embedding: `act(temb)` [b or 1, temb_channels] and, on
/// CUDA, every resnet's `time_emb_proj` of it from one matrix product, [b or 1, the sum of their
/// output channels] (`UNet2DConditionModel` stacks their weights at load): a resnet then reads its
/// own columns of `projected` instead of running a small product of its own.
pub struct TimeEmbedding {
    pub activated: Tensor,
    pub projected: Option<Tensor>,
}

/// diffusers' `Upsample2D` with `use_conv=True`: nearest-neighbour upsampling (2x, or to the
/// skip connection's size as diffusers' `forward_upsample_size` does), then a 3x3 convolution.
#[derive(Debug, Clone)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(vb: VarBuilder, channels: usize, out_channels: usize) -> Result<Self> {
        Ok(Self { conv: conv(vb.pp("conv"), channels, out_channels, 3)? })
    }

    /// `size`: the (height, width) to reach; None doubles both.
    pub fn forward(&self, xs: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        if (th, tw) == (2 * h, 2 * w) {
            if let Some(out) = self.conv.forward_upsampled_2x(xs)? {
                return Ok(out);
            }
        }
        let upsampled = crate::profile::scope("upsample_nearest", || upsample_nearest(xs, th, tw))?;
        self.conv.forward(&upsampled)
    }
}

/// PyTorch's `F.interpolate(mode="nearest")` on [b, c, h, w]: source index floor(i * in / out).
/// The 2x case is a broadcast (one copy); other sizes gather rows and columns.
pub fn upsample_nearest(xs: &Tensor, th: usize, tw: usize) -> Result<Tensor> {
    let (b, c, h, w) = xs.dims4()?;
    if th == 2 * h && tw == 2 * w {
        return xs.reshape((b, c, h, 1, w, 1))?.broadcast_as((b, c, h, 2, w, 2))?.reshape((b, c, th, tw));
    }
    if h == 0 || w == 0 || th == 0 || tw == 0 {
        bail!("upsample: cannot resize {h}x{w} to {th}x{tw}");
    }
    let index = |n_in: usize, n_out: usize| -> Result<Tensor> {
        let scale = n_in as f64 / n_out as f64;
        let idx: Vec<u32> = (0..n_out).map(|i| usize::min(n_in - 1, (i as f64 * scale) as usize) as u32).collect();
        Tensor::from_vec(idx, n_out, xs.device())
    };
    let xs = xs.index_select(&index(h, th)?, 2)?;
    xs.index_select(&index(w, tw)?, 3)
}
