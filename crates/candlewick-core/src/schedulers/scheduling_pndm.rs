//! PNDM (Liu et al., "Pseudo Numerical Methods for Diffusion Models on Manifolds") exactly as
//! diffusers 0.42's `PNDMScheduler` (schedulers/scheduling_pndm.py), the scheduler SD1.x folders
//! ship: Runge-Kutta warm-up steps (PRK) then linear multistep (PLMS) steps on a 4-entry history
//! of model outputs, or PLMS from the start with `skip_prk_steps` (SD1.5's config), where the
//! second timestep is run twice: 50 steps are 51 UNet calls. Scalar arithmetic in float32, as
//! diffusers' tensors do it.

use candle_core::Tensor;
use serde::Deserialize;

use super::alphas::{add_noise, alpha_at, check_steps_offset, checked_timesteps, div_scalar};
use super::config::{BetaSchedule, NoiseSchedule, PredictionType, TimestepSpacing};
use super::scheduler::{Scheduler, StepNoise};
use crate::error::{expected, Error, Result};

const CLASS: &str = "PNDMScheduler";

/// diffusers' `PNDMScheduler` config (scheduler_config.json). Missing keys take the defaults of
/// `PNDMScheduler.__init__`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PndmSchedulerConfig {
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
    /// Run PLMS from the first step instead of 12 Runge-Kutta warm-up calls (false; SD1.x: true).
    pub skip_prk_steps: bool,
    /// The last step lands on alpha 1 instead of `alphas_cumprod[0]` (false).
    pub set_alpha_to_one: bool,
    /// What the model predicts ("epsilon"; PNDM has no "sample").
    pub prediction_type: PredictionType,
    /// How inference timesteps are placed ("leading").
    pub timestep_spacing: TimestepSpacing,
    /// Added to the leading-spaced timesteps (0; SD1.x uses 1).
    pub steps_offset: usize,
}

impl Default for PndmSchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            skip_prk_steps: false,
            set_alpha_to_one: false,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
        }
    }
}

impl PndmSchedulerConfig {
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
        if self.prediction_type == PredictionType::Sample {
            return Err(expected(
                "\"epsilon\" or \"v_prediction\" (diffusers' PNDMScheduler has no \"sample\" prediction)",
                "scheduler.prediction_type",
                "\"sample\"",
            ));
        }
        check_steps_offset(self.steps_offset, self.num_train_timesteps)
    }
}

/// A PNDM scheduler set up for one run of `num_inference_steps` steps.
#[derive(Debug, Clone)]
pub struct PndmScheduler {
    config: PndmSchedulerConfig,
    num_inference_steps: usize,
    /// The PRK calls' timesteps then the PLMS calls' (diffusers' `scheduler.timesteps`).
    timesteps: Vec<f64>,
    /// How many of `timesteps` are PRK calls (0 with skip_prk_steps).
    prk_calls: usize,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    /// Calls stepped so far (diffusers' `counter`): picks PRK or PLMS and the PLMS warm-up.
    counter: usize,
    /// Past model outputs, the latest last; at most 4 (diffusers' `ets`).
    ets: Vec<Tensor>,
    /// The Runge-Kutta weighted sum of this PRK step's outputs (`cur_model_output`; None is 0).
    cur_model_output: Option<Tensor>,
    /// The sample a multi-call step started from (`cur_sample`).
    cur_sample: Option<Tensor>,
}

impl PndmScheduler {
    /// `PNDMScheduler(**config)` followed by `set_timesteps(num_inference_steps)`.
    pub fn new(config: PndmSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        config.validate()?;
        let n = num_inference_steps;
        let train = config.num_train_timesteps;
        if !config.skip_prk_steps && n < 4 {
            return Err(expected(
                "integer of at least 4 when scheduler.skip_prk_steps is false (PNDM's Runge-Kutta warm-up runs on \
                 the last 4 timesteps; set scheduler.skip_prk_steps to true for fewer steps)",
                "num_inference_steps",
                n,
            ));
        }
        // diffusers' `_timesteps`, from the least noisy up.
        let ts: Vec<usize> =
            checked_timesteps(config.timestep_spacing, train, config.steps_offset, n)?.into_iter().rev().collect();
        let (prk, plms): (Vec<usize>, Vec<usize>) = if config.skip_prk_steps {
            // concat(ts[:-1], ts[-2:-1], ts[-1:])[::-1]: the second timestep twice.
            let mut plms = ts[..n - 1].to_vec();
            if n >= 2 {
                plms.push(ts[n - 2]);
            }
            plms.push(ts[n - 1]);
            plms.reverse();
            (Vec::new(), plms)
        } else {
            // ts[-4:].repeat(2) + tile([0, train // n // 2], 4), [:-1].repeat(2)[1:-1], reversed:
            // each of the last 4 timesteps, its half-step and the next timestep, each twice.
            let half = train / n / 2;
            let pairs: Vec<usize> = ts[n - 4..].iter().flat_map(|&t| [t, t + half]).collect();
            let doubled: Vec<usize> = pairs[..pairs.len() - 1].iter().flat_map(|&t| [t, t]).collect();
            let mut prk = doubled[1..doubled.len() - 1].to_vec();
            prk.reverse();
            (prk, ts[..n - 3].iter().rev().copied().collect())
        };
        let prk_calls = prk.len();
        let timesteps = prk.into_iter().chain(plms).map(|t| t as f64).collect();
        let alphas_cumprod = config.noise_schedule().alphas_cumprod();
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        Ok(Self {
            config,
            num_inference_steps: n,
            timesteps,
            prk_calls,
            alphas_cumprod,
            final_alpha_cumprod,
            counter: 0,
            ets: Vec::new(),
            cur_model_output: None,
            cur_sample: None,
        })
    }

    /// The config this scheduler runs with.
    pub fn config(&self) -> &PndmSchedulerConfig {
        &self.config
    }

    /// num_train_timesteps // num_inference_steps.
    fn step_ratio(&self) -> i64 {
        (self.config.num_train_timesteps / self.num_inference_steps) as i64
    }

    /// One Runge-Kutta call (diffusers' `step_prk`): four calls make one step, from the sample
    /// the first started at, with the outputs weighted 1/6, 1/3, 1/3, 1/6.
    fn step_prk(&mut self, model_output: &Tensor, timestep: i64, sample: &Tensor) -> Result<Tensor> {
        let diff_to_prev = if self.counter % 2 == 1 { 0 } else { self.step_ratio() / 2 };
        let prev_timestep = timestep - diff_to_prev;
        let timestep = self.timesteps[self.counter / 4 * 4] as i64;
        let model_output = match self.counter % 4 {
            0 => {
                // 0 + 1/6 * model_output
                self.cur_model_output = Some((model_output * (1.0 / 6.0))?);
                self.ets.push(model_output.clone());
                self.cur_sample = Some(sample.clone());
                model_output.clone()
            }
            1 | 2 => {
                let sum = self.cur_model_output.take().ok_or_else(|| internal("no Runge-Kutta sum"))?;
                self.cur_model_output = Some((sum + (model_output * (1.0 / 3.0))?)?);
                model_output.clone()
            }
            _ => {
                let sum = self.cur_model_output.take().ok_or_else(|| internal("no Runge-Kutta sum"))?;
                (sum + (model_output * (1.0 / 6.0))?)?
            }
        };
        let cur_sample = self.cur_sample.clone().unwrap_or_else(|| sample.clone());
        let prev = self.prev_sample(&cur_sample, timestep, prev_timestep, &model_output)?;
        self.counter += 1;
        Ok(prev)
    }

    /// One linear multistep call (diffusers' `step_plms`): the outputs of up to the last four
    /// steps combined by the Adams-Bashforth weights. Without PRK, the first step runs twice: a
    /// first-order step, then the same step again with the mean of both calls' outputs.
    fn step_plms(&mut self, model_output: &Tensor, timestep: i64, sample: &Tensor) -> Result<Tensor> {
        if !self.config.skip_prk_steps && self.ets.len() < 3 {
            return Err(internal("PLMS before the Runge-Kutta warm-up"));
        }
        let ratio = self.step_ratio();
        let (mut timestep, mut prev_timestep) = (timestep, timestep - ratio);
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.remove(0);
            }
            self.ets.push(model_output.clone());
        } else {
            prev_timestep = timestep;
            timestep += ratio;
        }
        let mut sample = sample.clone();
        let e = &self.ets;
        let len = e.len();
        let model_output = if len == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            model_output.clone()
        } else if len == 1 && self.counter == 1 {
            sample = self.cur_sample.take().ok_or_else(|| internal("no sample to repeat the first step from"))?;
            ((model_output + &e[0])? / 2.0)?
        } else if len == 2 {
            (((&e[1] * 3.0)? - &e[0])? / 2.0)?
        } else if len == 3 {
            div_scalar(&((((&e[2] * 23.0)? - (&e[1] * 16.0)?)? + (&e[0] * 5.0)?)?), 12.0)?
        } else {
            let sum = ((((&e[3] * 55.0)? - (&e[2] * 59.0)?)? + (&e[1] * 37.0)?)? - (&e[0] * 9.0)?)?;
            (sum * (1.0 / 24.0))?
        };
        let prev = self.prev_sample(&sample, timestep, prev_timestep, &model_output)?;
        self.counter += 1;
        Ok(prev)
    }

    /// x_(t-δ) from x_t, formula (9) of the PNDM paper (diffusers' `_get_prev_sample`).
    fn prev_sample(&self, sample: &Tensor, timestep: i64, prev_timestep: i64, model_output: &Tensor) -> Result<Tensor> {
        let a_t = alpha_at(&self.alphas_cumprod, timestep as f64, CLASS)?;
        let a_prev = if prev_timestep >= 0 {
            alpha_at(&self.alphas_cumprod, prev_timestep as f64, CLASS)?
        } else {
            self.final_alpha_cumprod
        };
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let model_output = match self.config.prediction_type {
            PredictionType::VPrediction => {
                ((model_output * f64::from(a_t.sqrt()))? + (sample * f64::from(b_t.sqrt()))?)?
            }
            _ => model_output.clone(),
        };
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        let update = div_scalar(&(model_output * f64::from(a_prev - a_t))?, denom)?;
        Ok(((sample * f64::from(sample_coeff))? - update)?)
    }
}

fn internal(what: &str) -> Error {
    Error::Internal(format!("{CLASS}: {what}"))
}

impl Scheduler for PndmScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// diffusers' `step`: a Runge-Kutta call while the counter is among the PRK calls, else a
    /// PLMS call. Deterministic: `noise` is never drawn.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _noise: &mut dyn StepNoise,
    ) -> Result<Tensor> {
        if timestep.fract() != 0.0 {
            return Err(internal(&format!("timestep {timestep} is not a whole number")));
        }
        let timestep = timestep as i64;
        if !self.config.skip_prk_steps && self.counter < self.prk_calls {
            self.step_prk(model_output, timestep, sample)
        } else {
            self.step_plms(model_output, timestep, sample)
        }
    }

    /// Forward diffusion to `timestep`: sqrt(a) * original + sqrt(1 - a) * noise (img2img).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        add_noise(&self.alphas_cumprod, original, noise, timestep, CLASS)
    }

    /// diffusers' PNDMScheduler has no `set_begin_index`: img2img runs the timesteps from the
    /// begin index with the step counter from 0 (the first call it makes is PNDM's first call).
    fn set_begin_index(&mut self, _begin_index: usize) {}
}
