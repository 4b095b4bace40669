//! DDPM (Ho et al., "Denoising Diffusion Probabilistic Models") ancestral sampling exactly as
//! diffusers 0.42's `DDPMScheduler` (schedulers/scheduling_ddpm.py): the posterior mean of eq. 7
//! plus fresh noise at every timestep above 0, with the scalar arithmetic in float32 as
//! diffusers' tensors do it.

use candle_core::Tensor;
use serde::Deserialize;

use super::alphas::{
    add_noise, alpha_at, check_clip_sample_range, check_steps_offset, checked_timesteps, div_scalar,
    refuse_thresholding,
};
use super::config::{BetaSchedule, NoiseSchedule, PredictionType, TimestepSpacing, VarianceType};
use super::scheduler::{Scheduler, StepNoise};
use crate::error::{expected, Error, Result};

const CLASS: &str = "DDPMScheduler";

/// diffusers' `DDPMScheduler` config (scheduler_config.json). Missing keys take the defaults of
/// `DDPMScheduler.__init__`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct DdpmSchedulerConfig {
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
    /// How the step noise is scaled ("fixed_small"). "learned" and "learned_range" need a model
    /// that predicts its variance (8 output channels); "fixed_large_log" makes diffusers' step NaN.
    pub variance_type: VarianceType,
    /// Clamp the predicted clean sample to ±`clip_sample_range` (true).
    pub clip_sample: bool,
    /// What the model predicts ("epsilon").
    pub prediction_type: PredictionType,
    /// Dynamic thresholding (false). Pixel-space models only; not supported here.
    pub thresholding: bool,
    /// Dynamic thresholding's quantile (0.995); unused while thresholding is unsupported.
    pub dynamic_thresholding_ratio: f64,
    /// The clamp bound for `clip_sample` (1.0).
    pub clip_sample_range: f64,
    /// Dynamic thresholding's bound (1.0); unused while thresholding is unsupported.
    pub sample_max_value: f64,
    /// How inference timesteps are placed ("leading").
    pub timestep_spacing: TimestepSpacing,
    /// Added to the leading-spaced timesteps (0; SD1.x uses 1).
    pub steps_offset: usize,
    /// Rescale betas to zero terminal SNR (false).
    pub rescale_betas_zero_snr: bool,
}

impl Default for DdpmSchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            variance_type: VarianceType::FixedSmall,
            clip_sample: true,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            clip_sample_range: 1.0,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
        }
    }
}

impl DdpmSchedulerConfig {
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
        match self.variance_type {
            VarianceType::Learned | VarianceType::LearnedRange => {
                return Err(expected(
                    "\"fixed_small\", \"fixed_small_log\" or \"fixed_large\" (a learned variance needs a model that \
                     predicts it in extra output channels; Stable Diffusion UNets output 4 channels)",
                    "scheduler.variance_type",
                    format!("{:?}", self.variance_type.as_str()),
                ));
            }
            VarianceType::FixedLargeLog => {
                return Err(expected(
                    "\"fixed_small\", \"fixed_small_log\" or \"fixed_large\" (diffusers' DDPMScheduler takes the \
                     square root of the negative log(beta) of \"fixed_large_log\": every step is NaN, a black image)",
                    "scheduler.variance_type",
                    "\"fixed_large_log\"",
                ));
            }
            _ => {}
        }
        refuse_thresholding(self.thresholding)?;
        check_clip_sample_range(self.clip_sample_range)?;
        check_steps_offset(self.steps_offset, self.num_train_timesteps)
    }
}

/// A DDPM scheduler set up for one run of `num_inference_steps` steps.
#[derive(Debug, Clone)]
pub struct DdpmScheduler {
    config: DdpmSchedulerConfig,
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f32>,
}

impl DdpmScheduler {
    /// `DDPMScheduler(**config)` followed by `set_timesteps(num_inference_steps)`.
    pub fn new(config: DdpmSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        config.validate()?;
        let timesteps = checked_timesteps(
            config.timestep_spacing,
            config.num_train_timesteps,
            config.steps_offset,
            num_inference_steps,
        )?;
        let alphas_cumprod = config.noise_schedule().alphas_cumprod();
        Ok(Self { timesteps: timesteps.into_iter().map(|t| t as f64).collect(), config, alphas_cumprod })
    }

    /// The config this scheduler runs with.
    pub fn config(&self) -> &DdpmSchedulerConfig {
        &self.config
    }

    /// diffusers' `previous_timestep`: the timestep after `timestep` in `timesteps`, -1 after the last.
    fn previous_timestep(&self, timestep: f64) -> Result<f64> {
        let index = self
            .timesteps
            .iter()
            .position(|&t| t == timestep)
            .ok_or_else(|| Error::Internal(format!("{CLASS}: timestep {timestep} is not one of this run's")))?;
        Ok(self.timesteps.get(index + 1).copied().unwrap_or(-1.0))
    }

    /// The step noise's scale for `variance_type` (diffusers' `_get_variance` and the square root
    /// `step` takes of it), float32.
    fn noise_scale(&self, a_t: f32, a_prev: f32) -> f32 {
        let current_beta_t = 1.0 - a_t / a_prev;
        // The posterior variance, clamped as diffusers does before any log.
        let variance = ((1.0 - a_prev) / (1.0 - a_t) * current_beta_t).max(1e-20);
        match self.config.variance_type {
            VarianceType::FixedSmallLog => (0.5 * variance.ln()).exp(),
            VarianceType::FixedLarge => current_beta_t.sqrt(),
            // fixed_small; the other types are refused by validate().
            _ => variance.sqrt(),
        }
    }
}

impl Scheduler for DdpmScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// diffusers' `step`: the posterior mean from the predicted clean sample, plus noise drawn
    /// from `noise` at every timestep above 0.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn StepNoise,
    ) -> Result<Tensor> {
        let prev_t = self.previous_timestep(timestep)?;
        let a_t = alpha_at(&self.alphas_cumprod, timestep, CLASS)?;
        let a_prev = if prev_t >= 0.0 { alpha_at(&self.alphas_cumprod, prev_t, CLASS)? } else { 1.0 };
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let current_alpha_t = a_t / a_prev;
        let current_beta_t = 1.0 - current_alpha_t;

        let x0 = match self.config.prediction_type {
            PredictionType::Epsilon => div_scalar(&(sample - (model_output * f64::from(b_t.sqrt()))?)?, a_t.sqrt())?,
            PredictionType::Sample => model_output.clone(),
            PredictionType::VPrediction => {
                ((sample * f64::from(a_t.sqrt()))? - (model_output * f64::from(b_t.sqrt()))?)?
            }
        };
        let x0 = if self.config.clip_sample {
            let r = self.config.clip_sample_range as f32;
            x0.clamp(-r, r)?
        } else {
            x0
        };

        let x0_coeff = (a_prev.sqrt() * current_beta_t) / b_t;
        let sample_coeff = current_alpha_t.sqrt() * b_prev / b_t;
        let prev = ((x0 * f64::from(x0_coeff))? + (sample * f64::from(sample_coeff))?)?;
        if timestep > 0.0 {
            let variance_noise = noise.sample_like(model_output)?;
            let scale = self.noise_scale(a_t, a_prev);
            return Ok((prev + (variance_noise * f64::from(scale))?)?);
        }
        Ok(prev)
    }

    /// Forward diffusion to `timestep`: sqrt(a) * original + sqrt(1 - a) * noise (img2img).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        add_noise(&self.alphas_cumprod, original, noise, timestep, CLASS)
    }

    /// diffusers' DDPMScheduler has no `set_begin_index`: each step finds its place in
    /// `timesteps` from its timestep.
    fn set_begin_index(&mut self, _begin_index: usize) {}
}
