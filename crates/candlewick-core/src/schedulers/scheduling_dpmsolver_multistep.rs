//! DPM-Solver and DPM-Solver++ multistep (Lu et al. 2022), the "DPM++ 2M" family, exactly as
//! diffusers 0.42's `DPMSolverMultistepScheduler` (schedulers/scheduling_dpmsolver_multistep.py):
//! the same timesteps and sigmas, the first/second/third-order updates with their float32 scalar
//! arithmetic, the lower-order warm-up and final steps, and the SDE variants' noise each step.

use candle_core::Tensor;
use serde::{Deserialize, Deserializer};

use super::alphas::{check_steps_offset, div_scalar};
use super::config::{
    AlgorithmType, BetaSchedule, DpmSolverType, FinalSigmasType, NoiseSchedule, PredictionType, TimestepSpacing,
    VarianceType,
};
use super::multistep::{
    alpha_sigma_t, check_schedule, check_sigma_spacing, index_for_timestep, lambda, mul, multistep_timesteps,
    noise_index, refuse_unsupported, spaced_sigmas, SigmaSpacing,
};
use super::scheduler::{Scheduler, StepNoise};
use super::sigmas;
use crate::error::{expected, Error, Result};

/// diffusers' `DPMSolverMultistepScheduler` config. Missing keys take the defaults of its `__init__`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct DpmSolverMultistepSchedulerConfig {
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
    /// The solver's order: 1, 2 or 3 (2; 2 for guided sampling, 3 for unconditional).
    pub solver_order: usize,
    /// What the model predicts ("epsilon").
    pub prediction_type: PredictionType,
    /// Dynamic thresholding (false). Pixel-space models only; not supported here.
    pub thresholding: bool,
    /// Dynamic thresholding's quantile (0.995); unused while thresholding is unsupported.
    pub dynamic_thresholding_ratio: f64,
    /// Dynamic thresholding's bound (1.0); unused while thresholding is unsupported.
    pub sample_max_value: f64,
    /// "dpmsolver++" (default), "sde-dpmsolver++", or the deprecated "dpmsolver" / "sde-dpmsolver".
    /// diffusers reads "deis" (a DEIS folder's value) as "dpmsolver++".
    #[serde(deserialize_with = "algorithm_type")]
    pub algorithm_type: AlgorithmType,
    /// The second-order update: "midpoint" (default) or "heun". diffusers reads UniPC's and DEIS's
    /// values ("bh1", "bh2", "logrho") as "midpoint".
    #[serde(deserialize_with = "solver_type")]
    pub solver_type: DpmSolverType,
    /// Lower-order final steps: for fewer than 15 steps the last two steps drop to order 1 and 2 (true).
    pub lower_order_final: bool,
    /// The last step is first order whatever the step count (false).
    pub euler_at_final: bool,
    /// Karras et al.'s sigmas (rho 7) over the training range, timesteps rounded from them (false).
    pub use_karras_sigmas: bool,
    /// Sigmas evenly spaced in log space (false).
    pub use_exponential_sigmas: bool,
    /// Beta-distributed sigmas (false); not supported here.
    pub use_beta_sigmas: bool,
    /// Log sigmas evenly spaced (Lu et al.'s uniform-lambda steps) (false).
    pub use_lu_lambdas: bool,
    /// Flow-matching sigmas (false); for flow models, not supported here.
    pub use_flow_sigmas: bool,
    /// The noise level after the last step: "zero" (default) or "sigma_min".
    pub final_sigmas_type: FinalSigmasType,
    /// Timesteps whose lambda = log(alpha / sigma) is below this are cut off (None: -infinity,
    /// no cut; JSON has no infinity). Cosine-schedule models use -5.1.
    pub lambda_min_clipped: Option<f64>,
    /// Models that predict a variance (None); "learned" / "learned_range" are not supported here,
    /// DDPM's fixed variances are ignored as diffusers ignores them.
    pub variance_type: Option<VarianceType>,
    /// How inference timesteps are placed ("linspace"; "leading" uses num_train_timesteps // (N + 1)).
    pub timestep_spacing: TimestepSpacing,
    /// Added to the leading-spaced timesteps (0; SD1.x uses 1).
    pub steps_offset: usize,
    /// Rescale betas to zero terminal SNR (false).
    pub rescale_betas_zero_snr: bool,
}

impl Default for DpmSolverMultistepSchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            algorithm_type: AlgorithmType::DpmSolverPlusPlus,
            solver_type: DpmSolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_lu_lambdas: false,
            use_flow_sigmas: false,
            final_sigmas_type: FinalSigmasType::Zero,
            lambda_min_clipped: None,
            variance_type: None,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
        }
    }
}

/// `algorithm_type`, with diffusers' "deis" -> "dpmsolver++".
fn algorithm_type<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<AlgorithmType, D::Error> {
    let value = String::deserialize(d)?;
    match value.as_str() {
        "deis" => Ok(AlgorithmType::DpmSolverPlusPlus),
        _ => AlgorithmType::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&value)),
    }
}

/// `solver_type`, with diffusers' "logrho" / "bh1" / "bh2" -> "midpoint".
fn solver_type<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<DpmSolverType, D::Error> {
    let value = String::deserialize(d)?;
    match value.as_str() {
        "logrho" | "bh1" | "bh2" => Ok(DpmSolverType::Midpoint),
        _ => DpmSolverType::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&value)),
    }
}

impl DpmSolverMultistepSchedulerConfig {
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

    fn sde(&self) -> bool {
        matches!(self.algorithm_type, AlgorithmType::SdeDpmSolverPlusPlus | AlgorithmType::SdeDpmSolver)
    }

    /// Every check on the config, in one place (values from scheduler_config.json included).
    pub fn validate(&self) -> Result<()> {
        self.noise_schedule().validate()?;
        let algorithm = self.algorithm_type.as_str();
        let max_order = if self.algorithm_type == AlgorithmType::SdeDpmSolver { 2 } else { 3 };
        if !(1..=max_order).contains(&self.solver_order) {
            let what = if max_order == 2 {
                "1 or 2 (diffusers has no third-order \"sde-dpmsolver\" step)".to_string()
            } else {
                "1, 2 or 3".to_string()
            };
            return Err(expected(&what, "scheduler.solver_order", self.solver_order));
        }
        if self.final_sigmas_type == FinalSigmasType::Zero
            && matches!(self.algorithm_type, AlgorithmType::DpmSolver | AlgorithmType::SdeDpmSolver)
        {
            return Err(expected(
                &format!("\"sigma_min\" with scheduler.algorithm_type {algorithm:?} (as diffusers requires)"),
                "scheduler.final_sigmas_type",
                "\"zero\"",
            ));
        }
        refuse_unsupported(self.thresholding, self.use_beta_sigmas, self.use_flow_sigmas)?;
        // diffusers reads only "learned" / "learned_range" here (DDPM's fixed variances, carried
        // over from a DDPM folder's config, change nothing).
        if let Some(v @ (VarianceType::Learned | VarianceType::LearnedRange)) = self.variance_type {
            return Err(expected(
                "null (models that predict their variance are not supported)",
                "scheduler.variance_type",
                format!("{:?}", v.as_str()),
            ));
        }
        let spacings = [
            ("use_karras_sigmas", self.use_karras_sigmas),
            ("use_exponential_sigmas", self.use_exponential_sigmas),
            ("use_lu_lambdas", self.use_lu_lambdas),
        ];
        check_sigma_spacing(&spacings, self.beta_schedule)?;
        if let Some(l) = self.lambda_min_clipped {
            if l.is_nan() {
                return Err(expected("number or null (no clipping)", "scheduler.lambda_min_clipped", l));
            }
        }
        check_steps_offset(self.steps_offset, self.num_train_timesteps)
    }
}

/// A DPM-Solver multistep scheduler set up for one run.
#[derive(Debug, Clone)]
pub struct DpmSolverMultistepScheduler {
    config: DpmSolverMultistepSchedulerConfig,
    timesteps: Vec<f64>,
    /// One per timestep plus the final sigma, float32 as diffusers holds them.
    sigmas: Vec<f32>,
    /// The converted model outputs of the last `solver_order` steps, oldest first.
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl DpmSolverMultistepScheduler {
    /// `DPMSolverMultistepScheduler(**config)` followed by `set_timesteps(num_inference_steps)`.
    pub fn new(config: DpmSolverMultistepSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        config.validate()?;
        let n = num_inference_steps;
        let train = config.num_train_timesteps;
        if n == 0 || n > train {
            return Err(expected(&format!("integer between 1 and {train}"), "num_inference_steps", n));
        }
        let alphas_cumprod = config.noise_schedule().alphas_cumprod_for_sigmas();
        let training = sigmas::training_sigmas(&alphas_cumprod);

        // lambda_min_clipped: the timesteps whose lambda falls below it are cut from the top.
        let clipped = match config.lambda_min_clipped {
            None => 0,
            Some(min) => {
                let min = min as f32;
                let lambdas: Vec<f32> =
                    alphas_cumprod.iter().rev().map(|&a| a.sqrt().ln() - (1.0 - a).sqrt().ln()).collect();
                lambdas.iter().position(|&l| l >= min).unwrap_or(lambdas.len())
            }
        };
        let last_timestep = train - clipped;
        if clipped > 0 && last_timestep < 2 {
            return Err(expected(
                "number that leaves at least 2 training timesteps",
                "scheduler.lambda_min_clipped",
                config.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY),
            ));
        }
        let spaced = multistep_timesteps(config.timestep_spacing, train, last_timestep, config.steps_offset, n);
        let spacing = SigmaSpacing::of(config.use_karras_sigmas, config.use_exponential_sigmas, config.use_lu_lambdas);
        // diffusers rounds the timesteps of Karras and Lu sigmas except for the cosine schedule
        // (refused above); int64 truncates the rest.
        let (timesteps, mut sigmas) = spaced_sigmas(spacing, &training, &spaced, n, None, true);
        let sigma_last = match config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => training[0],
        };
        sigmas.push(sigma_last);
        check_schedule(&timesteps, &sigmas, config.timestep_spacing, n)?;
        let scheduler = Self {
            model_outputs: vec![None; config.solver_order],
            config,
            timesteps,
            sigmas,
            lower_order_nums: 0,
            step_index: None,
            begin_index: None,
        };
        scheduler.check_last_step()?;
        Ok(scheduler)
    }

    /// Where the last noise level already is the final one (sigma_min after Karras, exponential
    /// or Lu sigmas, or a last timestep of 0), the last step's h is 0: a heun or third-order
    /// step divides 0 by 0 there, and diffusers' image is NaN. Refused.
    fn check_last_step(&self) -> Result<()> {
        let (c, n) = (&self.config, self.timesteps.len());
        let flat_last = self.sigmas[n] == self.sigmas[n - 1];
        let first_order = c.solver_order == 1 || n == 1 || c.euler_at_final || (c.lower_order_final && n < 15);
        let third_order = c.solver_order == 3 && n >= 3 && !(c.lower_order_final && n < 15);
        let form = if third_order { "third-order" } else { "heun" };
        if flat_last && !first_order && (third_order || c.solver_type == DpmSolverType::Heun) {
            return Err(expected(
                &format!(
                    "\"zero\", or scheduler.euler_at_final true (the last noise level already is the final one here, \
                     and diffusers' last {form} step divides by zero: a NaN image)"
                ),
                "scheduler.final_sigmas_type",
                "\"sigma_min\"",
            ));
        }
        Ok(())
    }

    /// The sigma of each timestep plus the final one (float32).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The config this scheduler runs with.
    pub fn config(&self) -> &DpmSolverMultistepSchedulerConfig {
        &self.config
    }

    /// `convert_model_output`: the data prediction x0 (DPM-Solver++) or the noise (DPM-Solver).
    fn convert_model_output(&self, model_output: &Tensor, sample: &Tensor, i: usize) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma_t(self.sigmas[i]);
        let prediction = self.config.prediction_type;
        Ok(match self.config.algorithm_type {
            AlgorithmType::DpmSolverPlusPlus | AlgorithmType::SdeDpmSolverPlusPlus => match prediction {
                PredictionType::Epsilon => div_scalar(&(sample - mul(model_output, sigma_t)?)?, alpha_t)?,
                PredictionType::Sample => model_output.clone(),
                PredictionType::VPrediction => (mul(sample, alpha_t)? - mul(model_output, sigma_t)?)?,
            },
            AlgorithmType::DpmSolver | AlgorithmType::SdeDpmSolver => match prediction {
                PredictionType::Epsilon => model_output.clone(),
                PredictionType::Sample => div_scalar(&(sample - mul(model_output, alpha_t)?)?, sigma_t)?,
                PredictionType::VPrediction => (mul(model_output, alpha_t)? + mul(sample, sigma_t)?)?,
            },
        })
    }

    /// `dpm_solver_first_order_update` (DDIM's update in DPM-Solver's terms).
    fn first_order(&self, i: usize, m0: &Tensor, sample: &Tensor, noise: Option<&Tensor>) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma_t(self.sigmas[i + 1]);
        let (alpha_s, sigma_s) = alpha_sigma_t(self.sigmas[i]);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
        Ok(match (self.config.algorithm_type, noise) {
            (AlgorithmType::DpmSolverPlusPlus, _) => {
                (mul(sample, sigma_t / sigma_s)? - mul(m0, alpha_t * ((-h).exp() - 1.0))?)?
            }
            (AlgorithmType::DpmSolver, _) => (mul(sample, alpha_t / alpha_s)? - mul(m0, sigma_t * (h.exp() - 1.0))?)?,
            (AlgorithmType::SdeDpmSolverPlusPlus, Some(noise)) => {
                ((mul(sample, sigma_t / sigma_s * (-h).exp())? + mul(m0, alpha_t * (1.0 - (-2.0 * h).exp()))?)?
                    + mul(noise, sigma_t * (1.0 - (-2.0 * h).exp()).sqrt())?)?
            }
            (AlgorithmType::SdeDpmSolver, Some(noise)) => {
                ((mul(sample, alpha_t / alpha_s)? - mul(m0, 2.0 * (sigma_t * (h.exp() - 1.0)))?)?
                    + mul(noise, sigma_t * ((2.0 * h).exp() - 1.0).sqrt())?)?
            }
            _ => return Err(no_noise()),
        })
    }

    /// `multistep_dpm_solver_second_order_update`.
    fn second_order(&self, i: usize, sample: &Tensor, noise: Option<&Tensor>) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma_t(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma_t(self.sigmas[i]);
        let (alpha_s1, sigma_s1) = alpha_sigma_t(self.sigmas[i - 1]);
        let (lambda_t, lambda_s0, lambda_s1) =
            (lambda(alpha_t, sigma_t), lambda(alpha_s0, sigma_s0), lambda(alpha_s1, sigma_s1));
        let (m0, m1) = (self.output(1)?, self.output(2)?);
        let (h, h_0) = (lambda_t - lambda_s0, lambda_s0 - lambda_s1);
        let r0 = h_0 / h;
        let (d0, d1) = (m0, mul(&(m0 - m1)?, 1.0 / r0)?);
        let heun = self.config.solver_type == DpmSolverType::Heun;
        Ok(match (self.config.algorithm_type, noise) {
            (AlgorithmType::DpmSolverPlusPlus, _) => {
                let c = alpha_t * ((-h).exp() - 1.0);
                let x = (mul(sample, sigma_t / sigma_s0)? - mul(d0, c)?)?;
                if heun {
                    (x + mul(&d1, alpha_t * (((-h).exp() - 1.0) / h + 1.0))?)?
                } else {
                    (x - mul(&d1, 0.5 * c)?)?
                }
            }
            (AlgorithmType::DpmSolver, _) => {
                let c = sigma_t * (h.exp() - 1.0);
                let x = (mul(sample, alpha_t / alpha_s0)? - mul(d0, c)?)?;
                if heun {
                    (x - mul(&d1, sigma_t * ((h.exp() - 1.0) / h - 1.0))?)?
                } else {
                    (x - mul(&d1, 0.5 * c)?)?
                }
            }
            (AlgorithmType::SdeDpmSolverPlusPlus, Some(noise)) => {
                let c = alpha_t * (1.0 - (-2.0 * h).exp());
                let x = (mul(sample, sigma_t / sigma_s0 * (-h).exp())? + mul(d0, c)?)?;
                let x = if heun {
                    (x + mul(&d1, alpha_t * ((1.0 - (-2.0 * h).exp()) / (-2.0 * h) + 1.0))?)?
                } else {
                    (x + mul(&d1, 0.5 * c)?)?
                };
                (x + mul(noise, sigma_t * (1.0 - (-2.0 * h).exp()).sqrt())?)?
            }
            (AlgorithmType::SdeDpmSolver, Some(noise)) => {
                let c = sigma_t * (h.exp() - 1.0);
                let x = (mul(sample, alpha_t / alpha_s0)? - mul(d0, 2.0 * c)?)?;
                let x = if heun {
                    (x - mul(&d1, 2.0 * (sigma_t * ((h.exp() - 1.0) / h - 1.0)))?)?
                } else {
                    (x - mul(&d1, c)?)?
                };
                (x + mul(noise, sigma_t * ((2.0 * h).exp() - 1.0).sqrt())?)?
            }
            _ => return Err(no_noise()),
        })
    }

    /// `multistep_dpm_solver_third_order_update` (no "sde-dpmsolver" form: refused by `validate`).
    fn third_order(&self, i: usize, sample: &Tensor, noise: Option<&Tensor>) -> Result<Tensor> {
        let lambda_at = |j: usize| {
            let (a, s) = alpha_sigma_t(self.sigmas[j]);
            lambda(a, s)
        };
        let (alpha_t, sigma_t) = alpha_sigma_t(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma_t(self.sigmas[i]);
        let (lambda_t, lambda_s0, lambda_s1, lambda_s2) =
            (lambda_at(i + 1), lambda_at(i), lambda_at(i - 1), lambda_at(i - 2));
        let (m0, m1, m2) = (self.output(1)?, self.output(2)?, self.output(3)?);
        let (h, h_0, h_1) = (lambda_t - lambda_s0, lambda_s0 - lambda_s1, lambda_s1 - lambda_s2);
        let (r0, r1) = (h_0 / h, h_1 / h);
        let d0 = m0;
        let d1_0 = mul(&(m0 - m1)?, 1.0 / r0)?;
        let d1_1 = mul(&(m1 - m2)?, 1.0 / r1)?;
        let d1_diff = (&d1_0 - &d1_1)?;
        let d1 = (&d1_0 + mul(&d1_diff, r0 / (r0 + r1))?)?;
        let d2 = mul(&d1_diff, 1.0 / (r0 + r1))?;
        Ok(match (self.config.algorithm_type, noise) {
            (AlgorithmType::DpmSolverPlusPlus, _) => {
                let e = (-h).exp();
                (((mul(sample, sigma_t / sigma_s0)? - mul(d0, alpha_t * (e - 1.0))?)?
                    + mul(&d1, alpha_t * ((e - 1.0) / h + 1.0))?)?
                    - mul(&d2, alpha_t * ((e - 1.0 + h) / (h * h) - 0.5))?)?
            }
            (AlgorithmType::DpmSolver, _) => {
                let e = h.exp();
                (((mul(sample, alpha_t / alpha_s0)? - mul(d0, sigma_t * (e - 1.0))?)?
                    - mul(&d1, sigma_t * ((e - 1.0) / h - 1.0))?)?
                    - mul(&d2, sigma_t * ((e - 1.0 - h) / (h * h) - 0.5))?)?
            }
            (AlgorithmType::SdeDpmSolverPlusPlus, Some(noise)) => {
                let e2 = (-2.0 * h).exp();
                let two_h = 2.0 * h;
                ((((mul(sample, sigma_t / sigma_s0 * (-h).exp())? + mul(d0, alpha_t * (1.0 - e2))?)?
                    + mul(&d1, alpha_t * ((1.0 - e2) / (-2.0 * h) + 1.0))?)?
                    + mul(&d2, alpha_t * ((1.0 - e2 - 2.0 * h) / (two_h * two_h) - 0.5))?)?
                    + mul(noise, sigma_t * (1.0 - e2).sqrt())?)?
            }
            _ => return Err(Error::Internal("no third-order sde-dpmsolver step".into())),
        })
    }

    /// The converted model output `back` steps ago (1: this step's).
    fn output(&self, back: usize) -> Result<&Tensor> {
        let k = self.model_outputs.len();
        self.model_outputs[k - back]
            .as_ref()
            .ok_or_else(|| Error::Internal(format!("DPM-Solver has no model output from {back} steps back")))
    }
}

impl Scheduler for DpmSolverMultistepScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// diffusers' `step`: converts the output, keeps it in the history, and takes the highest
    /// order the history and the position allow.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn StepNoise,
    ) -> Result<Tensor> {
        let i = *self
            .step_index
            .get_or_insert_with(|| self.begin_index.unwrap_or_else(|| index_for_timestep(&self.timesteps, timestep)));
        let n = self.timesteps.len();
        if i >= n {
            return Err(Error::Internal(format!("DPM-Solver stepped past its {n} timesteps")));
        }
        let c = &self.config;
        let lower_order_final = i == n - 1
            && (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type == FinalSigmasType::Zero);
        let lower_order_second = i == n - 2 && c.lower_order_final && n < 15;

        let converted = self.convert_model_output(model_output, sample, i)?;
        self.model_outputs.rotate_left(1);
        *self.model_outputs.last_mut().expect("solver_order >= 1") = Some(converted.clone());

        let noise = if self.config.sde() { Some(noise.sample_like(model_output)?) } else { None };
        let order = self.config.solver_order;
        let prev = if order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order(i, &converted, sample, noise.as_ref())?
        } else if order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order(i, sample, noise.as_ref())?
        } else {
            self.third_order(i, sample, noise.as_ref())?
        };
        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        self.step_index = Some(i + 1);
        Ok(prev)
    }

    /// Forward diffusion to `timestep`'s sigma: alpha_t * original + sigma_t * noise (img2img).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        let i = noise_index(self.begin_index, self.step_index, &self.timesteps, timestep);
        let (alpha_t, sigma_t) = alpha_sigma_t(self.sigmas[i]);
        Ok((mul(original, alpha_t)? + mul(noise, sigma_t)?)?)
    }

    fn set_begin_index(&mut self, begin_index: usize) {
        self.begin_index = Some(begin_index);
    }
}

fn no_noise() -> Error {
    Error::Internal("an SDE DPM-Solver step without noise".into())
}
