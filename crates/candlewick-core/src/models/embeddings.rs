//! Timestep embeddings, after diffusers' `embeddings.py`: the sinusoidal `Timesteps`
//! projection and the two-layer `TimestepEmbedding` MLP.

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

/// diffusers' `TimestepEmbedding`: linear_1, activation, linear_2, optional post-activation.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    act: Activation,
    linear_2: Linear,
    post_act: Option<Activation>,
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
        Ok(Self { linear_1, act, linear_2, post_act })
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
