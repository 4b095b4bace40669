//! Euler (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
//! Algorithm 2 without churn) exactly as diffusers 0.42's `EulerDiscreteScheduler`
//! (schedulers/scheduling_euler_discrete.py): the sample lives at noise level sigma, the model
//! sees it divided by sqrt(sigma^2 + 1), and each step moves along the ODE derivative from one
//! sigma to the next. Also the pieces the other k-diffusion-style schedulers (Euler ancestral,
//! Heun) share with it: their timestep spacing, step index and sigma scalings.

use candle_core::Tensor;
use serde::Deserialize;

use super::config::{
    BetaSchedule, FinalSigmasType, InterpolationType, NoiseSchedule, PredictionType, TimestepSpacing, TimestepType,
};
use super::scheduler::{Scheduler, StepNoise};
use super::{betas, sigmas};
use crate::error::{expected, Error, Result};

/// diffusers' `EulerDiscreteScheduler` config (scheduler_config.json). Missing keys take the
/// defaults of `EulerDiscreteScheduler.__init__`. The step's churn arguments (s_churn, s_tmin,
/// s_tmax, s_noise) are diffusers' defaults: no churn, a deterministic step.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct EulerDiscreteSchedulerConfig {
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
    /// What the model predicts ("epsilon").
    pub prediction_type: PredictionType,
    /// How the inference sigmas are read off the training ones ("linear").
    pub interpolation_type: InterpolationType,
    /// Karras et al.'s sigmas (rho 7) between sigma_min and sigma_max (false).
    pub use_karras_sigmas: bool,
    /// Sigmas evenly spaced in log sigma between sigma_min and sigma_max (false).
    pub use_exponential_sigmas: bool,
    /// Sigmas from a Beta(0.6, 0.6) distribution (false). Not supported: true is refused.
    pub use_beta_sigmas: bool,
    /// The smallest sigma of Karras/exponential sigmas (None: the schedule's smallest).
    pub sigma_min: Option<f64>,
    /// The largest sigma of Karras/exponential sigmas (None: the schedule's largest).
    pub sigma_max: Option<f64>,
    /// How inference timesteps are placed ("linspace").
    pub timestep_spacing: TimestepSpacing,
    /// What the model is given as its timestep ("discrete").
    pub timestep_type: TimestepType,
    /// Added to the leading-spaced timesteps (0; SD1.x uses 1).
    pub steps_offset: usize,
    /// Rescale betas to zero terminal SNR (false).
    pub rescale_betas_zero_snr: bool,
    /// The sigma after the last step ("zero").
    pub final_sigmas_type: FinalSigmasType,
}

impl Default for EulerDiscreteSchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            interpolation_type: InterpolationType::Linear,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            timestep_spacing: TimestepSpacing::Linspace,
            timestep_type: TimestepType::Discrete,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            final_sigmas_type: FinalSigmasType::Zero,
        }
    }
}

impl EulerDiscreteSchedulerConfig {
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
        check_sigma_kind(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?;
        check_steps_offset(self.steps_offset, self.num_train_timesteps)?;
        for (name, value) in [("sigma_min", self.sigma_min), ("sigma_max", self.sigma_max)] {
            if let Some(v) = value.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(expected("finite number > 0 or null", &format!("scheduler.{name}"), v));
            }
        }
        if let (Some(min), Some(max)) = (self.sigma_min, self.sigma_max) {
            if max <= min {
                return Err(expected(&format!("number above scheduler.sigma_min ({min})"), "scheduler.sigma_max", max));
            }
        }
        Ok(())
    }
}

/// diffusers' rule: at most one of the three sigma schedules; beta sigmas (scipy's Beta
/// quantile function) are not implemented here.
pub(crate) fn check_sigma_kind(karras: bool, exponential: bool, beta: bool) -> Result<()> {
    if beta {
        return Err(expected(
            "false (beta sigmas are not supported; use_karras_sigmas or use_exponential_sigmas are)",
            "scheduler.use_beta_sigmas",
            true,
        ));
    }
    if karras && exponential {
        return Err(expected(
            "false when scheduler.use_karras_sigmas is true (only one sigma schedule can be used)",
            "scheduler.use_exponential_sigmas",
            true,
        ));
    }
    Ok(())
}

pub(crate) fn check_steps_offset(steps_offset: usize, train: usize) -> Result<()> {
    if steps_offset >= train {
        return Err(expected(
            &format!("integer below scheduler.num_train_timesteps ({train})"),
            "scheduler.steps_offset",
            steps_offset,
        ));
    }
    Ok(())
}

pub(crate) fn check_steps(n: usize, train: usize) -> Result<()> {
    if n == 0 || n > train {
        return Err(expected(&format!("integer between 1 and {train}"), "num_inference_steps", n));
    }
    Ok(())
}

/// An Euler scheduler set up for one run of `num_inference_steps` steps.
#[derive(Debug, Clone)]
pub struct EulerDiscreteScheduler {
    config: EulerDiscreteSchedulerConfig,
    timesteps: Vec<f64>,
    /// One per timestep plus the final one, float32 as diffusers holds them.
    sigmas: Vec<f32>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl EulerDiscreteScheduler {
    /// `EulerDiscreteScheduler(**config)` followed by `set_timesteps(num_inference_steps)`.
    pub fn new(config: EulerDiscreteSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        config.validate()?;
        let n = num_inference_steps;
        check_steps(n, config.num_train_timesteps)?;
        let train_sigmas = training_sigmas(&config.noise_schedule());
        let log_sigmas = sigmas::log_sigmas(&train_sigmas);
        let mut timesteps: Vec<f32> =
            spaced_timesteps(config.timestep_spacing, config.num_train_timesteps, config.steps_offset, n);
        let mut schedule: Vec<f64> = match config.interpolation_type {
            InterpolationType::Linear => interpolated(&timesteps, &train_sigmas),
            // torch.linspace(log(sigmas[-1]), log(sigmas[0]), n + 1).exp(), float32 throughout:
            // n + 1 sigmas, so the last step ends on the smallest training sigma.
            InterpolationType::LogLinear => {
                let (high, low) = (train_sigmas[train_sigmas.len() - 1], train_sigmas[0]);
                let logs = betas::linspace_f32(sigmas::np_log_f32(high).into(), sigmas::np_log_f32(low).into(), n + 1);
                logs.into_iter().map(|l| f64::from(l.exp())).collect()
            }
        };
        if config.use_karras_sigmas || config.use_exponential_sigmas {
            let min = config.sigma_min.unwrap_or(schedule[schedule.len() - 1]);
            let max = config.sigma_max.unwrap_or(schedule[0]);
            schedule =
                if config.use_karras_sigmas { sigmas::karras(min, max, n) } else { sigmas::exponential(min, max, n) };
            timesteps = schedule.iter().map(|&s| sigmas::sigma_to_t(s, &log_sigmas) as f32).collect();
        }
        let last = match config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => train_sigmas[0],
        };
        let sigmas: Vec<f32> = schedule.iter().map(|&s| s as f32).chain([last]).collect();
        if config.timestep_type == TimestepType::Continuous && config.prediction_type == PredictionType::VPrediction {
            timesteps = sigmas[..sigmas.len() - 1].iter().map(|s| 0.25 * s.ln()).collect();
        }
        let timesteps = timesteps.into_iter().map(f64::from).collect();
        Ok(Self { config, timesteps, sigmas, step_index: None, begin_index: None })
    }

    /// The sigmas, one per timestep plus the final one (diffusers' `scheduler.sigmas`).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The config this scheduler runs with.
    pub fn config(&self) -> &EulerDiscreteSchedulerConfig {
        &self.config
    }
}

impl Scheduler for EulerDiscreteScheduler {
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

    /// diffusers' `step(model_output, timestep, sample)` with s_churn 0: x + (x - x0) / sigma * (sigma_next - sigma).
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _noise: &mut dyn StepNoise,
    ) -> Result<Tensor> {
        let i = current_index(self.step_index, self.begin_index, &self.timesteps, timestep)?;
        let (sigma, sigma_next) = sigma_pair(&self.sigmas, i)?;
        let pred_original_sample = denoised(self.config.prediction_type, model_output, sample, sigma)?;
        let derivative = div_scalar(&(sample - pred_original_sample)?, sigma)?;
        let dt = sigma_next - sigma;
        self.step_index = Some(i + 1);
        Ok((sample + (derivative * f64::from(dt))?)?)
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

/// The training sigmas of a config, index = training timestep (float32). With zero terminal SNR
/// the last alphas_cumprod is 2^-24 instead of 0, so the largest sigma is finite (4096).
pub(crate) fn training_sigmas(schedule: &NoiseSchedule<'_>) -> Vec<f32> {
    sigmas::training_sigmas(&schedule.alphas_cumprod_for_sigmas())
}

/// `np.interp(timesteps, np.arange(len(sigmas)), sigmas)` (float64).
pub(crate) fn interpolated(timesteps: &[f32], train_sigmas: &[f32]) -> Vec<f64> {
    let xp: Vec<f64> = (0..train_sigmas.len()).map(|i| i as f64).collect();
    let fp: Vec<f64> = train_sigmas.iter().map(|&s| f64::from(s)).collect();
    timesteps.iter().map(|&t| sigmas::interp(f64::from(t), &xp, &fp)).collect()
}

/// The timesteps of Euler, Euler ancestral and Heun's `set_timesteps` (float32, noisiest first):
/// linspace `np.linspace(0, train - 1, n, dtype=float32)[::-1]` (fractional), leading
/// `(arange(n) * (train // n))[::-1] + steps_offset`, trailing `round(arange(train, 0, -train / n)) - 1`.
/// Where numpy's float arange yields n + 1 values (n = 61, 103, ... of 1000), diffusers keeps the
/// extra timestep, -1 (its sigma is the smallest training sigma), and so does this.
pub(crate) fn spaced_timesteps(spacing: TimestepSpacing, train: usize, steps_offset: usize, n: usize) -> Vec<f32> {
    match spacing {
        TimestepSpacing::Linspace => {
            sigmas::linspace(0.0, (train - 1) as f64, n).into_iter().rev().map(|t| t as f32).collect()
        }
        TimestepSpacing::Leading => (0..n).rev().map(|i| (i * (train / n)) as f32 + steps_offset as f32).collect(),
        TimestepSpacing::Trailing => {
            let start = train as f64;
            let step = -(train as f64 / n as f64);
            let len = ((0.0 - start) / step).ceil() as usize;
            let delta = (start + step) - start;
            (0..len)
                .map(|i| match i {
                    0 => start,
                    1 => start + step,
                    _ => start + i as f64 * delta,
                })
                .map(|v| v.round_ties_even() as f32 - 1.0)
                .collect()
        }
    }
}

/// `sigmas.max()` for linspace/trailing spacing, else sqrt(max^2 + 1), in float32.
pub(crate) fn init_noise_sigma(sigmas: &[f32], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => f64::from(max),
        TimestepSpacing::Leading => f64::from((max * max + 1.0).sqrt()),
    }
}

/// diffusers' `index_for_timestep`: the timestep's position in the schedule, the second one if it
/// appears twice (so that a run started mid-schedule does not skip a sigma).
pub(crate) fn index_for_timestep(timesteps: &[f64], timestep: f64) -> Result<usize> {
    let mut found = timesteps.iter().enumerate().filter(|(_, &t)| t == timestep).map(|(i, _)| i);
    match (found.next(), found.next()) {
        (_, Some(second)) => Ok(second),
        (Some(first), None) => Ok(first),
        (None, None) => Err(Error::Internal(format!("timestep {timestep} is not one of the scheduler's timesteps"))),
    }
}

/// The step index of a call: the running one, else the begin index, else the timestep's position
/// (diffusers' `_init_step_index`, done by whichever of scale_model_input and step comes first).
/// A call past the last timestep is an error (a bug of the caller), not a step to sigma infinity.
pub(crate) fn current_index(
    step: Option<usize>,
    begin: Option<usize>,
    timesteps: &[f64],
    timestep: f64,
) -> Result<usize> {
    match step.or(begin) {
        Some(i) if i >= timesteps.len() => {
            Err(Error::Internal(format!("scheduler call {i} is past the last of {} timesteps", timesteps.len())))
        }
        Some(i) => Ok(i),
        None => index_for_timestep(timesteps, timestep),
    }
}

/// The sigma index `add_noise` uses: the timestep's position before any step without a begin
/// index, else the running step index, else the begin index.
pub(crate) fn add_noise_index(
    step: Option<usize>,
    begin: Option<usize>,
    timesteps: &[f64],
    timestep: f64,
) -> Result<usize> {
    match (begin, step) {
        (None, _) => index_for_timestep(timesteps, timestep),
        (Some(_), Some(i)) | (Some(i), None) => Ok(i),
    }
}

/// `sigmas[i]` and `sigmas[i + 1]`; past the end is a bug (a step after the last timestep).
pub(crate) fn sigma_pair(sigmas: &[f32], i: usize) -> Result<(f32, f32)> {
    match (sigmas.get(i), sigmas.get(i + 1)) {
        (Some(&a), Some(&b)) => Ok((a, b)),
        _ => Err(Error::Internal(format!("scheduler step {i} is past the last of {} sigmas", sigmas.len()))),
    }
}

/// `original + noise * sigmas[i]`.
pub(crate) fn add_noise(original: &Tensor, noise: &Tensor, sigmas: &[f32], i: usize) -> Result<Tensor> {
    let sigma = sigmas.get(i).ok_or_else(|| Error::Internal(format!("no sigma at index {i}")))?;
    Ok((original + (noise * f64::from(*sigma))?)?)
}

/// `sample / ((sigma**2 + 1) ** 0.5)` with a float32 scalar, as diffusers' scale_model_input.
pub(crate) fn scale_by_sigma(sample: &Tensor, sigma: f32) -> Result<Tensor> {
    div_scalar(sample, (sigma * sigma + 1.0).sqrt())
}

/// `tensor / s` as torch divides by a float32 scalar (a true division; candle's `/ f64`
/// multiplies by the reciprocal).
pub(crate) fn div_scalar(t: &Tensor, s: f32) -> Result<Tensor> {
    let s = Tensor::new(s, t.device())?.to_dtype(t.dtype())?;
    Ok(t.broadcast_div(&s)?)
}

/// The denoised sample x0 of an epsilon or v-prediction model at noise level sigma:
/// `sample - sigma * eps`, or `v * (-sigma / sqrt(sigma^2 + 1)) + sample / (sigma^2 + 1)`.
/// A "sample" model's output is x0 itself.
pub(crate) fn denoised(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f32,
) -> Result<Tensor> {
    Ok(match prediction {
        PredictionType::Epsilon => (sample - (model_output * f64::from(sigma))?)?,
        PredictionType::VPrediction => {
            let c_out = -sigma / (sigma * sigma + 1.0).sqrt();
            ((model_output * f64::from(c_out))? + div_scalar(sample, sigma * sigma + 1.0)?)?
        }
        PredictionType::Sample => model_output.clone(),
    })
}
