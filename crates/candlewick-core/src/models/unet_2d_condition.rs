//! diffusers' `UNet2DConditionModel` (Stable Diffusion 1.x/2.x): time embedding, conv_in, down
//! blocks, mid block, up blocks fed by skip connections, conv_norm_out, conv_out.
//!
//! The config is read from the model folder's unet/config.json with diffusers' defaults;
//! what this UNet cannot run (SDXL's addition embeddings, class embeddings, other block types)
//! is refused by name when the model is built.

use super::conv::Conv2d;
use candle_core::{bail, Result, Tensor};
use candle_nn::{Module, VarBuilder};
use serde::Deserialize;

use super::activations::Activation;
use super::attention::{Context, Transformer2DModel};
use super::embeddings::{TimestepEmbedding, Timesteps};
use super::linear::Linear;
use super::norm::{group_norm, GroupNorm};
use super::resnet::{conv, ResnetBlock2D, ResnetConfig, TimeEmbedding, TimeEmbeddingNorm};
use super::unet_2d_blocks::{CrossAttnConfig, DownBlock2D, UNetMidBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D};
use crate::cuda::cublaslt;

/// A config value diffusers accepts either once for all blocks or once per block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    // Lists first, so that a nested `PerBlock<PerBlock<_>>` reads `[1, 2]` as one per block.
    Each(Vec<T>),
    One(T),
}

impl<T: Clone + std::fmt::Debug> PerBlock<T> {
    /// One value per block; a list must have exactly `n` entries.
    pub fn per_block(&self, n: usize, field: &str) -> Result<Vec<T>> {
        match self {
            Self::One(v) => Ok(vec![v.clone(); n]),
            Self::Each(v) if v.len() == n => Ok(v.clone()),
            Self::Each(v) => bail!("{field} has {} entries ({v:?}) but {n} are needed", v.len()),
        }
    }
}

/// unet/config.json, with `UNet2DConditionModel.__init__`'s defaults for missing keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UNet2DConditionConfig {
    /// Latent height and width the model was trained at (required by the pipeline).
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    pub only_cross_attention: PerBlock<bool>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: PerBlock<usize>,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub act_fn: String,
    pub norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    pub cross_attention_dim: PerBlock<usize>,
    /// An int, one per down block, or one list per down block (transformers per resnet).
    pub transformer_layers_per_block: PerBlock<PerBlock<usize>>,
    pub reverse_transformer_layers_per_block: Option<Vec<PerBlock<usize>>>,
    /// For SD 1.x/2.x configs this is really the number of heads (diffusers' naming quirk).
    pub attention_head_dim: PerBlock<usize>,
    /// The number of heads; when absent, `attention_head_dim` is used as diffusers does.
    pub num_attention_heads: Option<PerBlock<usize>>,
    pub dual_cross_attention: bool,
    pub use_linear_projection: bool,
    /// In f16, compute attention scores in f32 (the softmax always runs in f32).
    pub upcast_attention: bool,
    pub resnet_time_scale_shift: String,
    pub time_embedding_type: String,
    pub time_embedding_dim: Option<usize>,
    pub time_embedding_act_fn: Option<String>,
    pub timestep_post_act: Option<String>,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
    pub class_embed_type: Option<String>,
    pub num_class_embeds: Option<usize>,
    pub addition_embed_type: Option<String>,
    pub encoder_hid_dim: Option<usize>,
    pub encoder_hid_dim_type: Option<String>,
    pub attention_type: String,
}

impl Default for UNet2DConditionConfig {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Self {
            sample_size: 0,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: s(&[
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: s(&["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]),
            only_cross_attention: PerBlock::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: "silu".into(),
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::One(1280),
            transformer_layers_per_block: PerBlock::One(PerBlock::One(1)),
            reverse_transformer_layers_per_block: None,
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            dual_cross_attention: false,
            use_linear_projection: false,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            time_embedding_type: "positional".into(),
            time_embedding_dim: None,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            class_embed_type: None,
            num_class_embeds: None,
            addition_embed_type: None,
            encoder_hid_dim: None,
            encoder_hid_dim_type: None,
            attention_type: "default".into(),
        }
    }
}

/// Whether a block type name (after diffusers' "UNetRes" prefix strip) has cross-attention.
fn block_kind(field: &str, i: usize, name: &str, plain: &str, cross: &str) -> Result<bool> {
    let name = name.strip_prefix("UNetRes").unwrap_or(name);
    if name == plain {
        Ok(false)
    } else if name == cross {
        Ok(true)
    } else {
        bail!("unsupported {field}[{i}] {name:?}: candlewick's UNet supports {plain:?} and {cross:?}")
    }
}

impl UNet2DConditionConfig {
    /// Refuse what this UNet does not implement, naming the option and value.
    fn check_supported(&self) -> Result<()> {
        let named = |v: &Option<String>| v.as_ref().map(|v| format!("{v:?}"));
        for (field, value) in [
            ("class_embed_type", named(&self.class_embed_type)),
            ("addition_embed_type", named(&self.addition_embed_type)),
            ("encoder_hid_dim_type", named(&self.encoder_hid_dim_type)),
            ("num_class_embeds", self.num_class_embeds.map(|n| n.to_string())),
            ("encoder_hid_dim", self.encoder_hid_dim.map(|n| n.to_string())),
        ] {
            if let Some(v) = value {
                bail!("unsupported {field} {v}: candlewick's UNet has no {field} (SDXL and class-conditioned UNets are not supported)");
            }
        }
        if self.dual_cross_attention {
            bail!("unsupported dual_cross_attention true (DualTransformer2DModel is not supported)");
        }
        if self.time_embedding_type != "positional" {
            bail!("unsupported time_embedding_type {:?} (expected \"positional\")", self.time_embedding_type);
        }
        if self.attention_type != "default" {
            bail!("unsupported attention_type {:?} (expected \"default\")", self.attention_type);
        }
        let n = self.down_block_types.len();
        if n == 0 || self.up_block_types.len() != n || self.block_out_channels.len() != n {
            bail!(
                "down_block_types ({n}), up_block_types ({}) and block_out_channels ({}) must have the same, non-zero length",
                self.up_block_types.len(),
                self.block_out_channels.len()
            );
        }
        Ok(())
    }
}

/// diffusers' `UNet2DConditionModel`.
#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    time_embed_act: Option<Activation>,
    /// The resnets' activation, applied to the time embedding once for all of them.
    resnet_act: Activation,
    /// Every resnet's `time_emb_proj` stacked into one (its weights' rows are the resnets'
    /// weights, which keep views of them): on CUDA one matrix product instead of one a resnet.
    time_projections: Option<Linear>,
    /// The cross-attention layers' key and value projections (the layers' own weights), in the
    /// order of [`Context::keys_values`].
    context_projections: Vec<Linear>,
    down_blocks: Vec<DownBlock2D>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock2D>,
    conv_norm_out: GroupNorm,
    conv_act: Activation,
    conv_out: Conv2d,
    center_input_sample: bool,
}

#[derive(Debug, Clone)]
enum MidBlock {
    CrossAttn(UNetMidBlock2DCrossAttn),
    Plain(UNetMidBlock2D),
}

/// Stacks the resnets' time projections (weights [c_i, temb] and biases [c_i]) into one and
/// gives each resnet views of its rows and its first column; None when there are none (or
/// one has no bias).
fn stack_time_projections(mut resnets: Vec<&mut ResnetBlock2D>) -> Result<Option<Linear>> {
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    for resnet in &resnets {
        let Some(proj) = resnet.time_emb_proj() else { continue };
        let Some(bias) = proj.bias() else { return Ok(None) };
        weights.push(proj.weight().clone());
        biases.push(bias.clone());
    }
    if weights.is_empty() {
        return Ok(None);
    }
    let (weight, bias) = (Tensor::cat(&weights, 0)?, Tensor::cat(&biases, 0)?);
    let mut first = 0;
    for resnet in resnets.iter_mut().filter(|r| r.time_emb_proj().is_some()) {
        let rows = resnet.time_emb_proj().map(|p| p.weight().dim(0)).transpose()?.unwrap_or(0);
        let view = Linear::new(weight.narrow(0, first, rows)?, Some(bias.narrow(0, first, rows)?));
        resnet.use_stacked_time_projection(view, first);
        first += rows;
    }
    Ok(Some(Linear::new(weight, Some(bias))))
}

impl UNet2DConditionModel {
    pub fn new(vb: VarBuilder, cfg: &UNet2DConditionConfig) -> Result<Self> {
        cfg.check_supported()?;
        let n = cfg.down_block_types.len();
        let channels = &cfg.block_out_channels;
        let Some(groups) = cfg.norm_num_groups else {
            bail!("unsupported norm_num_groups null: the UNet's resnets need group norms")
        };
        let act = Activation::parse("act_fn", &cfg.act_fn)?;
        let layers = cfg.layers_per_block.per_block(n, "layers_per_block")?;
        let cross_dims = cfg.cross_attention_dim.per_block(n, "cross_attention_dim")?;
        let only_cross = cfg.only_cross_attention.per_block(n, "only_cross_attention")?;
        let heads = match &cfg.num_attention_heads {
            Some(h) => h.per_block(n, "num_attention_heads")?,
            None => cfg.attention_head_dim.per_block(n, "attention_head_dim")?,
        };
        let transformer_layers = cfg.transformer_layers_per_block.per_block(n, "transformer_layers_per_block")?;
        let time_embed_dim = cfg.time_embedding_dim.unwrap_or(channels[0] * 4);
        let resnet = ResnetConfig {
            temb_channels: Some(time_embed_dim),
            groups,
            eps: cfg.norm_eps,
            act,
            output_scale_factor: 1.0,
            time_embedding_norm: TimeEmbeddingNorm::parse("resnet_time_scale_shift", &cfg.resnet_time_scale_shift)?,
        };
        let cross = |i: usize, field: &str, t: &PerBlock<usize>, num_layers: usize| -> Result<CrossAttnConfig> {
            Ok(CrossAttnConfig {
                transformer_layers: t.per_block(num_layers, field)?,
                heads: heads[i],
                cross_attention_dim: cross_dims[i],
                use_linear_projection: cfg.use_linear_projection,
                only_cross_attention: only_cross[i],
                upcast_attention: cfg.upcast_attention,
            })
        };

        // Time embedding.
        let time_proj = Timesteps::new(channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)?;
        let post_act =
            cfg.timestep_post_act.as_deref().map(|a| Activation::parse("timestep_post_act", a)).transpose()?;
        let time_embedding =
            TimestepEmbedding::new(vb.pp("time_embedding"), channels[0], time_embed_dim, act, post_act)?;
        let time_embed_act =
            cfg.time_embedding_act_fn.as_deref().map(|a| Activation::parse("time_embedding_act_fn", a)).transpose()?;

        let conv_in = conv(vb.pp("conv_in"), cfg.in_channels, channels[0], cfg.conv_in_kernel)?;

        // Down blocks.
        let vb_down = vb.pp("down_blocks");
        let mut down_blocks = Vec::with_capacity(n);
        for (i, name) in cfg.down_block_types.iter().enumerate() {
            let has_cross = block_kind("down_block_types", i, name, "DownBlock2D", "CrossAttnDownBlock2D")?;
            let c_in = if i == 0 { channels[0] } else { channels[i - 1] };
            let cross = if has_cross {
                Some(cross(i, "transformer_layers_per_block", &transformer_layers[i], layers[i])?)
            } else {
                None
            };
            let block = DownBlock2D::new(
                vb_down.pp(i),
                layers[i],
                c_in,
                channels[i],
                &resnet,
                cross.as_ref(),
                i + 1 < n,
                cfg.downsample_padding,
            )?;
            down_blocks.push(block);
        }

        // Mid block.
        let last = channels[n - 1];
        let mid_resnet = ResnetConfig { output_scale_factor: cfg.mid_block_scale_factor, ..resnet };
        let mut mid_block = match cfg.mid_block_type.as_deref() {
            None => None,
            Some("UNetMidBlock2DCrossAttn") => {
                // diffusers' mid block has one transformer, of the last block's (first) depth.
                let depth = match &transformer_layers[n - 1] {
                    PerBlock::One(v) => *v,
                    PerBlock::Each(v) => match v.first() {
                        Some(d) => *d,
                        None => bail!("transformer_layers_per_block[{}] is an empty list", n - 1),
                    },
                };
                let mut c = cross(n - 1, "transformer_layers_per_block", &PerBlock::One(depth), 1)?;
                c.only_cross_attention = false;
                Some(MidBlock::CrossAttn(UNetMidBlock2DCrossAttn::new(vb.pp("mid_block"), last, &mid_resnet, &c)?))
            }
            Some("UNetMidBlock2D") => Some(MidBlock::Plain(UNetMidBlock2D::new(vb.pp("mid_block"), last, &mid_resnet, 0, None)?)),
            Some(other) => bail!(
                "unsupported mid_block_type {other:?}: candlewick's UNet supports \"UNetMidBlock2DCrossAttn\", \"UNetMidBlock2D\" and null"
            ),
        };

        // Up blocks, over the reversed per-block settings.
        let vb_up = vb.pp("up_blocks");
        let mut up_blocks = Vec::with_capacity(n);
        for (i, name) in cfg.up_block_types.iter().enumerate() {
            let has_cross = block_kind("up_block_types", i, name, "UpBlock2D", "CrossAttnUpBlock2D")?;
            let r = n - 1 - i;
            let prev = if i == 0 { last } else { channels[r + 1] };
            let c_in = channels[r.saturating_sub(1)];
            let num_layers = layers[r] + 1;
            let cross = if has_cross {
                let t = match &cfg.reverse_transformer_layers_per_block {
                    Some(rev) if rev.len() == n => rev[i].clone(),
                    Some(rev) => bail!("reverse_transformer_layers_per_block has {} entries but there are {n} up blocks", rev.len()),
                    None => match &transformer_layers[r] {
                        PerBlock::One(v) => PerBlock::One(*v),
                        PerBlock::Each(_) => bail!(
                            "transformer_layers_per_block has per-layer lists: reverse_transformer_layers_per_block must be given"
                        ),
                    },
                };
                Some(cross(r, "reverse_transformer_layers_per_block", &t, num_layers)?)
            } else {
                None
            };
            let block =
                UpBlock2D::new(vb_up.pp(i), num_layers, c_in, prev, channels[r], &resnet, cross.as_ref(), i + 1 < n)?;
            up_blocks.push(block);
        }

        let conv_norm_out = group_norm(vb.pp("conv_norm_out"), groups, channels[0], cfg.norm_eps)?;
        let conv_out = conv(vb.pp("conv_out"), channels[0], cfg.out_channels, cfg.conv_out_kernel)?;
        let mut resnets: Vec<&mut ResnetBlock2D> = Vec::new();
        for block in &mut down_blocks {
            resnets.extend(block.resnets_mut());
        }
        match &mut mid_block {
            Some(MidBlock::CrossAttn(m)) => resnets.extend(m.resnets_mut()),
            Some(MidBlock::Plain(m)) => resnets.extend(m.resnets_mut()),
            None => {}
        }
        for block in &mut up_blocks {
            resnets.extend(block.resnets_mut());
        }
        let time_projections = stack_time_projections(resnets)?;
        // Number the cross-attention layers (down blocks, mid block, up blocks) and keep their key
        // and value projections in that order: each layer reads its entry of the Context that
        // `project_context` makes once a generation.
        let mut transformers: Vec<&mut Transformer2DModel> = Vec::new();
        for block in &mut down_blocks {
            transformers.extend(block.transformers_mut());
        }
        if let Some(MidBlock::CrossAttn(m)) = &mut mid_block {
            transformers.extend(m.transformers_mut());
        }
        for block in &mut up_blocks {
            transformers.extend(block.transformers_mut());
        }
        let mut context_projections = Vec::new();
        for (i, layer) in transformers.into_iter().flat_map(|t| t.context_attentions_mut()).enumerate() {
            context_projections.push(layer.context_projection().clone());
            layer.use_context_index(i);
        }
        Ok(Self {
            conv_in,
            time_proj,
            time_embedding,
            time_embed_act,
            resnet_act: act,
            time_projections,
            context_projections,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_act: act,
            conv_out,
            center_input_sample: cfg.center_input_sample,
        })
    }

    /// Predict the noise (or v) for `sample` [b, in_channels, h, w] at `timestep`, conditioned on
    /// `encoder_hidden_states` [b, seq, cross_attention_dim]. Any h and w work: each up block
    /// upsamples to the size of the skip connection it meets, as diffusers does.
    pub fn forward(&self, sample: &Tensor, timestep: f64, encoder_hidden_states: &Tensor) -> Result<Tensor> {
        let t_proj = self.time_proj(timestep, sample)?;
        let context = self.project_context(encoder_hidden_states, sample.dtype())?;
        self.forward_with_time_proj(sample, &t_proj, &context)
    }

    /// Step 1's sinusoidal projection of the timestep, [1, channels] in `like`'s dtype and device:
    /// computed on the host, so a captured CUDA graph takes it as an input (`cuda::graph`).
    pub fn time_proj(&self, timestep: f64, like: &Tensor) -> Result<Tensor> {
        self.time_proj.forward(timestep, like.device(), like.dtype())
    }

    /// The text context of a generation, `encoder_hidden_states` [b, seq, cross_attention_dim] in
    /// `dtype` (the sample's) with every cross-attention layer's keys and values of it: the same
    /// at every step, so a pipeline makes it once and passes it to each step.
    pub fn project_context(&self, encoder_hidden_states: &Tensor, dtype: candle_core::DType) -> Result<Context> {
        let hidden = encoder_hidden_states.to_dtype(dtype)?;
        let keys_values = self.context_projections.iter().map(|p| p.forward(&hidden)).collect::<Result<Vec<_>>>()?;
        Ok(Context { hidden, keys_values })
    }

    /// [`Self::forward`] from the timestep's projection ([`Self::time_proj`]) and the text context
    /// ([`Self::project_context`]): only device work.
    pub fn forward_with_time_proj(&self, sample: &Tensor, t_proj: &Tensor, context: &Context) -> Result<Tensor> {
        let (b, _, _, _) = sample.dims4()?;
        let (cb, _, _) = context.hidden.dims3()?;
        if cb != b {
            bail!("UNet: sample has batch {b} but encoder_hidden_states has batch {cb}");
        }
        if context.hidden.dtype() != sample.dtype() {
            bail!("UNet: the context is {:?} but the sample {:?}", context.hidden.dtype(), sample.dtype());
        }
        let sample = if self.center_input_sample { sample.affine(2.0, -1.0)? } else { sample.clone() };

        // 1. Time embedding ([1, time_embed_dim], broadcast over the batch), through the resnets'
        // activation (each resnet's time_emb_proj applies it first in diffusers).
        let mut emb = self.time_embedding.forward(t_proj)?;
        if let Some(act) = &self.time_embed_act {
            emb = act.forward(&emb)?;
        }

        let emb = self.resnet_act.forward(&emb)?;
        let projected = match &self.time_projections {
            Some(p) => cublaslt::linear(&emb, p.weight(), p.bias(), None)?,
            None => None,
        };
        let emb = TimeEmbedding { activated: emb, projected };

        // 2. Down.
        let mut xs = self.conv_in.forward(&sample)?;
        let mut skips = vec![xs.clone()];
        for block in &self.down_blocks {
            let (out, res) = block.forward(&xs, &emb, context)?;
            xs = out;
            skips.extend(res);
        }

        // 3. Mid.
        xs = match &self.mid_block {
            Some(MidBlock::CrossAttn(m)) => m.forward(&xs, &emb, context)?,
            Some(MidBlock::Plain(m)) => m.forward(&xs, Some(&emb))?,
            None => xs,
        };

        // 4. Up: each block takes its skip connections off the end of the list.
        for block in &self.up_blocks {
            let k = block.num_skips();
            if skips.len() < k {
                bail!("UNet: up block needs {k} skip connections but {} are left", skips.len());
            }
            let res = skips.split_off(skips.len() - k);
            let upsample_size = match skips.last() {
                Some(next) => {
                    let (_, _, h, w) = next.dims4()?;
                    Some((h, w))
                }
                None => None,
            };
            xs = block.forward(&xs, &res, &emb, context, upsample_size)?;
        }

        // 5. Out.
        self.conv_out.forward(&self.conv_norm_out.forward_then(self.conv_act, &xs)?)
    }
}
