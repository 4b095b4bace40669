//! diffusers' `UNet2DConditionModel` (Stable Diffusion 1.x/2.x, SDXL, LCM): time embedding (with
//! LCM's guidance condition and SDXL's `text_time` added embedding), conv_in, down blocks, mid
//! block, up blocks fed by skip connections, conv_norm_out, conv_out.
//!
//! The config is read from the model folder's unet/config.json with diffusers' defaults;
//! what this UNet cannot run (class embeddings, other addition embeddings, other block types)
//! is refused by name when the model is built.

use super::conv::Conv2d;
use candle_core::{bail, Result, Tensor, TensorId};
use candle_nn::{Module, VarBuilder};

use super::activations::Activation;
use super::attention_processor::Context;
use super::embeddings::{guidance_scale_embedding, TextTimeEmbedding, TimestepEmbedding, Timesteps};
use super::linear::Linear;
use super::norm::{group_norm, GroupNorm};
use super::resnet::{conv, ResnetBlock2D, ResnetConfig, TimeEmbedding, TimeEmbeddingNorm};
use super::transformer_2d::Transformer2DModel;
use super::unet_2d_blocks::{CrossAttnConfig, DownBlock2D, UNetMidBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D};
use super::unet_2d_condition_config::block_kind;
pub use super::unet_2d_condition_config::{PerBlock, UNet2DConditionConfig};
use crate::cuda::cublaslt;

/// SDXL's added conditions (diffusers' `added_cond_kwargs`): the pooled, projected text
/// embedding [b, pooled] and the size conditions [b, 6] (original size, crop top-left, target
/// size; the refiner: original size, crop, aesthetic score), f32, rows as the latents'.
#[derive(Debug, Clone)]
pub struct AddedConditions {
    pub text_embeds: Tensor,
    pub time_ids: Tensor,
}

/// diffusers' `UNet2DConditionModel`.
#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    /// LCM's guidance condition width (`time_cond_proj_dim`).
    time_cond_proj_dim: Option<usize>,
    /// SDXL's `add_time_proj` and `add_embedding`.
    text_time: Option<TextTimeEmbedding>,
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
    /// The f16 tensors its FP8 layers were made from and dropped (`fp8` load option).
    quantized: Vec<TensorId>,
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
        let (Some(weight), Some(bias)) = (proj.weight(), proj.bias()) else { return Ok(None) };
        weights.push(weight.clone());
        biases.push(bias.clone());
    }
    if weights.is_empty() {
        return Ok(None);
    }
    let (weight, bias) = (Tensor::cat(&weights, 0)?, Tensor::cat(&biases, 0)?);
    let mut first = 0;
    for resnet in resnets.iter_mut().filter(|r| r.time_emb_proj().is_some()) {
        let rows = resnet.time_emb_proj().map_or(0, |p| p.dims().0);
        let view = Linear::new(weight.narrow(0, first, rows)?, Some(bias.narrow(0, first, rows)?));
        resnet.use_stacked_time_projection(view, first);
        first += rows;
    }
    Ok(Some(Linear::new(weight, Some(bias))))
}

impl UNet2DConditionModel {
    /// With the load option `fp8`, its linear layers over the image's tokens are quantized as
    /// they are made (`cuda::fp8`).
    pub fn new(vb: VarBuilder, cfg: &UNet2DConditionConfig) -> Result<Self> {
        let (unet, quantized) = crate::cuda::fp8::quantizing(|| Self::build(vb, cfg));
        Ok(Self { quantized, ..unet? })
    }

    /// The weights it was given that its FP8 layers hold in e4m3 only: a record of the tensors
    /// it was built from should not keep them (`loaders::base_weights`), or their memory stays.
    pub fn quantized_weights(&self) -> &[TensorId] {
        &self.quantized
    }

    fn build(vb: VarBuilder, cfg: &UNet2DConditionConfig) -> Result<Self> {
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
        let mut time_embedding =
            TimestepEmbedding::new(vb.pp("time_embedding"), channels[0], time_embed_dim, act, post_act)?;
        if let Some(dim) = cfg.time_cond_proj_dim {
            time_embedding = time_embedding.with_cond_proj(vb.pp("time_embedding"), dim)?;
        }
        let text_time =
            match (&cfg.addition_embed_type, cfg.addition_time_embed_dim, cfg.projection_class_embeddings_input_dim) {
                (Some(_), Some(time_dim), Some(input_dim)) => Some(TextTimeEmbedding::new(
                    vb.clone(),
                    time_dim,
                    input_dim,
                    time_embed_dim,
                    cfg.flip_sin_to_cos,
                    cfg.freq_shift,
                )?),
                _ => None,
            };
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
        for layer in transformers.into_iter().flat_map(|t| t.context_attentions_mut()) {
            let Some(projection) = layer.context_projection() else { continue };
            context_projections.push(projection.clone());
            layer.use_context_index(context_projections.len() - 1);
        }
        Ok(Self {
            conv_in,
            time_proj,
            time_embedding,
            time_cond_proj_dim: cfg.time_cond_proj_dim,
            text_time,
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
            quantized: Vec::new(),
        })
    }

    /// Predict the noise (or v) for `sample` [b, in_channels, h, w] at `timestep`, conditioned on
    /// `encoder_hidden_states` [b, seq, cross_attention_dim]. Any h and w work: each up block
    /// upsamples to the size of the skip connection it meets, as diffusers does.
    pub fn forward(&self, sample: &Tensor, timestep: f64, encoder_hidden_states: &Tensor) -> Result<Tensor> {
        let t_proj = self.time_proj(timestep, sample)?;
        let context = self.project_context(encoder_hidden_states, sample.dtype())?;
        if self.time_cond_proj_dim.is_some() || self.text_time.is_some() {
            bail!("UNet: this UNet needs a guidance embedding or added conditions: use `condition` and forward_with_time_proj");
        }
        self.forward_with_time_proj(sample, &t_proj, &context)
    }

    /// Step 1's sinusoidal projection of the timestep, [1, channels] in `like`'s dtype and device:
    /// computed on the host, so a captured CUDA graph takes it as an input (`cuda::graph`).
    pub fn time_proj(&self, timestep: f64, like: &Tensor) -> Result<Tensor> {
        self.time_proj.forward(timestep, like.device(), like.dtype())
    }

    /// [`Self::time_proj`] plus the context's guidance condition (LCM's `cond_proj` of the
    /// guidance embedding, added before the time MLP as diffusers' `TimestepEmbedding` does).
    pub fn time_proj_conditioned(&self, timestep: f64, like: &Tensor, context: &Context) -> Result<Tensor> {
        let t_proj = self.time_proj(timestep, like)?;
        match &context.time_condition {
            Some(c) => t_proj.broadcast_add(c),
            None => Ok(t_proj),
        }
    }

    /// LCM's `time_cond_proj_dim`: a UNet with it is guided through an embedding of the guidance
    /// scale instead of classifier-free guidance.
    pub fn time_cond_proj_dim(&self) -> Option<usize> {
        self.time_cond_proj_dim
    }

    /// Whether the UNet takes SDXL's added conditions (`addition_embed_type: "text_time"`).
    pub fn takes_text_time(&self) -> bool {
        self.text_time.is_some()
    }

    /// The text context of a generation, `encoder_hidden_states` [b, seq, cross_attention_dim] in
    /// `dtype` (the sample's) with every cross-attention layer's keys and values of it: the same
    /// at every step, so a pipeline makes it once and passes it to each step.
    pub fn project_context(&self, encoder_hidden_states: &Tensor, dtype: candle_core::DType) -> Result<Context> {
        let hidden = encoder_hidden_states.to_dtype(dtype)?;
        let keys_values = self.context_projections.iter().map(|p| p.forward(&hidden)).collect::<Result<Vec<_>>>()?;
        Ok(Context { hidden, keys_values, time_condition: None, added_embedding: None })
    }

    /// The context with the conditions besides the text that this UNet reads, made once a
    /// generation: LCM's guidance embedding of `guidance_scale - 1` through `cond_proj`, SDXL's
    /// `add_embedding` of `added.text_embeds` [b, pooled] and `added.time_ids` [b, k].
    pub fn condition(
        &self,
        mut context: Context,
        guidance_scale: f64,
        added: Option<&AddedConditions>,
    ) -> Result<Context> {
        let dtype = context.hidden.dtype();
        if let Some(dim) = self.time_cond_proj_dim {
            let w = guidance_scale_embedding(guidance_scale - 1.0, dim, context.hidden.device(), dtype)?;
            context.time_condition = Some(self.time_embedding.project_condition(&w)?);
        }
        match (&self.text_time, added) {
            (Some(text_time), Some(a)) => {
                let text_embeds = a.text_embeds.to_dtype(dtype)?;
                context.added_embedding = Some(text_time.forward(&text_embeds, &a.time_ids.to_dtype(dtype)?)?);
            }
            (Some(_), None) => bail!("UNet: addition_embed_type \"text_time\" needs text_embeds and time_ids"),
            (None, _) => {}
        }
        Ok(context)
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
        match (&context.added_embedding, &self.text_time) {
            (Some(added), Some(_)) => emb = emb.broadcast_add(added)?,
            (None, Some(_)) => bail!("UNet: addition_embed_type \"text_time\" needs text_embeds and time_ids"),
            _ => {}
        }
        if let Some(act) = &self.time_embed_act {
            emb = act.forward(&emb)?;
        }

        let emb = self.resnet_act.forward(&emb)?;
        let projected = match &self.time_projections {
            Some(p) => match p.weight() {
                Some(weight) => cublaslt::linear(&emb, weight, p.bias(), None)?,
                None => None,
            },
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
