//! What the multistep solvers (DPM-Solver, UniPC) share, as diffusers copies it between their
//! files: the sigma spacings and timesteps of `set_timesteps`, the schedule's sanity checks, the
//! step index lookups, and the float32 scalar helpers of their updates.

use candle_core::Tensor;

use super::alphas::refuse_thresholding;
use super::config::{BetaSchedule, TimestepSpacing};
use super::sigmas;
use crate::error::{expected, Result};

/// What neither multistep scheduler supports here: thresholding (pixel-space models), beta sigmas
/// (scipy's beta quantiles) and flow-matching sigmas (flow models).
pub(crate) fn refuse_unsupported(thresholding: bool, use_beta_sigmas: bool, use_flow_sigmas: bool) -> Result<()> {
    refuse_thresholding(thresholding)?;
    let refused = [
        (use_beta_sigmas, "scheduler.use_beta_sigmas", "beta-distributed sigmas"),
        (use_flow_sigmas, "scheduler.use_flow_sigmas", "flow-matching sigmas are for flow models"),
    ];
    match refused.iter().find(|r| r.0) {
        Some((_, option, why)) => Err(expected(&format!("false ({why}: not supported)"), option, true)),
        None => Ok(()),
    }
}

/// At most one sigma spacing, and none with the cosine schedule: its largest sigma is so far
/// above the next that the first two timesteps coincide and diffusers' run fails.
pub(crate) fn check_sigma_spacing(spacings: &[(&str, bool)], beta_schedule: BetaSchedule) -> Result<()> {
    let on: Vec<&str> = spacings.iter().filter(|s| s.1).map(|s| s.0).collect();
    if on.len() > 1 {
        return Err(expected(
            &format!("false when scheduler.{} is true (one sigma spacing at a time)", on[0]),
            &format!("scheduler.{}", on[1]),
            true,
        ));
    }
    if let (Some(name), BetaSchedule::SquaredcosCapV2) = (on.first(), beta_schedule) {
        return Err(expected(
            "false with scheduler.beta_schedule \"squaredcos_cap_v2\" (its first two timesteps coincide; diffusers fails)",
            &format!("scheduler.{name}"),
            true,
        ));
    }
    Ok(())
}

/// How the multistep schedulers place their sigmas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SigmaSpacing {
    /// The training sigmas at the spaced timesteps.
    Timesteps,
    Karras,
    Exponential,
    LuLambdas,
}

impl SigmaSpacing {
    pub(crate) fn of(karras: bool, exponential: bool, lu_lambdas: bool) -> Self {
        match (karras, exponential, lu_lambdas) {
            (true, _, _) => SigmaSpacing::Karras,
            (_, true, _) => SigmaSpacing::Exponential,
            (_, _, true) => SigmaSpacing::LuLambdas,
            _ => SigmaSpacing::Timesteps,
        }
    }
}

/// `set_timesteps`' sigmas (without the final one) and the timesteps the UNet sees, as int64.
/// `range` overrides the (sigma_min, sigma_max) of Karras and exponential sigmas (UniPC's
/// `sigma_min` / `sigma_max`); `round` rounds the timesteps of Karras and Lu sigmas (else
/// they are truncated, as diffusers' int64 cast does).
pub(crate) fn spaced_sigmas(
    spacing: SigmaSpacing,
    training: &[f32],
    spaced: &[i64],
    n: usize,
    range: Option<(Option<f64>, Option<f64>)>,
    round: bool,
) -> (Vec<f64>, Vec<f32>) {
    let (sigma_min, sigma_max) = (training[0] as f64, training[training.len() - 1] as f64);
    let (sigma_min, sigma_max) = match range {
        Some((lo, hi)) => (lo.unwrap_or(sigma_min), hi.unwrap_or(sigma_max)),
        None => (sigma_min, sigma_max),
    };
    let log_sigmas = sigmas::log_sigmas(training);
    let from_sigmas = |sigmas: Vec<f64>, round: bool| {
        let timesteps = sigmas
            .iter()
            .map(|&s| {
                let t = sigmas::sigma_to_t(s, &log_sigmas);
                if round {
                    t.round_ties_even()
                } else {
                    t.trunc()
                }
            })
            .collect();
        (timesteps, sigmas.iter().map(|&s| s as f32).collect())
    };
    match spacing {
        SigmaSpacing::Timesteps => {
            let positions: Vec<f64> = (0..training.len()).map(|i| i as f64).collect();
            let values: Vec<f64> = training.iter().map(|&s| s as f64).collect();
            let sigmas = spaced.iter().map(|&t| sigmas::interp(t as f64, &positions, &values) as f32).collect();
            (spaced.iter().map(|&t| t as f64).collect(), sigmas)
        }
        SigmaSpacing::Karras => from_sigmas(sigmas::karras(sigma_min, sigma_max, n), round),
        SigmaSpacing::Exponential => from_sigmas(sigmas::exponential(sigma_min, sigma_max, n), false),
        SigmaSpacing::LuLambdas => {
            // diffusers' "lambdas" here are the log sigmas, flipped: from the largest down.
            let (lambda_min, lambda_max) = (log_sigmas[0], log_sigmas[log_sigmas.len() - 1]);
            let ramp = sigmas::linspace(0.0, 1.0, n);
            let sigmas = ramp.iter().map(|r| (lambda_max + r * (lambda_min - lambda_max)).exp()).collect();
            from_sigmas(sigmas, round)
        }
    }
}

/// The multistep schedulers' leading / trailing / linspace timesteps (DPM-Solver, UniPC, DEIS):
/// unlike DDIM's, leading and linspace space N + 1 points and drop the last. `last_timestep` is
/// num_train_timesteps less the timesteps cut by `lambda_min_clipped`. Trailing follows numpy's
/// float arange, which for some N (61, 103, ... of 1000) yields N + 1 timesteps ending at -1, as
/// diffusers runs them.
pub(crate) fn multistep_timesteps(
    spacing: TimestepSpacing,
    train: usize,
    last_timestep: usize,
    steps_offset: usize,
    n: usize,
) -> Vec<i64> {
    match spacing {
        TimestepSpacing::Linspace => {
            let points = sigmas::linspace(0.0, (last_timestep - 1) as f64, n + 1);
            points[1..].iter().rev().map(|v| v.round_ties_even() as i64).collect()
        }
        TimestepSpacing::Leading => {
            let ratio = (last_timestep / (n + 1)) as i64;
            (1..=n as i64).rev().map(|i| i * ratio + steps_offset as i64).collect()
        }
        TimestepSpacing::Trailing => {
            let start = last_timestep as f64;
            let step = -(train as f64 / n as f64);
            let len = ((0.0 - start) / step).ceil().max(0.0) as usize;
            let delta = (start + step) - start;
            (0..len)
                .map(|i| match i {
                    0 => start,
                    1 => start + step,
                    _ => start + i as f64 * delta,
                })
                .map(|v| v.round_ties_even() as i64 - 1)
                .collect()
        }
    }
}

/// The schedule's own sanity: the noise level falls at every step (a repeated level divides by
/// zero; the final level may equal the last, a step that changes nothing as diffusers runs it),
/// and the first timestep is not repeated (diffusers would start such a run at the second and fail).
pub(crate) fn check_schedule(timesteps: &[f64], sigmas: &[f32], spacing: TimestepSpacing, n: usize) -> Result<()> {
    let last = sigmas.len() - 1;
    let flat = sigmas.windows(2).enumerate().find(|(k, w)| !(w[1] < w[0] || (k + 1 == last && w[1] <= w[0])));
    let repeated_first = timesteps.len() > 1 && timesteps[0] == timesteps[1];
    if flat.is_some() || repeated_first {
        let (k, level) = flat.map_or((0, sigmas[0]), |(k, w)| (k, w[0]));
        let what = if flat.is_some() {
            format!("share noise level {level}")
        } else {
            format!("share timestep {}", timesteps[0])
        };
        return Err(expected(
            &format!(
                "fewer steps (with timestep_spacing {:?}, steps {} and {} {what})",
                spacing.as_str(),
                k + 1,
                k + 2
            ),
            "num_inference_steps",
            n,
        ));
    }
    Ok(())
}

/// diffusers' `index_for_timestep`: the position of `timestep`, the second one if it repeats,
/// the last if it is absent.
pub(crate) fn index_for_timestep(timesteps: &[f64], timestep: f64) -> usize {
    let found: Vec<usize> = timesteps.iter().enumerate().filter(|(_, &t)| t == timestep).map(|(i, _)| i).collect();
    match found.len() {
        0 => timesteps.len() - 1,
        1 => found[0],
        _ => found[1],
    }
}

/// `add_noise`'s step index: the current one once set_begin_index was called, else the timestep's.
pub(crate) fn noise_index(begin: Option<usize>, step: Option<usize>, timesteps: &[f64], timestep: f64) -> usize {
    match (begin, step) {
        (None, _) => index_for_timestep(timesteps, timestep),
        (Some(_), Some(step)) => step,
        (Some(begin), None) => begin,
    }
}

/// `_sigma_to_alpha_sigma_t`: alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma * alpha_t, float32.
pub(crate) fn alpha_sigma_t(sigma: f32) -> (f32, f32) {
    let alpha_t = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha_t, sigma * alpha_t)
}

/// lambda = log(alpha_t) - log(sigma_t), float32 (infinite at sigma 0).
pub(crate) fn lambda(alpha_t: f32, sigma_t: f32) -> f32 {
    alpha_t.ln() - sigma_t.ln()
}

/// `c * t` with c a float32 scalar, as torch multiplies a 0-d float32 tensor into a tensor.
pub(crate) fn mul(t: &Tensor, c: f32) -> Result<Tensor> {
    Ok(t.affine(f64::from(c), 0.0)?)
}
