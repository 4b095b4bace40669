//! DDIM's configuration: scheduler_config.json with diffusers' defaults, the caller's overrides,
//! and the checks on both. Option names in messages are the JavaScript ones (`scheduler.betaEnd`).

use serde::{Deserialize, Deserializer};

use crate::error::{expected, Result};

/// How betas are spread over the training timesteps (`beta_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// Evenly from `beta_start` to `beta_end`.
    #[default]
    Linear,
    /// Evenly from sqrt(`beta_start`) to sqrt(`beta_end`), squared (Stable Diffusion).
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal (2021), betas capped at 0.999.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// What the model predicts (`prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// 0, r, 2r, ... with r = num_train_timesteps // n, plus `steps_offset`.
    #[default]
    Leading,
    /// Counted down from the last training timestep.
    Trailing,
    /// Rounded evenly from 0 to num_train_timesteps - 1.
    Linspace,
}

macro_rules! closed_enum {
    ($ty:ident, $field:literal, $option:literal, [$($name:literal => $variant:ident),+]) => {
        impl $ty {
            /// The value as diffusers spells it.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
            /// Parses a caller's value; the error lists the allowed ones.
            pub fn parse(value: &str) -> Result<Self> {
                match value {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(expected(Self::ALLOWED, $option, format!("{value:?}"))),
                }
            }
            const ALLOWED: &'static str = concat!("one of ", closed_enum!(@list $($name),+));
            /// serde `deserialize_with` for scheduler_config.json: names the field in errors.
            fn deserialize_field<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let value = String::deserialize(d)?;
                Self::parse(&value).map_err(|_| {
                    serde::de::Error::custom(format!(concat!($field, " is {:?}; expected ", closed_enum!(@list $($name),+)), value))
                })
            }
        }
    };
    (@list $first:literal $(, $rest:literal)*) => { concat!("\"", $first, "\"" $(, ", \"", $rest, "\"")*) };
}

closed_enum!(BetaSchedule, "beta_schedule", "scheduler.betaSchedule",
    ["linear" => Linear, "scaled_linear" => ScaledLinear, "squaredcos_cap_v2" => SquaredcosCapV2]);
closed_enum!(PredictionType, "prediction_type", "scheduler.predictionType",
    ["epsilon" => Epsilon, "v_prediction" => VPrediction, "sample" => Sample]);
closed_enum!(TimestepSpacing, "timestep_spacing", "scheduler.timestepSpacing",
    ["leading" => Leading, "trailing" => Trailing, "linspace" => Linspace]);

/// diffusers' `DDIMScheduler` config (scheduler_config.json). Missing keys take the defaults of
/// `DDIMScheduler.__init__`; unknown keys (`_class_name`, PNDM's `skip_prk_steps`, ...) are ignored.
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
    #[serde(deserialize_with = "BetaSchedule::deserialize_field")]
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
    #[serde(deserialize_with = "PredictionType::deserialize_field")]
    pub prediction_type: PredictionType,
    /// Dynamic thresholding (false). Pixel-space models only; not supported here.
    pub thresholding: bool,
    /// Dynamic thresholding's quantile (0.995); unused while thresholding is unsupported.
    pub dynamic_thresholding_ratio: f64,
    /// Dynamic thresholding's bound (1.0); unused while thresholding is unsupported.
    pub sample_max_value: f64,
    /// How inference timesteps are placed ("leading").
    #[serde(deserialize_with = "TimestepSpacing::deserialize_field")]
    pub timestep_spacing: TimestepSpacing,
    /// Rescale betas to zero terminal SNR (false).
    pub rescale_betas_zero_snr: bool,
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
        }
    }
}

/// A caller's changes to the model's scheduler config, one `Option` per field, plus `eta`
/// (DDIM's noise weight: 0 deterministic, 1 as DDPM). None keeps the model's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DdimOverrides {
    pub num_train_timesteps: Option<usize>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<BetaSchedule>,
    pub trained_betas: Option<Vec<f64>>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: Option<f64>,
    pub set_alpha_to_one: Option<bool>,
    pub steps_offset: Option<usize>,
    pub prediction_type: Option<PredictionType>,
    pub thresholding: Option<bool>,
    pub dynamic_thresholding_ratio: Option<f64>,
    pub sample_max_value: Option<f64>,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub eta: Option<f64>,
}

impl DdimSchedulerConfig {
    /// This config with the caller's overrides applied, checked as a whole.
    pub fn with_overrides(&self, o: &DdimOverrides) -> Result<Self> {
        if let Some(eta) = o.eta {
            if !(0.0..=1.0).contains(&eta) {
                return Err(expected("number between 0 and 1", "scheduler.eta", eta));
            }
        }
        let c = self.clone();
        let merged = Self {
            num_train_timesteps: o.num_train_timesteps.unwrap_or(c.num_train_timesteps),
            beta_start: o.beta_start.unwrap_or(c.beta_start),
            beta_end: o.beta_end.unwrap_or(c.beta_end),
            beta_schedule: o.beta_schedule.unwrap_or(c.beta_schedule),
            trained_betas: o.trained_betas.clone().or(c.trained_betas),
            clip_sample: o.clip_sample.unwrap_or(c.clip_sample),
            clip_sample_range: o.clip_sample_range.unwrap_or(c.clip_sample_range),
            set_alpha_to_one: o.set_alpha_to_one.unwrap_or(c.set_alpha_to_one),
            steps_offset: o.steps_offset.unwrap_or(c.steps_offset),
            prediction_type: o.prediction_type.unwrap_or(c.prediction_type),
            thresholding: o.thresholding.unwrap_or(c.thresholding),
            dynamic_thresholding_ratio: o.dynamic_thresholding_ratio.unwrap_or(c.dynamic_thresholding_ratio),
            sample_max_value: o.sample_max_value.unwrap_or(c.sample_max_value),
            timestep_spacing: o.timestep_spacing.unwrap_or(c.timestep_spacing),
            rescale_betas_zero_snr: o.rescale_betas_zero_snr.unwrap_or(c.rescale_betas_zero_snr),
        };
        merged.validate()?;
        Ok(merged)
    }

    /// Every check on the config, in one place (values from scheduler_config.json included).
    pub fn validate(&self) -> Result<()> {
        let t = self.num_train_timesteps;
        if !(1..=100_000).contains(&t) {
            return Err(expected("integer between 1 and 100000", "scheduler.numTrainTimesteps", t));
        }
        if self.thresholding {
            return Err(expected(
                "false (dynamic thresholding is for pixel-space models and is not supported)",
                "scheduler.thresholding",
                true,
            ));
        }
        match &self.trained_betas {
            Some(betas) => {
                if betas.len() != t {
                    return Err(expected(
                        &format!("{t} betas (one per scheduler.numTrainTimesteps)"),
                        "scheduler.trainedBetas",
                        format!("{} of them", betas.len()),
                    ));
                }
                if let Some(b) = betas.iter().find(|b| !(0.0..1.0).contains(*b)) {
                    return Err(expected("betas >= 0 and < 1", "scheduler.trainedBetas", b));
                }
            }
            None if self.beta_schedule != BetaSchedule::SquaredcosCapV2 => {
                if !(0.0..1.0).contains(&self.beta_start) {
                    return Err(expected("number >= 0 and < 1", "scheduler.betaStart", self.beta_start));
                }
                if !(self.beta_end > self.beta_start && self.beta_end < 1.0) {
                    return Err(expected(
                        &format!("number above scheduler.betaStart ({}) and below 1", self.beta_start),
                        "scheduler.betaEnd",
                        self.beta_end,
                    ));
                }
            }
            None => {}
        }
        if !(self.clip_sample_range.is_finite() && self.clip_sample_range > 0.0) {
            return Err(expected("finite number > 0", "scheduler.clipSampleRange", self.clip_sample_range));
        }
        if self.steps_offset >= t {
            return Err(expected(
                &format!("integer below scheduler.numTrainTimesteps ({t})"),
                "scheduler.stepsOffset",
                self.steps_offset,
            ));
        }
        Ok(())
    }
}
