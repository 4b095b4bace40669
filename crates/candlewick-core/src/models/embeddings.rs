//! Timestep embeddings, after diffusers' `embeddings.py`: the sinusoidal `Timesteps`
//! projection, the two-layer `TimestepEmbedding` MLP (with LCM's `cond_proj`), SDXL's `text_time`
//! added embedding, and LCM's guidance-scale embedding.

use candle_core::{bail, DType, Device, Result, Tensor};
use candle_nn::{Module, VarBuilder};

use super::activations::Activation;
use super::linear::{self, Linear};

/// diffusers' `Timesteps`: a sinusoidal embedding of the (scalar) timestep, computed in f32
/// exactly as `get_timestep_embedding` does (max_period 10000, scale 1).
#[derive(Debug, Clone)]
pub struct Timesteps {
    num_channels: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
}

impl Timesteps {
    pub fn new(num_channels: usize, flip_sin_to_cos: bool, downscale_freq_shift: f64) -> Result<Self> {
        let half = num_channels / 2;
        if half == 0 || half as f64 == downscale_freq_shift {
            bail!("Timesteps: cannot embed into {num_channels} channels with freq_shift {downscale_freq_shift}");
        }
        Ok(Self { num_channels, flip_sin_to_cos, downscale_freq_shift })
    }

    /// The embedding of each of `values` (SDXL's size conditions), [n, num_channels], in `dtype`.
    pub fn forward_many(&self, values: &[f64], device: &Device, dtype: DType) -> Result<Tensor> {
        let rows = values.iter().map(|&v| self.forward(v, device, dtype)).collect::<Result<Vec<_>>>()?;
        Tensor::cat(&rows, 0)
    }

    /// The embedding of one timestep, shape [1, num_channels], in `dtype`.
    pub fn forward(&self, timestep: f64, device: &Device, dtype: DType) -> Result<Tensor> {
        let half = self.num_channels / 2;
        // torch computes every step in f32: exponent = -ln(10000) * arange(half) / (half - shift).
        let log_max = -(10000f64.ln()) as f32;
        let denom = (half as f64 - self.downscale_freq_shift) as f32;
        let t = timestep as f32;
        let args: Vec<f32> = (0..half).map(|i| t * ((log_max * i as f32) / denom).exp()).collect();
        let sin = args.iter().map(|a| a.sin());
        let cos = args.iter().map(|a| a.cos());
        let mut emb: Vec<f32> = if self.flip_sin_to_cos { cos.chain(sin).collect() } else { sin.chain(cos).collect() };
        if self.num_channels % 2 == 1 {
            emb.push(0.0);
        }
        Tensor::from_vec(emb, (1, self.num_channels), device)?.to_dtype(dtype)
    }
}

/// diffusers' `TimestepEmbedding`: linear_1, activation, linear_2, optional post-activation;
/// with `cond_proj_dim` (LCM's `time_cond_proj_dim`), a bias-free `cond_proj` whose projection of a
/// condition is added to the input first.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    act: Activation,
    linear_2: Linear,
    post_act: Option<Activation>,
    cond_proj: Option<Linear>,
}

impl TimestepEmbedding {
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        time_embed_dim: usize,
        act: Activation,
        post_act: Option<Activation>,
    ) -> Result<Self> {
        let linear_1 = linear::linear(in_channels, time_embed_dim, vb.pp("linear_1"))?;
        let linear_2 = linear::linear(time_embed_dim, time_embed_dim, vb.pp("linear_2"))?;
        Ok(Self { linear_1, act, linear_2, post_act, cond_proj: None })
    }

    /// With LCM's `cond_proj` (`time_cond_proj_dim` -> `in_channels`, no bias).
    pub fn with_cond_proj(mut self, vb: VarBuilder, cond_proj_dim: usize) -> Result<Self> {
        let in_channels = self.linear_1.dims().1;
        self.cond_proj = Some(linear::linear_b(cond_proj_dim, in_channels, false, vb.pp("cond_proj"))?);
        Ok(self)
    }

    /// `cond_proj(condition)`: what [`Self::forward`]'s input gets added (diffusers adds it inside
    /// `forward`; it is the same at every step, so the UNet makes it once a generation).
    pub fn project_condition(&self, condition: &Tensor) -> Result<Tensor> {
        match &self.cond_proj {
            Some(p) => p.forward(condition),
            None => bail!("TimestepEmbedding: a condition was given but the model has no cond_proj"),
        }
    }

    pub fn forward(&self, sample: &Tensor) -> Result<Tensor> {
        let xs = self.act.forward(&self.linear_1.forward(sample)?)?;
        let xs = self.linear_2.forward(&xs)?;
        match &self.post_act {
            Some(act) => act.forward(&xs),
            None => Ok(xs),
        }
    }
}

/// diffusers' `get_guidance_scale_embedding` (LCM): the sinusoidal embedding of `w * 1000`,
/// [1, embedding_dim] in `dtype`, computed in f32 as torch does (sines first, then cosines).
pub fn guidance_scale_embedding(w: f64, embedding_dim: usize, device: &Device, dtype: DType) -> Result<Tensor> {
    let half = embedding_dim / 2;
    if half < 2 {
        bail!("guidance embedding: time_cond_proj_dim {embedding_dim} is too small (at least 4)");
    }
    let w = (w as f32) * 1000.0;
    let step = 10000f32.ln() / (half - 1) as f32;
    let args: Vec<f32> = (0..half).map(|i| w * (i as f32 * -step).exp()).collect();
    let mut emb: Vec<f32> = args.iter().map(|a| a.sin()).chain(args.iter().map(|a| a.cos())).collect();
    if embedding_dim % 2 == 1 {
        emb.push(0.0);
    }
    Tensor::from_vec(emb, (1, embedding_dim), device)?.to_dtype(dtype)
}

/// SDXL's `addition_embed_type: "text_time"`: `add_time_proj` (a [`Timesteps`] of each size
/// condition) and `add_embedding` (a SiLU [`TimestepEmbedding`] of the pooled text embedding
/// concatenated with them), added to the time embedding.
#[derive(Debug, Clone)]
pub struct TextTimeEmbedding {
    add_time_proj: Timesteps,
    add_embedding: TimestepEmbedding,
    input_dim: usize,
}

impl TextTimeEmbedding {
    pub fn new(
        vb: VarBuilder,
        addition_time_embed_dim: usize,
        projection_class_embeddings_input_dim: usize,
        time_embed_dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f64,
    ) -> Result<Self> {
        Ok(Self {
            add_time_proj: Timesteps::new(addition_time_embed_dim, flip_sin_to_cos, freq_shift)?,
            add_embedding: TimestepEmbedding::new(
                vb.pp("add_embedding"),
                projection_class_embeddings_input_dim,
                time_embed_dim,
                Activation::Silu,
                None,
            )?,
            input_dim: projection_class_embeddings_input_dim,
        })
    }

    /// `text_embeds` [b, pooled] and `time_ids` [b, k] (f32, the size conditions) to the added
    /// embedding [b, time_embed_dim], in `text_embeds`' dtype.
    pub fn forward(&self, text_embeds: &Tensor, time_ids: &Tensor) -> Result<Tensor> {
        let (b, pooled) = text_embeds.dims2()?;
        let (tb, k) = time_ids.dims2()?;
        if tb != b || pooled + k * self.add_time_proj.num_channels != self.input_dim {
            bail!(
                "text_time embedding: text_embeds {:?} and time_ids {:?} do not make projection_class_embeddings_input_dim {}",
                text_embeds.dims(),
                time_ids.dims(),
                self.input_dim
            );
        }
        let values: Vec<f64> =
            time_ids.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f64::from).collect();
        let time_embeds = self.add_time_proj.forward_many(&values, text_embeds.device(), text_embeds.dtype())?;
        let time_embeds = time_embeds.reshape((b, k * self.add_time_proj.num_channels))?;
        self.add_embedding.forward(&Tensor::cat(&[text_embeds, &time_embeds], 1)?)
    }
}
