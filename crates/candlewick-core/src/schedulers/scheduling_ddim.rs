//! DDIM (Song et al., "Denoising Diffusion Implicit Models") exactly as diffusers 0.42's
//! `DDIMScheduler` (schedulers/scheduling_ddim.py): the same betas, timesteps and update, with
//! the scalar arithmetic in float32 as diffusers' tensors do it.

use candle_core::Tensor;
use serde::Deserialize;

use super::config::{BetaSchedule, NoiseSchedule, PredictionType, TimestepSpacing};
use super::scheduler::{Scheduler, StepNoise};
use crate::error::{expected, Error, Result};

/// diffusers' `DDIMScheduler` config (scheduler_config.json), plus `eta`, the step's noise weight
/// (a pipeline argument in diffusers). Missing keys take the defaults of `DDIMScheduler.__init__`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct DdimSchedulerConfig {
    /// Timesteps the model was trained on (1000).
    pub num_train_timesteps: usize,
    /// First beta of the linear schedules (0.0001).
    pub beta_start: f64,
    /// Last beta of the linear schedules (0.02).
    pub beta_end: f64,
    /// How betas are spread ("linear").
    pub beta_schedule: BetaSchedule,
    /// Explicit betas, one per training timestep, instead of a schedule (None).
    pub trained_betas: Option<Vec<f64>>,
    /// Clamp the predicted clean sample to ±`clip_sample_range` (true).
    pub clip_sample: bool,
    /// The clamp bound for `clip_sample` (1.0).
    pub clip_sample_range: f64,
    /// The last step lands on alpha 1 instead of `alphas_cumprod[0]` (true).
    pub set_alpha_to_one: bool,
    /// Added to the leading-spaced timesteps (0; SD1.x uses 1).
    pub steps_offset: usize,
    /// What the model predicts ("epsilon").
    pub prediction_type: PredictionType,
    /// Dynamic thresholding (false). Pixel-space models only; not supported here.
    pub thresholding: bool,
    /// Dynamic thresholding's quantile (0.995); unused while thresholding is unsupported.
    pub dynamic_thresholding_ratio: f64,
    /// Dynamic thresholding's bound (1.0); unused while thresholding is unsupported.
    pub sample_max_value: f64,
    /// How inference timesteps are placed ("leading").
    pub timestep_spacing: TimestepSpacing,
    /// Rescale betas to zero terminal SNR (false).
    pub rescale_betas_zero_snr: bool,
    /// DDIM's eta: 0 is deterministic DDIM, 1 adds DDPM's noise (0).
    pub eta: f64,
}

impl Default for DdimSchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            clip_sample: true,
            clip_sample_range: 1.0,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            rescale_betas_zero_snr: false,
            eta: 0.0,
        }
    }
}

impl DdimSchedulerConfig {
    pub(crate) fn noise_schedule(&self) -> NoiseSchedule<'_> {
        NoiseSchedule {
            num_train_timesteps: self.num_train_timesteps,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            beta_schedule: self.beta_schedule,
            trained_betas: self.trained_betas.as_deref(),
            rescale_betas_zero_snr: self.rescale_betas_zero_snr,
        }
    }

    /// Every check on the config, in one place (values from scheduler_config.json included).
    pub fn validate(&self) -> Result<()> {
        self.noise_schedule().validate()?;
        let t = self.num_train_timesteps;
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(expected("number between 0 and 1", "scheduler.eta", self.eta));
        }
        if self.thresholding {
            return Err(expected(
                "false (dynamic thresholding is for pixel-space models and is not supported)",
                "scheduler.thresholding",
                true,
            ));
        }
        if !(self.clip_sample_range.is_finite() && self.clip_sample_range > 0.0) {
            return Err(expected("finite number > 0", "scheduler.clip_sample_range", self.clip_sample_range));
        }
        if self.steps_offset >= t {
            return Err(expected(
                &format!("integer below scheduler.num_train_timesteps ({t})"),
                "scheduler.steps_offset",
                self.steps_offset,
            ));
        }
        Ok(())
    }
}

/// A DDIM scheduler set up for one run of `num_inference_steps` steps.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    config: DdimSchedulerConfig,
    /// num_train_timesteps // num_inference_steps: how far back each step goes.
    step_ratio: usize,
    timesteps: Vec<f64>,
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
            return Err(expected(&format!("integer between 1 and {train}"), "num_inference_steps", n));
        }
        let alphas_cumprod: Vec<f64> = config.noise_schedule().alphas_cumprod().into_iter().map(f64::from).collect();
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };

        let timesteps = timesteps(&config, n);
        if let Some(&first) = timesteps.first().filter(|&&t| t >= train) {
            return Err(expected(
                &format!(
                    "at most {} steps with scheduler.steps_offset {} (the first timestep would be {first}, past the last \
                     training timestep {})",
                    n - 1,
                    config.steps_offset,
                    train - 1
                ),
                "num_inference_steps",
                n,
            ));
        }
        let timesteps = timesteps.into_iter().map(|t| t as f64).collect();
        Ok(Self { step_ratio: train / n, config, timesteps, alphas_cumprod, final_alpha_cumprod })
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

    fn alpha_at(&self, timestep: f64) -> Result<f32> {
        let index = timestep as usize;
        match self.alphas_cumprod.get(index).filter(|_| timestep >= 0.0 && timestep.fract() == 0.0) {
            Some(&a) => Ok(a as f32),
            None => Err(Error::Internal(format!(
                "DDIM timestep {timestep} is not a training timestep (0 to {})",
                self.alphas_cumprod.len() - 1
            ))),
        }
    }
}

impl Scheduler for DdimScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// One DDIM step from `timestep` back to `timestep - num_train_timesteps // num_inference_steps`:
    /// diffusers' `step(model_output, timestep, sample, eta, variance_noise=...)` with
    /// use_clipped_model_output=False; the variance noise is drawn when eta > 0.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn StepNoise,
    ) -> Result<Tensor> {
        let a_t = self.alpha_at(timestep)?;
        let prev_timestep = timestep - self.step_ratio as f64;
        let a_prev = if prev_timestep >= 0.0 { self.alpha_at(prev_timestep)? } else { self.final_alpha_cumprod as f32 };
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
        let eta = self.config.eta;
        let b_prev = 1.0 - a_prev;
        let variance = (b_prev / b_t) * (1.0 - a_t / a_prev);
        let std_dev_t = eta as f32 * variance.sqrt();
        let direction = (1.0 - a_prev - std_dev_t * std_dev_t).sqrt();
        let prev = ((x0 * f64::from(a_prev.sqrt()))? + (eps * f64::from(direction))?)?;
        if eta > 0.0 {
            let variance_noise = noise.sample_like(model_output)?;
            return Ok((prev + (variance_noise * f64::from(std_dev_t))?)?);
        }
        Ok(prev)
    }

    /// Forward diffusion to `timestep`: sqrt(a) * original + sqrt(1 - a) * noise (img2img).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        let a = self.alpha_at(timestep)?;
        Ok(((original * f64::from(a.sqrt()))? + (noise * f64::from((1.0 - a).sqrt()))?)?)
    }

    /// DDIM keeps no per-step state: every call stands alone.
    fn set_begin_index(&mut self, _begin_index: usize) {}
}

/// `set_timesteps`' three spacings, with numpy's float arithmetic (round half to even).
pub(crate) fn timesteps(config: &DdimSchedulerConfig, n: usize) -> Vec<usize> {
    spaced_timesteps(config.timestep_spacing, config.num_train_timesteps, config.steps_offset, n)
}

/// The leading / trailing / linspace timesteps of DDIM-like schedulers (DDIM, DDPM, PNDM, ...),
/// from the noisiest down.
pub(crate) fn spaced_timesteps(spacing: TimestepSpacing, train: usize, steps_offset: usize, n: usize) -> Vec<usize> {
    match spacing {
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
        TimestepSpacing::Leading => (0..n).rev().map(|i| i * (train / n) + steps_offset).collect(),
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
