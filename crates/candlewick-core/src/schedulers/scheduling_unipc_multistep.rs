//! UniPC (Zhao et al. 2023), a unified predictor-corrector multistep solver, exactly as diffusers
//! 0.42's `UniPCMultistepScheduler` (schedulers/scheduling_unipc_multistep.py): one UNet call a
//! step, the corrector (UniC) refining the previous step's result with this step's model output
//! before the predictor (UniP) takes the next step.

use candle_core::Tensor;
use serde::{Deserialize, Deserializer};

use super::alphas::{check_steps_offset, div_scalar};
use super::config::{BetaSchedule, FinalSigmasType, NoiseSchedule, PredictionType, TimestepSpacing, UniPcSolverType};
use super::multistep::{
    alpha_sigma_t, check_schedule, check_sigma_spacing, index_for_timestep, lambda, mul, multistep_timesteps,
    noise_index, refuse_unsupported, spaced_sigmas, SigmaSpacing,
};
use super::scheduler::{Scheduler, StepNoise};
use super::sigmas;
use crate::error::{expected, Error, Result};

/// diffusers' `UniPCMultistepScheduler` config. Missing keys take the defaults of its `__init__`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct UniPcMultistepSchedulerConfig {
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
    /// Solve for the data prediction x0 (true) or the noise (false; needs final_sigmas_type "sigma_min").
    pub predict_x0: bool,
    /// B(h): "bh2" (default, guided sampling) or "bh1". diffusers reads DPM-Solver's and DEIS's
    /// values ("midpoint", "heun", "logrho") as "bh2".
    #[serde(deserialize_with = "solver_type")]
    pub solver_type: UniPcSolverType,
    /// Lower-order final steps: the last steps use at most as many previous outputs as steps remain (true).
    pub lower_order_final: bool,
    /// Steps (0-based) whose result the next step does not correct ([]).
    pub disable_corrector: Vec<usize>,
    /// Karras et al.'s sigmas (rho 7), timesteps rounded from them (false).
    pub use_karras_sigmas: bool,
    /// Sigmas evenly spaced in log space (false).
    pub use_exponential_sigmas: bool,
    /// Beta-distributed sigmas (false); not supported here.
    pub use_beta_sigmas: bool,
    /// Flow-matching sigmas (false); for flow models, not supported here.
    pub use_flow_sigmas: bool,
    /// How inference timesteps are placed ("linspace"; "leading" uses num_train_timesteps // (N + 1)).
    pub timestep_spacing: TimestepSpacing,
    /// Added to the leading-spaced timesteps (0; SD1.x uses 1).
    pub steps_offset: usize,
    /// The noise level after the last step: "zero" (default) or "sigma_min" (the last Karras or
    /// exponential sigma when those are on).
    pub final_sigmas_type: FinalSigmasType,
    /// Rescale betas to zero terminal SNR (false).
    pub rescale_betas_zero_snr: bool,
    /// The smallest sigma of Karras / exponential sigmas (None: the smallest training sigma).
    pub sigma_min: Option<f64>,
    /// The largest sigma of Karras / exponential sigmas (None: the largest training sigma).
    pub sigma_max: Option<f64>,
    /// Flow models' resolution-dependent timestep shift (false); true is refused: diffusers'
    /// `set_timesteps` then needs a `mu` that Stable Diffusion pipelines never pass.
    pub use_dynamic_shifting: bool,
}

impl Default for UniPcMultistepSchedulerConfig {
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
            predict_x0: true,
            solver_type: UniPcSolverType::Bh2,
            lower_order_final: true,
            disable_corrector: Vec::new(),
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            final_sigmas_type: FinalSigmasType::Zero,
            rescale_betas_zero_snr: false,
            sigma_min: None,
            sigma_max: None,
            use_dynamic_shifting: false,
        }
    }
}

/// `solver_type`, with diffusers' "midpoint" / "heun" / "logrho" -> "bh2".
fn solver_type<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<UniPcSolverType, D::Error> {
    let value = String::deserialize(d)?;
    match value.as_str() {
        "midpoint" | "heun" | "logrho" => Ok(UniPcSolverType::Bh2),
        _ => UniPcSolverType::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&value)),
    }
}

impl UniPcMultistepSchedulerConfig {
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
        if !(1..=3).contains(&self.solver_order) {
            return Err(expected("1, 2 or 3", "scheduler.solver_order", self.solver_order));
        }
        refuse_unsupported(self.thresholding, self.use_beta_sigmas, self.use_flow_sigmas)?;
        if self.use_dynamic_shifting {
            return Err(expected(
                "false (dynamic shifting is for flow models; diffusers refuses it without their mu)",
                "scheduler.use_dynamic_shifting",
                true,
            ));
        }
        check_sigma_spacing(
            &[("use_karras_sigmas", self.use_karras_sigmas), ("use_exponential_sigmas", self.use_exponential_sigmas)],
            self.beta_schedule,
        )?;
        // With a final sigma of 0, diffusers' last step multiplies an infinite B(h) (bh1) or
        // 1/h (predict_x0 false) by zero: the image is NaN.
        if self.final_sigmas_type == FinalSigmasType::Zero {
            if self.solver_type == UniPcSolverType::Bh1 {
                return Err(expected(
                    "\"bh2\" with scheduler.final_sigmas_type \"zero\" (diffusers' last bh1 step is NaN; use \"sigma_min\")",
                    "scheduler.solver_type",
                    "\"bh1\"",
                ));
            }
            if !self.predict_x0 {
                return Err(expected(
                    "true with scheduler.final_sigmas_type \"zero\" (diffusers' last step is NaN; use \"sigma_min\")",
                    "scheduler.predict_x0",
                    false,
                ));
            }
        }
        for (name, value) in [("sigma_min", self.sigma_min), ("sigma_max", self.sigma_max)] {
            if let Some(v) = value.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(expected("finite number > 0 or null", &format!("scheduler.{name}"), v));
            }
        }
        if let (Some(lo), Some(hi)) = (self.sigma_min, self.sigma_max) {
            if lo >= hi {
                return Err(expected(&format!("number above scheduler.sigma_min ({lo})"), "scheduler.sigma_max", hi));
            }
        }
        check_steps_offset(self.steps_offset, self.num_train_timesteps)
    }
}

/// A UniPC scheduler set up for one run.
#[derive(Debug, Clone)]
pub struct UniPcMultistepScheduler {
    config: UniPcMultistepSchedulerConfig,
    timesteps: Vec<f64>,
    /// One per timestep plus the final sigma, float32 as diffusers holds them.
    sigmas: Vec<f32>,
    /// The converted model outputs of the last `solver_order` steps, oldest first.
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
    /// The predictor's order at the last step (the corrector of the next step uses it).
    this_order: usize,
    /// The sample the last predictor started from (the corrector's starting point).
    last_sample: Option<Tensor>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl UniPcMultistepScheduler {
    /// `UniPCMultistepScheduler(**config)` followed by `set_timesteps(num_inference_steps)`.
    pub fn new(config: UniPcMultistepSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        config.validate()?;
        let n = num_inference_steps;
        let train = config.num_train_timesteps;
        if n == 0 || n > train {
            return Err(expected(&format!("integer between 1 and {train}"), "num_inference_steps", n));
        }
        let alphas_cumprod = config.noise_schedule().alphas_cumprod_for_sigmas();
        let training = sigmas::training_sigmas(&alphas_cumprod);
        let spaced = multistep_timesteps(config.timestep_spacing, train, train, config.steps_offset, n);
        let spacing = SigmaSpacing::of(config.use_karras_sigmas, config.use_exponential_sigmas, false);
        let range = Some((config.sigma_min, config.sigma_max));
        let (timesteps, mut sigmas) = spaced_sigmas(spacing, &training, &spaced, n, range, true);
        let sigma_last = match (config.final_sigmas_type, spacing) {
            (FinalSigmasType::Zero, _) => 0.0,
            (FinalSigmasType::SigmaMin, SigmaSpacing::Timesteps) => training[0],
            (FinalSigmasType::SigmaMin, _) => sigmas[sigmas.len() - 1],
        };
        sigmas.push(sigma_last);
        check_schedule(&timesteps, &sigmas, config.timestep_spacing, n)?;
        // The last noise level already the final one (sigma_min after Karras or exponential
        // sigmas): a third-order last step solves a system with an infinite ratio, a NaN image
        // in diffusers. Refused.
        let last = sigmas.len() - 1;
        if sigmas[last] == sigmas[last - 1] && !config.lower_order_final && config.solver_order == 3 && last >= 3 {
            return Err(expected(
                "\"zero\", or scheduler.lower_order_final true (the last noise level already is the final one here, \
                 and diffusers' last third-order step is NaN)",
                "scheduler.final_sigmas_type",
                "\"sigma_min\"",
            ));
        }
        let order = config.solver_order;
        Ok(Self {
            config,
            timesteps,
            sigmas,
            model_outputs: vec![None; order],
            lower_order_nums: 0,
            this_order: 0,
            last_sample: None,
            step_index: None,
            begin_index: None,
        })
    }

    /// The sigma of each timestep plus the final one (float32).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The config this scheduler runs with.
    pub fn config(&self) -> &UniPcMultistepSchedulerConfig {
        &self.config
    }

    /// `convert_model_output`: x0 (predict_x0) or the noise.
    fn convert_model_output(&self, model_output: &Tensor, sample: &Tensor, i: usize) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma_t(self.sigmas[i]);
        Ok(match (self.config.predict_x0, self.config.prediction_type) {
            (true, PredictionType::Epsilon) => div_scalar(&(sample - mul(model_output, sigma_t)?)?, alpha_t)?,
            (true, PredictionType::Sample) | (false, PredictionType::Epsilon) => model_output.clone(),
            (true, PredictionType::VPrediction) => (mul(sample, alpha_t)? - mul(model_output, sigma_t)?)?,
            (false, PredictionType::Sample) => div_scalar(&(sample - mul(model_output, alpha_t)?)?, sigma_t)?,
            (false, PredictionType::VPrediction) => (mul(model_output, alpha_t)? + mul(sample, sigma_t)?)?,
        })
    }

    /// The converted model output `back` steps ago (1: the newest kept).
    fn output(&self, back: usize) -> Result<&Tensor> {
        let k = self.model_outputs.len();
        self.model_outputs[k - back]
            .as_ref()
            .ok_or_else(|| Error::Internal(format!("UniPC has no model output from {back} steps back")))
    }

    /// The shared part of UniP and UniC from sigma index `s0` to `t`: the scalars, the
    /// differences D1s of the older outputs (at sigma index `s0 - k`, k = 1..order) and the
    /// coefficients R, b of the order conditions.
    fn coefficients(&self, t: usize, s0: usize, order: usize) -> Result<Coefficients> {
        let (alpha_t, sigma_t) = alpha_sigma_t(self.sigmas[t]);
        let (alpha_s0, sigma_s0) = alpha_sigma_t(self.sigmas[s0]);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let h = lambda(alpha_t, sigma_t) - lambda_s0;
        let m0 = self.output(1)?;
        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for k in 1..order {
            let (alpha_si, sigma_si) = alpha_sigma_t(self.sigmas[s0 - k]);
            let rk = (lambda(alpha_si, sigma_si) - lambda_s0) / h;
            rks.push(rk);
            d1s.push(div_scalar(&(self.output(k + 1)? - m0)?, rk)?);
        }
        rks.push(1.0);

        let hh = if self.config.predict_x0 { -h } else { h };
        let h_phi_1 = expm1(hh);
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let b_h = match self.config.solver_type {
            UniPcSolverType::Bh1 => hh,
            UniPcSolverType::Bh2 => expm1(hh),
        };
        let mut factorial = 1u64;
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order as u64 {
            r.push(
                rks.iter()
                    .map(|&rk| {
                        if i == 1 {
                            1.0
                        } else if i == 2 {
                            rk
                        } else {
                            rk * rk
                        }
                    })
                    .collect::<Vec<f32>>(),
            );
            b.push(h_phi_k * factorial as f32 / b_h);
            factorial *= i + 1;
            h_phi_k = h_phi_k / hh - (1.0 / factorial as f64) as f32;
        }
        Ok(Coefficients { alpha_t, sigma_t, alpha_s0, sigma_s0, h_phi_1, b_h, d1s, r, b })
    }

    /// x_t_ of UniP and UniC: the first-order step from `x` with the newest output m0.
    fn first_order_part(&self, c: &Coefficients, x: &Tensor) -> Result<Tensor> {
        let m0 = self.output(1)?;
        Ok(if self.config.predict_x0 {
            (mul(x, c.sigma_t / c.sigma_s0)? - mul(m0, c.alpha_t * c.h_phi_1)?)?
        } else {
            (mul(x, c.alpha_t / c.alpha_s0)? - mul(m0, c.sigma_t * c.h_phi_1)?)?
        })
    }

    /// The weight of the correction terms: alpha_t B(h) (x0) or sigma_t B(h) (noise).
    fn weight(&self, c: &Coefficients) -> f32 {
        if self.config.predict_x0 {
            c.alpha_t * c.b_h
        } else {
            c.sigma_t * c.b_h
        }
    }

    /// `multistep_uni_p_bh_update`: the predictor from sigma index `i` to `i + 1`.
    fn predictor(&self, i: usize, x: &Tensor, order: usize) -> Result<Tensor> {
        let c = self.coefficients(i + 1, i, order)?;
        let x_t = self.first_order_part(&c, x)?;
        if c.d1s.is_empty() {
            return Ok(x_t);
        }
        let rhos = if order == 2 { vec![0.5] } else { solve(&c.r, &c.b, order - 1)? };
        let pred_res = weighted_sum(&rhos, &c.d1s)?;
        Ok((x_t - mul(&pred_res, self.weight(&c))?)?)
    }

    /// `multistep_uni_c_bh_update`: corrects `this_sample` (the predictor's result, at sigma
    /// index `i`) from `last_sample` (at `i - 1`) with this step's converted output.
    fn corrector(&self, i: usize, this_output: &Tensor, last_sample: &Tensor, order: usize) -> Result<Tensor> {
        let c = self.coefficients(i, i - 1, order)?;
        let x_t = self.first_order_part(&c, last_sample)?;
        let rhos = if order == 1 { vec![0.5] } else { solve(&c.r, &c.b, order)? };
        let d1_t = (this_output - self.output(1)?)?;
        let last = mul(&d1_t, rhos[order - 1])?;
        let res = if c.d1s.is_empty() { last } else { (weighted_sum(&rhos[..order - 1], &c.d1s)? + last)? };
        Ok((x_t - mul(&res, self.weight(&c))?)?)
    }
}

/// `torch.expm1` of a float32 scalar: correctly rounded, as torch's is on the goldens' machine
/// (libm's expm1f is off by an ulp at times, and UniP's b coefficients amplify it).
fn expm1(x: f32) -> f32 {
    f64::from(x).exp_m1() as f32
}

/// The scalars and order conditions of one UniP / UniC update (float32, as diffusers' tensors).
struct Coefficients {
    alpha_t: f32,
    sigma_t: f32,
    alpha_s0: f32,
    sigma_s0: f32,
    h_phi_1: f32,
    b_h: f32,
    d1s: Vec<Tensor>,
    /// R[i][k] = rks[k]^i.
    r: Vec<Vec<f32>>,
    b: Vec<f32>,
}

/// `torch.linalg.solve(R[:k, :k], b[:k])`: Gaussian elimination with partial pivoting on the
/// float32 values, in f64, rounded to float32 (LAPACK's float32 answer is within an ulp or two).
fn solve(r: &[Vec<f32>], b: &[f32], k: usize) -> Result<Vec<f32>> {
    let mut a: Vec<Vec<f64>> = (0..k).map(|i| (0..k).map(|j| f64::from(r[i][j])).collect()).collect();
    let mut y: Vec<f64> = b[..k].iter().map(|&v| f64::from(v)).collect();
    for col in 0..k {
        // The first row with the largest magnitude, as LAPACK's isamax.
        let pivot = (col..k).fold(col, |p, q| if a[q][col].abs() > a[p][col].abs() { q } else { p });
        if a[pivot][col] == 0.0 || !a[pivot][col].is_finite() {
            return Err(Error::Internal("UniPC's order conditions are singular (repeated noise levels)".into()));
        }
        a.swap(col, pivot);
        y.swap(col, pivot);
        let top = a[col].clone();
        for row in col + 1..k {
            let f = a[row][col] / top[col];
            for (v, t) in a[row][col..].iter_mut().zip(&top[col..]) {
                *v -= f * t;
            }
            y[row] -= f * y[col];
        }
    }
    let mut x = vec![0f64; k];
    for row in (0..k).rev() {
        let s: f64 = (row + 1..k).map(|j| a[row][j] * x[j]).sum();
        x[row] = (y[row] - s) / a[row][row];
    }
    Ok(x.into_iter().map(|v| v as f32).collect())
}

/// `einsum("k,bkc...->bc...", rhos, D1s)`: sum of rhos[k] * D1s[k].
fn weighted_sum(rhos: &[f32], d1s: &[Tensor]) -> Result<Tensor> {
    let mut sum = mul(&d1s[0], rhos[0])?;
    for (rho, d) in rhos.iter().zip(d1s).skip(1) {
        sum = (sum + mul(d, *rho)?)?;
    }
    Ok(sum)
}

impl Scheduler for UniPcMultistepScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// diffusers' `step`: correct the previous result with this output (UniC), then predict the
    /// next sample (UniP).
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _noise: &mut dyn StepNoise,
    ) -> Result<Tensor> {
        let i = *self
            .step_index
            .get_or_insert_with(|| self.begin_index.unwrap_or_else(|| index_for_timestep(&self.timesteps, timestep)));
        let n = self.timesteps.len();
        if i >= n {
            return Err(Error::Internal(format!("UniPC stepped past its {n} timesteps")));
        }
        let converted = self.convert_model_output(model_output, sample, i)?;
        let use_corrector = i > 0 && !self.config.disable_corrector.contains(&(i - 1));
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.corrector(i, &converted, last, self.this_order)?,
            _ => sample.clone(),
        };
        self.model_outputs.rotate_left(1);
        *self.model_outputs.last_mut().expect("solver_order >= 1") = Some(converted);

        let order = self.config.solver_order;
        let this_order = if self.config.lower_order_final { order.min(n - i) } else { order };
        self.this_order = this_order.min(self.lower_order_nums + 1);
        let prev = self.predictor(i, &sample, self.this_order)?;
        self.last_sample = Some(sample);
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
