//! Arithmetic shared by the schedulers that work on training timesteps and alpha products
//! (PNDM, DDPM, LCM): the alpha product of a timestep, forward diffusion, the step-count checks,
//! and the float32 operations whose rounding must match torch's.

use candle_core::Tensor;

use super::config::TimestepSpacing;
use super::scheduling_ddim::spaced_timesteps;
use crate::error::{expected, Error, Result};

/// `alphas_cumprod[timestep]` (float32) for a whole training timestep; anything else is a bug in
/// the caller (the timesteps all come from the scheduler itself).
pub(crate) fn alpha_at(alphas_cumprod: &[f32], timestep: f64, class: &str) -> Result<f32> {
    let index = timestep as usize;
    match alphas_cumprod.get(index).filter(|_| timestep >= 0.0 && timestep.fract() == 0.0) {
        Some(&a) => Ok(a),
        None => Err(Error::Internal(format!(
            "{class} timestep {timestep} is not a training timestep (0 to {})",
            alphas_cumprod.len() - 1
        ))),
    }
}

/// `tensor / scalar` with a true float32 division, as torch divides by a 0-d tensor or a Python
/// number (candle's `tensor / f64` multiplies by the reciprocal, which can differ in the last bit).
pub(crate) fn div_scalar(tensor: &Tensor, divisor: f32) -> Result<Tensor> {
    let divisor = Tensor::new(divisor, tensor.device())?;
    Ok(tensor.broadcast_div(&divisor)?)
}

/// diffusers' `add_noise`: sqrt(a) * original + sqrt(1 - a) * noise, a = alphas_cumprod[timestep],
/// in float32 (img2img's starting point).
pub(crate) fn add_noise(
    alphas_cumprod: &[f32],
    original: &Tensor,
    noise: &Tensor,
    timestep: f64,
    class: &str,
) -> Result<Tensor> {
    let a = alpha_at(alphas_cumprod, timestep, class)?;
    Ok(((original * f64::from(a.sqrt()))? + (noise * f64::from((1.0 - a).sqrt()))?)?)
}

/// The `num_inference_steps` check of the DDIM-like schedulers: 1 to num_train_timesteps, and a
/// first leading-spaced timestep (plus steps_offset) that is still a training timestep. Returns
/// the spaced timesteps, noisiest first.
pub(crate) fn checked_timesteps(
    spacing: TimestepSpacing,
    train: usize,
    steps_offset: usize,
    n: usize,
) -> Result<Vec<usize>> {
    if n == 0 || n > train {
        return Err(expected(&format!("integer between 1 and {train}"), "num_inference_steps", n));
    }
    let timesteps = spaced_timesteps(spacing, train, steps_offset, n);
    if let Some(&first) = timesteps.first().filter(|&&t| t >= train) {
        return Err(expected(
            &format!(
                "at most {} steps with scheduler.steps_offset {steps_offset} (the first timestep would be {first}, past \
                 the last training timestep {})",
                n - 1,
                train - 1
            ),
            "num_inference_steps",
            n,
        ));
    }
    Ok(timesteps)
}

/// The "integer below num_train_timesteps" rule on `steps_offset`.
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

/// The clip bound's rule (`clip_sample_range`).
pub(crate) fn check_clip_sample_range(range: f64) -> Result<()> {
    if !(range.is_finite() && range > 0.0) {
        return Err(expected("finite number > 0", "scheduler.clip_sample_range", range));
    }
    Ok(())
}

/// Dynamic thresholding is for pixel-space models; Stable Diffusion's latents never use it.
pub(crate) fn refuse_thresholding(thresholding: bool) -> Result<()> {
    if thresholding {
        return Err(expected(
            "false (dynamic thresholding is for pixel-space models and is not supported)",
            "scheduler.thresholding",
            true,
        ));
    }
    Ok(())
}
