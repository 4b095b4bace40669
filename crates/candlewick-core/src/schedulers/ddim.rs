//! DDIM (Song et al., "Denoising Diffusion Implicit Models") exactly as diffusers 0.42's
//! `DDIMScheduler` (schedulers/scheduling_ddim.py): the same betas, timesteps and update, with
//! the scalar arithmetic in float32 as diffusers' tensors do it.

mod config;

use candle_core::{bail, Tensor};

pub use config::{BetaSchedule, DdimOverrides, DdimSchedulerConfig, PredictionType, TimestepSpacing};

use super::betas;
use crate::error::{expected, Result};

/// A DDIM scheduler set up for one run of `num_inference_steps` steps.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    config: DdimSchedulerConfig,
    /// num_train_timesteps // num_inference_steps: how far back each step goes.
    step_ratio: usize,
    timesteps: Vec<usize>,
    /// float32 values, as diffusers holds them.
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
}

impl DdimScheduler {
    /// `DDIMScheduler(**config)` followed by `set_timesteps(num_inference_steps)`.
    pub fn new(config: DdimSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        config.validate()?;
        let n = num_inference_steps;
        let train = config.num_train_timesteps;
        if n == 0 || n > train {
            return Err(expected(&format!("integer between 1 and {train}"), "numInferenceSteps", n));
        }

        let mut betas = match (&config.trained_betas, config.beta_schedule) {
            (Some(b), _) => b.iter().map(|&b| b as f32).collect(),
            (None, BetaSchedule::Linear) => betas::linspace_f32(config.beta_start, config.beta_end, train),
            (None, BetaSchedule::ScaledLinear) => {
                let sqrt = betas::linspace_f32(config.beta_start.sqrt(), config.beta_end.sqrt(), train);
                sqrt.iter().map(|b| b * b).collect()
            }
            (None, BetaSchedule::SquaredcosCapV2) => betas::squaredcos_cap_v2(train),
        };
        if config.rescale_betas_zero_snr {
            betas = betas::rescale_zero_terminal_snr(&betas);
        }
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let alphas_cumprod: Vec<f64> = betas::cumprod_f32(&alphas).into_iter().map(f64::from).collect();
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };

        let timesteps = timesteps(&config, n);
        if let Some(&first) = timesteps.first().filter(|&&t| t >= train) {
            return Err(expected(
                &format!(
                    "at most {} steps with scheduler.stepsOffset {} (the first timestep would be {first}, past the last \
                     training timestep {})",
                    n - 1,
                    config.steps_offset,
                    train - 1
                ),
                "numInferenceSteps",
                n,
            ));
        }
        Ok(Self { step_ratio: train / n, config, timesteps, alphas_cumprod, final_alpha_cumprod })
    }

    /// The timesteps to denoise at, from the noisiest down.
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// alphas_cumprod for every training timestep.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// The alpha product the last step lands on (1, or alphas_cumprod[0]).
    pub fn final_alpha_cumprod(&self) -> f64 {
        self.final_alpha_cumprod
    }

    /// The config this scheduler runs with.
    pub fn config(&self) -> &DdimSchedulerConfig {
        &self.config
    }

    /// The scale of the initial noise (1 for DDIM).
    pub fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// DDIM feeds the model the sample as is.
    pub fn scale_model_input(&self, sample: Tensor, _timestep: usize) -> Tensor {
        sample
    }

    /// One DDIM step from `timestep` back to `timestep - num_train_timesteps // num_inference_steps`:
    /// diffusers' `step(model_output, timestep, sample, eta, variance_noise=...)` with
    /// use_clipped_model_output=False. `variance_noise` (standard normal, like `sample`) is required
    /// when `eta > 0`. Returns prev_sample.
    pub fn step(
        &self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
        eta: f64,
        variance_noise: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let a_t = self.alpha_at(timestep)?;
        let a_prev = match timestep.checked_sub(self.step_ratio) {
            Some(prev) => self.alpha_at(prev)?,
            None => self.final_alpha_cumprod as f32,
        };
        let b_t = 1.0 - a_t;
        let (sqrt_a, sqrt_b) = (f64::from(a_t.sqrt()), f64::from(b_t.sqrt()));

        let (x0, eps) = match self.config.prediction_type {
            PredictionType::Epsilon => (((sample - (model_output * sqrt_b)?)? / sqrt_a)?, model_output.clone()),
            PredictionType::Sample => {
                let x0 = model_output.clone();
                let eps = ((sample - (&x0 * sqrt_a)?)? / sqrt_b)?;
                (x0, eps)
            }
            PredictionType::VPrediction => {
                (((sample * sqrt_a)? - (model_output * sqrt_b)?)?, ((model_output * sqrt_a)? + (sample * sqrt_b)?)?)
            }
        };
        let x0 = if self.config.clip_sample {
            let r = self.config.clip_sample_range as f32;
            x0.clamp(-r, r)?
        } else {
            x0
        };

        // The variance of DDIM's eq. 16 and the noise weight std_dev_t = eta * sqrt(variance).
        let b_prev = 1.0 - a_prev;
        let variance = (b_prev / b_t) * (1.0 - a_t / a_prev);
        let std_dev_t = eta as f32 * variance.sqrt();
        let direction = (1.0 - a_prev - std_dev_t * std_dev_t).sqrt();
        let prev = ((x0 * f64::from(a_prev.sqrt()))? + (eps * f64::from(direction))?)?;
        if eta > 0.0 {
            let Some(noise) = variance_noise else {
                bail!("DDIM step with eta {eta} > 0 needs variance_noise");
            };
            return prev + (noise * f64::from(std_dev_t))?;
        }
        Ok(prev)
    }

    /// Forward diffusion to `timestep`: sqrt(a) * original + sqrt(1 - a) * noise (img2img).
    pub fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: usize) -> candle_core::Result<Tensor> {
        let a = self.alpha_at(timestep)?;
        (original * f64::from(a.sqrt()))? + (noise * f64::from((1.0 - a).sqrt()))?
    }

    fn alpha_at(&self, timestep: usize) -> candle_core::Result<f32> {
        match self.alphas_cumprod.get(timestep) {
            Some(&a) => Ok(a as f32),
            None => {
                bail!("DDIM timestep {timestep} is past the last training timestep {}", self.alphas_cumprod.len() - 1)
            }
        }
    }
}

/// `set_timesteps`' three spacings, with numpy's float arithmetic (round half to even).
fn timesteps(config: &DdimSchedulerConfig, n: usize) -> Vec<usize> {
    let train = config.num_train_timesteps;
    match config.timestep_spacing {
        // np.linspace(0, train - 1, n).round()[::-1]
        TimestepSpacing::Linspace => {
            let last = (train - 1) as f64;
            let step = if n > 1 { last / (n - 1) as f64 } else { 0.0 };
            (0..n)
                .rev()
                .map(|i| if n > 1 && i == n - 1 { last } else { i as f64 * step })
                .map(|v| v.round_ties_even() as usize)
                .collect()
        }
        // (np.arange(0, n) * (train // n))[::-1] + steps_offset
        TimestepSpacing::Leading => (0..n).rev().map(|i| i * (train / n) + config.steps_offset).collect(),
        // np.round(np.arange(train, 0, -train / n)) - 1. numpy fills a float arange as
        // start + i * ((start + step) - start). Where that arange yields one value too many (n = 61,
        // 103, ... of 1000), diffusers ends on timestep -1; the n real timesteps are kept here.
        TimestepSpacing::Trailing => {
            let start = train as f64;
            let step = -(train as f64 / n as f64);
            let delta = (start + step) - start;
            (0..n)
                .map(|i| match i {
                    0 => start,
                    1 => start + step,
                    _ => start + i as f64 * delta,
                })
                .map(|v| (v.round_ties_even() as i64 - 1).max(0) as usize)
                .collect()
        }
    }
}
