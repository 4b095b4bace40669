//! LCM (Luo et al., "Latent Consistency Models") multistep sampling exactly as diffusers 0.42's
//! `LCMScheduler` (schedulers/scheduling_lcm.py): timesteps sub-sampled from the distillation
//! schedule of `original_inference_steps`, the consistency boundary scalings c_skip / c_out, and
//! re-noising to the next timestep after every step but the last. Scalar arithmetic in float32,
//! as diffusers' tensors do it.

use candle_core::Tensor;
use serde::Deserialize;

use super::alphas::{
    add_noise, alpha_at, check_clip_sample_range, check_steps_offset, div_scalar, refuse_thresholding,
};
use super::config::{BetaSchedule, NoiseSchedule, PredictionType, TimestepSpacing};
use super::scheduler::{Scheduler, StepNoise};
use crate::error::{expected, Error, Result};

const CLASS: &str = "LCMScheduler";

/// The consistency model's sigma_data (diffusers: 0.5, not a config field).
const SIGMA_DATA: f32 = 0.5;

/// diffusers' `LCMScheduler` config (scheduler_config.json). Missing keys take the defaults of
/// `LCMScheduler.__init__` (SD1.5's noise schedule, unlike the other classes).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct LcmSchedulerConfig {
    /// Timesteps the model was trained on (1000).
    pub num_train_timesteps: usize,
    /// First beta of the linear schedules (0.00085).
    pub beta_start: f64,
    /// Last beta of the linear schedules (0.012).
    pub beta_end: f64,
    /// How betas are spread ("scaled_linear").
    pub beta_schedule: BetaSchedule,
    /// Explicit betas, one per training timestep, instead of a schedule (None).
    pub trained_betas: Option<Vec<f64>>,
    /// Steps of the distillation schedule the inference timesteps are picked from (50).
    pub original_inference_steps: usize,
    /// Clamp the predicted clean sample to ±`clip_sample_range` (false).
    pub clip_sample: bool,
    /// The clamp bound for `clip_sample` (1.0).
    pub clip_sample_range: f64,
    /// A step to a negative timestep lands on alpha 1 instead of `alphas_cumprod[0]` (true). LCM's
    /// own timesteps never go below 0, so this does not change its numbers (kept as diffusers has it).
    pub set_alpha_to_one: bool,
    /// Accepted as diffusers accepts it (0); LCM's `set_timesteps` does not use it.
    pub steps_offset: usize,
    /// What the model predicts ("epsilon").
    pub prediction_type: PredictionType,
    /// Dynamic thresholding (false). Pixel-space models only; not supported here.
    pub thresholding: bool,
    /// Dynamic thresholding's quantile (0.995); unused while thresholding is unsupported.
    pub dynamic_thresholding_ratio: f64,
    /// Dynamic thresholding's bound (1.0); unused while thresholding is unsupported.
    pub sample_max_value: f64,
    /// Accepted as diffusers accepts it ("leading"); LCM's `set_timesteps` does not use it.
    pub timestep_spacing: TimestepSpacing,
    /// The timestep's factor in the boundary scalings c_skip and c_out (10.0).
    pub timestep_scaling: f64,
    /// Rescale betas to zero terminal SNR (false).
    pub rescale_betas_zero_snr: bool,
}

impl Default for LcmSchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            trained_betas: None,
            original_inference_steps: 50,
            clip_sample: false,
            clip_sample_range: 1.0,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            timestep_scaling: 10.0,
            rescale_betas_zero_snr: false,
        }
    }
}

impl LcmSchedulerConfig {
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
        let train = self.num_train_timesteps;
        if !(1..=train).contains(&self.original_inference_steps) {
            return Err(expected(
                &format!("integer between 1 and scheduler.num_train_timesteps ({train})"),
                "scheduler.original_inference_steps",
                self.original_inference_steps,
            ));
        }
        if !(self.timestep_scaling.is_finite() && self.timestep_scaling > 0.0) {
            return Err(expected("finite number > 0", "scheduler.timestep_scaling", self.timestep_scaling));
        }
        refuse_thresholding(self.thresholding)?;
        check_clip_sample_range(self.clip_sample_range)?;
        check_steps_offset(self.steps_offset, train)
    }
}

/// An LCM scheduler set up for one run of `num_inference_steps` steps.
#[derive(Debug, Clone)]
pub struct LcmScheduler {
    config: LcmSchedulerConfig,
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    /// The index in `timesteps` of the next step (diffusers' `_step_index`; None before the first).
    step_index: Option<usize>,
    /// Where img2img starts (diffusers' `_begin_index`).
    begin_index: Option<usize>,
}

impl LcmScheduler {
    /// `LCMScheduler(**config)` followed by `set_timesteps(num_inference_steps)`.
    pub fn new(config: LcmSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        config.validate()?;
        let n = num_inference_steps;
        let original = config.original_inference_steps;
        if n == 0 || n > original {
            return Err(expected(
                &format!(
                    "integer between 1 and scheduler.original_inference_steps ({original}): LCM picks its timesteps \
                     from that many"
                ),
                "num_inference_steps",
                n,
            ));
        }
        // The distillation schedule k - 1, 2k - 1, ..., original * k - 1, noisiest first, then n
        // of them at floor(linspace(0, original, n, endpoint=False)).
        let k = config.num_train_timesteps / original;
        let origin: Vec<usize> = (1..=original).rev().map(|i| i * k - 1).collect();
        let timesteps =
            (0..n).map(|i| origin[(i as f64 * (original as f64 / n as f64)).floor() as usize] as f64).collect();
        let alphas_cumprod = config.noise_schedule().alphas_cumprod();
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        Ok(Self { config, timesteps, alphas_cumprod, final_alpha_cumprod, step_index: None, begin_index: None })
    }

    /// The config this scheduler runs with.
    pub fn config(&self) -> &LcmSchedulerConfig {
        &self.config
    }

    /// diffusers' `get_scalings_for_boundary_condition_discrete`: (c_skip, c_out), float32.
    pub fn boundary_scalings(&self, timestep: f64) -> (f32, f32) {
        let scaled = timestep as f32 * self.config.timestep_scaling as f32;
        let sd2 = SIGMA_DATA * SIGMA_DATA;
        let c_skip = sd2 / (scaled * scaled + sd2);
        let c_out = scaled / (scaled * scaled + sd2).sqrt();
        (c_skip, c_out)
    }

    /// diffusers' `_init_step_index`: the begin index, else the timestep's place in `timesteps`
    /// (the second of two equal ones, as `index_for_timestep` picks).
    fn init_step_index(&self, timestep: f64) -> Result<usize> {
        if let Some(begin) = self.begin_index {
            return Ok(begin);
        }
        let matches: Vec<usize> = (0..self.timesteps.len()).filter(|&i| self.timesteps[i] == timestep).collect();
        matches
            .get(if matches.len() > 1 { 1 } else { 0 })
            .copied()
            .ok_or_else(|| Error::Internal(format!("{CLASS}: timestep {timestep} is not one of this run's")))
    }
}

impl Scheduler for LcmScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// diffusers' `step`: the consistency function's denoised sample, then (every step but the
    /// last) fresh noise from `noise` to the next timestep's level.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn StepNoise,
    ) -> Result<Tensor> {
        let step_index = match self.step_index {
            Some(i) => i,
            None => self.init_step_index(timestep)?,
        };
        let prev_timestep = self.timesteps.get(step_index + 1).copied().unwrap_or(timestep);
        let a_t = alpha_at(&self.alphas_cumprod, timestep, CLASS)?;
        let a_prev = if prev_timestep >= 0.0 {
            alpha_at(&self.alphas_cumprod, prev_timestep, CLASS)?
        } else {
            self.final_alpha_cumprod
        };
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let (c_skip, c_out) = self.boundary_scalings(timestep);

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
        let denoised = ((x0 * f64::from(c_out))? + (sample * f64::from(c_skip))?)?;
        let prev = if step_index + 1 != self.timesteps.len() {
            let fresh = noise.sample_like(model_output)?;
            ((denoised * f64::from(a_prev.sqrt()))? + (fresh * f64::from(b_prev.sqrt()))?)?
        } else {
            denoised
        };
        self.step_index = Some(step_index + 1);
        Ok(prev)
    }

    /// Forward diffusion to `timestep`: sqrt(a) * original + sqrt(1 - a) * noise (img2img).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        add_noise(&self.alphas_cumprod, original, noise, timestep, CLASS)
    }

    /// img2img's first step is `timesteps()[begin_index]` (diffusers' `set_begin_index`).
    fn set_begin_index(&mut self, begin_index: usize) {
        self.begin_index = Some(begin_index);
    }
}
