//! Heun's method (Karras et al. 2022, Algorithm 1 without churn) exactly as diffusers 0.42's
//! `HeunDiscreteScheduler` (schedulers/scheduling_heun_discrete.py): each step is an Euler step to
//! the next sigma (first UNet call) corrected by the average of the derivatives at both ends
//! (second UNet call, at the next sigma). The timesteps are diffusers' `scheduler.timesteps`, the
//! second-order ones interleaved: [t0, t1, t1, t2, t2, ...], 2n - 1 UNet calls for n steps (the
//! last step, to sigma 0, is first order).

use candle_core::Tensor;
use serde::Deserialize;

use super::config::{BetaSchedule, NoiseSchedule, PredictionType, TimestepSpacing};
use super::scheduler::{Scheduler, StepNoise};
use super::scheduling_euler_discrete::{
    add_noise, add_noise_index, check_sigma_kind, check_steps, check_steps_offset, current_index, denoised, div_scalar,
    init_noise_sigma, interpolated, scale_by_sigma, spaced_timesteps, training_sigmas,
};
use super::sigmas;
use crate::error::{expected, Error, Result};

/// diffusers' `HeunDiscreteScheduler` config (scheduler_config.json). Missing keys take the
/// defaults of `HeunDiscreteScheduler.__init__` (note its Stable Diffusion betas).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct HeunDiscreteSchedulerConfig {
    /// Timesteps the model was trained on (1000).
    pub num_train_timesteps: usize,
    /// First beta of the linear schedules (0.00085).
    pub beta_start: f64,
    /// Last beta of the linear schedules (0.012).
    pub beta_end: f64,
    /// How betas are spread ("linear"; diffusers' "exp" is not supported).
    pub beta_schedule: BetaSchedule,
    /// Explicit betas, one per training timestep, instead of a schedule (None).
    pub trained_betas: Option<Vec<f64>>,
    /// What the model predicts ("epsilon").
    pub prediction_type: PredictionType,
    /// Karras et al.'s sigmas (rho 7) over the schedule's sigma range (false).
    pub use_karras_sigmas: bool,
    /// Sigmas evenly spaced in log sigma over the schedule's sigma range (false).
    pub use_exponential_sigmas: bool,
    /// Sigmas from a Beta(0.6, 0.6) distribution (false). Not supported: true is refused.
    pub use_beta_sigmas: bool,
    /// Clamp the predicted clean sample to ±`clip_sample_range` (false).
    pub clip_sample: bool,
    /// The clamp bound for `clip_sample` (1.0).
    pub clip_sample_range: f64,
    /// How inference timesteps are placed ("linspace").
    pub timestep_spacing: TimestepSpacing,
    /// Added to the leading-spaced timesteps (0; SD1.x uses 1).
    pub steps_offset: usize,
}

impl Default for HeunDiscreteSchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            clip_sample: false,
            clip_sample_range: 1.0,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
        }
    }
}

impl HeunDiscreteSchedulerConfig {
    pub(crate) fn noise_schedule(&self) -> NoiseSchedule<'_> {
        NoiseSchedule {
            num_train_timesteps: self.num_train_timesteps,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            beta_schedule: self.beta_schedule,
            trained_betas: self.trained_betas.as_deref(),
            rescale_betas_zero_snr: false,
        }
    }

    /// Every check on the config, in one place (values from scheduler_config.json included).
    pub fn validate(&self) -> Result<()> {
        self.noise_schedule().validate()?;
        check_sigma_kind(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?;
        if !(self.clip_sample_range.is_finite() && self.clip_sample_range > 0.0) {
            return Err(expected("finite number > 0", "scheduler.clip_sample_range", self.clip_sample_range));
        }
        check_steps_offset(self.steps_offset, self.num_train_timesteps)
    }
}

/// What the first-order call of a step leaves for the second: its derivative, its sigma
/// difference and its sample.
#[derive(Debug, Clone)]
struct FirstOrder {
    derivative: Tensor,
    dt: f32,
    sample: Tensor,
}

/// A Heun scheduler set up for one run of `num_inference_steps` steps.
#[derive(Debug, Clone)]
pub struct HeunDiscreteScheduler {
    config: HeunDiscreteSchedulerConfig,
    /// One per UNet call: [t0, t1, t1, ..., t(n-1), t(n-1)].
    timesteps: Vec<f64>,
    /// [s0, s1, s1, ..., s(n-1), s(n-1), 0], float32 as diffusers holds them.
    sigmas: Vec<f32>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
    /// Some between a step's first-order call and its second-order one.
    pending: Option<FirstOrder>,
}

impl HeunDiscreteScheduler {
    /// `HeunDiscreteScheduler(**config)` followed by `set_timesteps(num_inference_steps)`.
    pub fn new(config: HeunDiscreteSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        config.validate()?;
        let n = num_inference_steps;
        check_steps(n, config.num_train_timesteps)?;
        let train_sigmas = training_sigmas(&config.noise_schedule());
        let mut timesteps: Vec<f32> =
            spaced_timesteps(config.timestep_spacing, config.num_train_timesteps, config.steps_offset, n);
        let mut schedule = interpolated(&timesteps, &train_sigmas);
        if config.use_karras_sigmas || config.use_exponential_sigmas {
            let log_sigmas = sigmas::log_sigmas(&train_sigmas);
            let (min, max) = (schedule[schedule.len() - 1], schedule[0]);
            schedule =
                if config.use_karras_sigmas { sigmas::karras(min, max, n) } else { sigmas::exponential(min, max, n) };
            timesteps = schedule.iter().map(|&s| sigmas::sigma_to_t(s, &log_sigmas) as f32).collect();
        }
        let base: Vec<f32> = schedule.iter().map(|&s| s as f32).chain([0.0]).collect();
        // torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]]), and the same for
        // the timesteps without the final one.
        let last = base.len() - 1;
        let sigmas =
            std::iter::once(base[0]).chain(base[1..last].iter().flat_map(|&s| [s, s])).chain([base[last]]).collect();
        let timesteps =
            std::iter::once(timesteps[0]).chain(timesteps[1..].iter().flat_map(|&t| [t, t])).map(f64::from).collect();
        Ok(Self { config, timesteps, sigmas, step_index: None, begin_index: None, pending: None })
    }

    /// The interleaved sigmas (diffusers' `scheduler.sigmas`).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The config this scheduler runs with.
    pub fn config(&self) -> &HeunDiscreteSchedulerConfig {
        &self.config
    }

    fn sigma(&self, i: usize) -> Result<f32> {
        self.sigmas
            .get(i)
            .copied()
            .ok_or_else(|| Error::Internal(format!("Heun step {i} is past the last of {} sigmas", self.sigmas.len())))
    }
}

impl Scheduler for HeunDiscreteScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        init_noise_sigma(&self.sigmas, self.config.timestep_spacing)
    }

    fn scale_model_input(&self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let i = current_index(self.step_index, self.begin_index, &self.timesteps, timestep)?;
        scale_by_sigma(sample, self.sigma(i)?)
    }

    /// diffusers' `step(model_output, timestep, sample)`: a first-order call takes an Euler step
    /// from sigma to sigma_next and remembers it; the second-order call redoes it from the same
    /// sample with the average of both derivatives.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _noise: &mut dyn StepNoise,
    ) -> Result<Tensor> {
        let i = current_index(self.step_index, self.begin_index, &self.timesteps, timestep)?;
        let first_order = self.pending.is_none();
        let (sigma, sigma_next) = if first_order {
            (self.sigma(i)?, self.sigma(i + 1)?)
        } else {
            (
                self.sigma(i.checked_sub(1).ok_or_else(|| Error::Internal("Heun second order at step 0".into()))?)?,
                self.sigma(i)?,
            )
        };
        let sigma_input = if first_order { sigma } else { sigma_next };
        let mut pred_original_sample = denoised(self.config.prediction_type, model_output, sample, sigma_input)?;
        if self.config.clip_sample {
            let r = self.config.clip_sample_range as f32;
            pred_original_sample = pred_original_sample.clamp(-r, r)?;
        }
        let difference = (sample - pred_original_sample)?;
        let prev = match self.pending.take() {
            None => {
                let derivative = div_scalar(&difference, sigma)?;
                let dt = sigma_next - sigma;
                let prev = (sample + (&derivative * f64::from(dt))?)?;
                self.pending = Some(FirstOrder { derivative, dt, sample: sample.clone() });
                prev
            }
            Some(first) => {
                let derivative = ((first.derivative + div_scalar(&difference, sigma_next)?)? * 0.5)?;
                (first.sample + (derivative * f64::from(first.dt))?)?
            }
        };
        self.step_index = Some(i + 1);
        Ok(prev)
    }

    /// Forward diffusion to `timestep`: original + noise * sigma (img2img).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        let i = add_noise_index(self.step_index, self.begin_index, &self.timesteps, timestep)?;
        add_noise(original, noise, &self.sigmas, i)
    }

    /// Two UNet calls a step.
    fn order(&self) -> usize {
        2
    }

    fn set_begin_index(&mut self, begin_index: usize) {
        self.begin_index = Some(begin_index);
    }
}
