//! What every scheduler's config shares: diffusers' closed enums, the noise schedule (betas) and
//! its checks. Option paths in messages are diffusers' snake_case names (`scheduler.beta_end`);
//! the binding renders them in its language's spelling.

use serde::{Deserialize, Deserializer};

use super::betas;
use crate::error::{expected, Result};

/// How betas are spread over the training timesteps (`beta_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BetaSchedule {
    /// Evenly from `beta_start` to `beta_end`.
    #[default]
    Linear,
    /// Evenly from sqrt(`beta_start`) to sqrt(`beta_end`), squared (Stable Diffusion).
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal (2021), betas capped at 0.999.
    SquaredcosCapV2,
}

/// What the model predicts (`prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PredictionType {
    /// The noise (SD1.x, SD2.x base).
    #[default]
    Epsilon,
    /// The velocity sqrt(a) eps - sqrt(1 - a) x0 (SD2.x 768).
    VPrediction,
    /// The denoised sample itself.
    Sample,
}

/// How the inference timesteps are placed among the training ones (`timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestepSpacing {
    /// 0, r, 2r, ... with r = num_train_timesteps // n, plus `steps_offset`.
    #[default]
    Leading,
    /// Counted down from the last training timestep.
    Trailing,
    /// Rounded evenly from 0 to num_train_timesteps - 1.
    Linspace,
}

/// How the inference sigmas are read off the training ones (`interpolation_type`, Euler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InterpolationType {
    /// Linearly in timestep between the two neighbouring training sigmas.
    #[default]
    Linear,
    /// Evenly in log sigma from the smallest training sigma to the largest.
    LogLinear,
}

/// What the model is given as its timestep (`timestep_type`, Euler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestepType {
    /// The training timestep (possibly fractional).
    #[default]
    Discrete,
    /// 0.25 * ln(sigma), with v_prediction (EDM-style models); as "discrete" otherwise.
    Continuous,
}

/// The sigma after the last step (`final_sigmas_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FinalSigmasType {
    /// 0: the last step removes all noise.
    #[default]
    Zero,
    /// The first training sigma, sqrt((1 - alphas_cumprod[0]) / alphas_cumprod[0]).
    SigmaMin,
}

/// A closed set of diffusers' string values: `as_str`, `parse` (the error lists the allowed
/// values) and serde `Deserialize` that names the allowed values.
macro_rules! closed_enum {
    ($ty:ident, $field:literal, [$($name:literal => $variant:ident),+ $(,)?]) => {
        impl $ty {
            /// The value as diffusers spells it.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
            /// Every value, as diffusers spells them.
            pub const VALUES: &'static [&'static str] = &[$($name),+];
            /// Parses a value; the error names `option` and lists the allowed values.
            pub fn parse(value: &str, option: &str) -> Result<Self> {
                match value {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(expected(&crate::error::one_of(Self::VALUES), option, format!("{value:?}"))),
                }
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let value = String::deserialize(d)?;
                Self::parse(&value, $field).map_err(|_| {
                    serde::de::Error::custom(format!("invalid value {value:?}, expected {}", crate::error::one_of(Self::VALUES)))
                })
            }
        }
    };
}

closed_enum!(BetaSchedule, "beta_schedule",
    ["linear" => Linear, "scaled_linear" => ScaledLinear, "squaredcos_cap_v2" => SquaredcosCapV2]);
closed_enum!(PredictionType, "prediction_type",
    ["epsilon" => Epsilon, "v_prediction" => VPrediction, "sample" => Sample]);
closed_enum!(TimestepSpacing, "timestep_spacing", ["leading" => Leading, "trailing" => Trailing, "linspace" => Linspace]);
closed_enum!(InterpolationType, "interpolation_type", ["linear" => Linear, "log_linear" => LogLinear]);
closed_enum!(TimestepType, "timestep_type", ["discrete" => Discrete, "continuous" => Continuous]);
closed_enum!(FinalSigmasType, "final_sigmas_type", ["zero" => Zero, "sigma_min" => SigmaMin]);

/// The noise-schedule fields that diffusers' schedulers share (each config struct holds its own
/// copy, as each diffusers class lists its own `__init__` arguments): one place to check them and
/// to compute betas and alphas_cumprod from them.
#[derive(Debug, Clone, Copy)]
pub struct NoiseSchedule<'a> {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<&'a [f64]>,
    /// Rescale betas to zero terminal SNR (arXiv 2305.08891); false where a class has no such field.
    pub rescale_betas_zero_snr: bool,
}

impl NoiseSchedule<'_> {
    /// Every rule on these fields, in one place. A schedule whose alphas_cumprod would not fall
    /// strictly (all-zero betas: every timestep the same, a black image) is refused.
    pub fn validate(&self) -> Result<()> {
        let t = self.num_train_timesteps;
        if !(1..=100_000).contains(&t) {
            return Err(expected("integer between 1 and 100000", "scheduler.num_train_timesteps", t));
        }
        match self.trained_betas {
            Some(betas) => {
                if betas.len() != t {
                    return Err(expected(
                        &format!("{t} betas (one per scheduler.num_train_timesteps)"),
                        "scheduler.trained_betas",
                        crate::error::count(betas.len(), "beta", "betas"),
                    ));
                }
                if let Some((i, b)) = betas.iter().enumerate().find(|(_, b)| !(0.0..1.0).contains(*b)) {
                    return Err(expected("number >= 0 and < 1", &format!("scheduler.trained_betas[{i}]"), b));
                }
                if betas.iter().all(|&b| b == 0.0) {
                    return Err(expected(
                        "betas with at least one above 0 (all zero: the noise never changes, the image is black)",
                        "scheduler.trained_betas",
                        "all zeros",
                    ));
                }
            }
            None if self.beta_schedule != BetaSchedule::SquaredcosCapV2 => {
                if !(0.0..1.0).contains(&self.beta_start) {
                    return Err(expected("number >= 0 and < 1", "scheduler.beta_start", self.beta_start));
                }
                if !(self.beta_end > self.beta_start && self.beta_end < 1.0) {
                    return Err(expected(
                        &format!("number above scheduler.beta_start ({}) and below 1", self.beta_start),
                        "scheduler.beta_end",
                        self.beta_end,
                    ));
                }
            }
            None => {}
        }
        Ok(())
    }

    /// diffusers' betas, float32.
    pub fn betas(&self) -> Vec<f32> {
        let train = self.num_train_timesteps;
        let mut betas = match (self.trained_betas, self.beta_schedule) {
            (Some(b), _) => b.iter().map(|&b| b as f32).collect(),
            (None, BetaSchedule::Linear) => betas::linspace_f32(self.beta_start, self.beta_end, train),
            (None, BetaSchedule::ScaledLinear) => {
                let sqrt = betas::linspace_f32(self.beta_start.sqrt(), self.beta_end.sqrt(), train);
                sqrt.iter().map(|b| b * b).collect()
            }
            (None, BetaSchedule::SquaredcosCapV2) => betas::squaredcos_cap_v2(train),
        };
        if self.rescale_betas_zero_snr {
            betas = betas::rescale_zero_terminal_snr(&betas);
        }
        betas
    }

    /// `torch.cumprod(1 - betas, 0)`, float32 values.
    pub fn alphas_cumprod(&self) -> Vec<f32> {
        let alphas: Vec<f32> = self.betas().iter().map(|b| 1.0 - b).collect();
        betas::cumprod_f32(&alphas)
    }

    /// alphas_cumprod as the sigma-based schedulers (Euler, Heun, DPM-Solver, UniPC) hold it:
    /// with zero terminal SNR the last one is 2^-24 instead of 0, so that its sigma stays finite (4096).
    pub fn alphas_cumprod_for_sigmas(&self) -> Vec<f32> {
        let mut alphas_cumprod = self.alphas_cumprod();
        if self.rescale_betas_zero_snr {
            if let Some(last) = alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        alphas_cumprod
    }
}

/// How DDPM's step noise is scaled (`variance_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VarianceType {
    /// The posterior variance beta~_t (DDPM eq. 7).
    #[default]
    FixedSmall,
    /// The posterior variance through exp(0.5 * log(.)): its standard deviation.
    FixedSmallLog,
    /// beta_t, the step's own beta.
    FixedLarge,
    /// log(beta_t) (GLIDE's max_log).
    FixedLargeLog,
    /// The model predicts the variance (extra output channels).
    Learned,
    /// The model predicts where the log-variance lies between the small and large ones.
    LearnedRange,
}

closed_enum!(VarianceType, "variance_type", [
    "fixed_small" => FixedSmall,
    "fixed_small_log" => FixedSmallLog,
    "fixed_large" => FixedLarge,
    "fixed_large_log" => FixedLargeLog,
    "learned" => Learned,
    "learned_range" => LearnedRange,
]);
/// DPM-Solver's formulation (`algorithm_type` of `DPMSolverMultistepScheduler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlgorithmType {
    /// DPM-Solver++: solves for the data prediction (the default; guided sampling).
    #[default]
    DpmSolverPlusPlus,
    /// SDE-DPM-Solver++: the stochastic variant, fresh noise every step.
    SdeDpmSolverPlusPlus,
    /// DPM-Solver: solves for the noise prediction (deprecated in diffusers).
    DpmSolver,
    /// SDE-DPM-Solver: the stochastic noise-prediction variant (deprecated in diffusers).
    SdeDpmSolver,
}

/// How DPM-Solver's second-order step is formed (`solver_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DpmSolverType {
    #[default]
    Midpoint,
    Heun,
}

/// UniPC's B(h) (`solver_type` of `UniPCMultistepScheduler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UniPcSolverType {
    /// B(h) = h: for unconditional sampling.
    Bh1,
    /// B(h) = e^h - 1: for guided sampling.
    #[default]
    Bh2,
}

closed_enum!(AlgorithmType, "algorithm_type", [
    "dpmsolver++" => DpmSolverPlusPlus,
    "sde-dpmsolver++" => SdeDpmSolverPlusPlus,
    "dpmsolver" => DpmSolver,
    "sde-dpmsolver" => SdeDpmSolver,
]);
closed_enum!(DpmSolverType, "solver_type", ["midpoint" => Midpoint, "heun" => Heun]);
closed_enum!(UniPcSolverType, "solver_type", ["bh1" => Bh1, "bh2" => Bh2]);
