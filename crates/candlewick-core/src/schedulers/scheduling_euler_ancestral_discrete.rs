//! Euler ancestral (k-diffusion's `sample_euler_ancestral`) exactly as diffusers 0.42's
//! `EulerAncestralDiscreteScheduler` (schedulers/scheduling_euler_ancestral_discrete.py): an Euler
//! step down to sigma_down, then fresh noise of size sigma_up, so that the sample lands at the
//! next sigma with sigma_down^2 + sigma_up^2 = sigma_next^2.

use candle_core::Tensor;
use serde::Deserialize;

use super::config::{BetaSchedule, NoiseSchedule, PredictionType, TimestepSpacing};
use super::scheduler::{Scheduler, StepNoise};
use super::scheduling_euler_discrete::{
    add_noise, add_noise_index, check_steps, check_steps_offset, current_index, denoised, div_scalar, init_noise_sigma,
    interpolated, scale_by_sigma, sigma_pair, spaced_timesteps, training_sigmas,
};
use crate::error::{expected, Result};

/// diffusers' `EulerAncestralDiscreteScheduler` config (scheduler_config.json). Missing keys take
/// the defaults of `EulerAncestralDiscreteScheduler.__init__`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct EulerAncestralDiscreteSchedulerConfig {
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
    /// What the model predicts ("epsilon"; diffusers does not implement "sample" here).
    pub prediction_type: PredictionType,
    /// How inference timesteps are placed ("linspace").
    pub timestep_spacing: TimestepSpacing,
    /// Added to the leading-spaced timesteps (0; SD1.x uses 1).
    pub steps_offset: usize,
    /// Rescale betas to zero terminal SNR (false).
    pub rescale_betas_zero_snr: bool,
}

impl Default for EulerAncestralDiscreteSchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
        }
    }
}

impl EulerAncestralDiscreteSchedulerConfig {
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
        if self.prediction_type == PredictionType::Sample {
            return Err(expected(
                "\"epsilon\" or \"v_prediction\" (diffusers' EulerAncestralDiscreteScheduler does not implement \"sample\")",
                "scheduler.prediction_type",
                "\"sample\"",
            ));
        }
        check_steps_offset(self.steps_offset, self.num_train_timesteps)
    }
}

/// An Euler ancestral scheduler set up for one run of `num_inference_steps` steps.
#[derive(Debug, Clone)]
pub struct EulerAncestralDiscreteScheduler {
    config: EulerAncestralDiscreteSchedulerConfig,
    timesteps: Vec<f64>,
    /// One per timestep plus the final 0, float32 as diffusers holds them.
    sigmas: Vec<f32>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl EulerAncestralDiscreteScheduler {
    /// `EulerAncestralDiscreteScheduler(**config)` followed by `set_timesteps(num_inference_steps)`.
    pub fn new(config: EulerAncestralDiscreteSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        config.validate()?;
        let n = num_inference_steps;
        check_steps(n, config.num_train_timesteps)?;
        let train_sigmas = training_sigmas(&config.noise_schedule());
        let timesteps = spaced_timesteps(config.timestep_spacing, config.num_train_timesteps, config.steps_offset, n);
        let sigmas = interpolated(&timesteps, &train_sigmas).into_iter().map(|s| s as f32).chain([0.0]).collect();
        let timesteps = timesteps.into_iter().map(f64::from).collect();
        Ok(Self { config, timesteps, sigmas, step_index: None, begin_index: None })
    }

    /// The sigmas, one per timestep plus the final 0 (diffusers' `scheduler.sigmas`).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The config this scheduler runs with.
    pub fn config(&self) -> &EulerAncestralDiscreteSchedulerConfig {
        &self.config
    }
}

impl Scheduler for EulerAncestralDiscreteScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        init_noise_sigma(&self.sigmas, self.config.timestep_spacing)
    }

    fn scale_model_input(&self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let i = current_index(self.step_index, self.begin_index, &self.timesteps, timestep)?;
        scale_by_sigma(sample, self.sigmas[i])
    }

    /// diffusers' `step(model_output, timestep, sample, generator)`: an Euler step to sigma_down,
    /// plus fresh noise * sigma_up (drawn every step, the last included, where sigma_up is 0).
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn StepNoise,
    ) -> Result<Tensor> {
        let i = current_index(self.step_index, self.begin_index, &self.timesteps, timestep)?;
        let (sigma_from, sigma_to) = sigma_pair(&self.sigmas, i)?;
        let pred_original_sample = denoised(self.config.prediction_type, model_output, sample, sigma_from)?;
        let (from2, to2) = (sigma_from * sigma_from, sigma_to * sigma_to);
        let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
        let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
        let derivative = div_scalar(&(sample - pred_original_sample)?, sigma_from)?;
        let dt = sigma_down - sigma_from;
        let prev = (sample + (derivative * f64::from(dt))?)?;
        let fresh = noise.sample_like(model_output)?;
        self.step_index = Some(i + 1);
        Ok((prev + (fresh * f64::from(sigma_up))?)?)
    }

    /// Forward diffusion to `timestep`: original + noise * sigma (img2img).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        let i = add_noise_index(self.step_index, self.begin_index, &self.timesteps, timestep)?;
        add_noise(original, noise, &self.sigmas, i)
    }

    fn set_begin_index(&mut self, begin_index: usize) {
        self.begin_index = Some(begin_index);
    }
}
