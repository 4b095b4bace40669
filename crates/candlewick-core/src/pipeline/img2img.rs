//! Image to image, as diffusers' `StableDiffusionImg2ImgPipeline`: the steps it adds to text to
//! image. `strength` picks where in the schedule the run starts (`get_timesteps`); the image,
//! encoded by the VAE and sampled with the image's noise stream, is noised to that timestep by the
//! scheduler's `add_noise` (`prepare_latents`). The loop and the decode are text to image's.

use candle_core::{DType, Tensor};

use super::components::Components;
use super::denoise::all_finite;
use crate::error::{expected, Error, Result};
use crate::schedulers::{Scheduler, StepNoise};

/// diffusers' `get_timesteps`: the index of `scheduler.timesteps()` the run starts at, for
/// `strength` of `num_inference_steps` (`int(steps * strength)` steps run; `order` UNet calls each),
/// set as the scheduler's begin index.
pub(super) fn get_timesteps(scheduler: &mut dyn Scheduler, num_inference_steps: usize, strength: f64) -> Result<usize> {
    let init_timestep = steps_that_run(num_inference_steps, strength);
    if init_timestep == 0 {
        return Err(too_few_steps(num_inference_steps, strength));
    }
    let t_start = num_inference_steps - init_timestep;
    let begin = t_start * scheduler.order();
    if begin >= scheduler.timesteps().len() {
        return Err(Error::Internal(format!(
            "strength {strength} starts at call {begin} of {} timesteps",
            scheduler.timesteps().len()
        )));
    }
    scheduler.set_begin_index(begin);
    Ok(begin)
}

/// `min(int(num_inference_steps * strength), num_inference_steps)`: the steps that run.
pub(super) fn steps_that_run(num_inference_steps: usize, strength: f64) -> usize {
    ((num_inference_steps as f64 * strength) as usize).min(num_inference_steps)
}

/// The error for a strength that leaves no step to run.
pub(super) fn too_few_steps(num_inference_steps: usize, strength: f64) -> Error {
    expected(
        &format!(
            "strength x num_inference_steps >= 1 (at least one step; {num_inference_steps} steps need strength >= {})",
            1.0 / num_inference_steps as f64
        ),
        "strength",
        strength,
    )
}

/// diffusers' `prepare_latents`: the image's latents (one VAE sample per image, from its own
/// noise stream) noised to `timestep` with noise drawn next from the same streams.
pub(super) fn prepare_latents(
    c: &Components,
    image: &Tensor,
    batch: usize,
    timestep: f64,
    scheduler: &dyn Scheduler,
    noise: &mut dyn StepNoise,
) -> Result<Tensor> {
    let init_latents = encode_vae_image(c, image, batch, noise)?;
    let shape: [usize; 4] = init_latents.dims4()?.into();
    let noise = noise.sample(shape, init_latents.device())?;
    scheduler.add_noise(&init_latents, &noise, timestep)
}

/// diffusers' `_encode_vae_image` / `retrieve_latents(vae.encode(image), generator)` times the
/// scaling factor: the latent distribution of `image` ([1, 3, H, W] in [-1, 1]) sampled once per
/// image of the batch (mean + std x noise). An f16 encode that overflows is redone in f32. f32 out.
pub(super) fn encode_vae_image(
    c: &Components,
    image: &Tensor,
    batch: usize,
    noise: &mut dyn StepNoise,
) -> Result<Tensor> {
    // SDXL's VAE encodes in f32 under force_upcast (loaded so), as diffusers does.
    let mut dist = c.vae.model.encode(&image.to_dtype(c.vae_dtype())?)?;
    if c.vae_dtype() != DType::F32 && !all_finite(&dist.mean.to_dtype(DType::F32)?)? {
        dist = c.vae_in_f32()?.encode(&image.to_dtype(DType::F32)?)?;
    }
    let (_, channels, h, w) = dist.mean.dims4()?;
    let eps = noise.sample([batch, channels, h, w], image.device())?;
    let (mean, logvar) = (dist.mean.to_dtype(DType::F32)?, dist.logvar.to_dtype(DType::F32)?);
    let sample = crate::models::vae::DiagonalGaussian { mean, logvar }.sample(&eps)?;
    let latents = (sample * c.vae.config.scaling_factor)?;
    if !all_finite(&latents)? {
        return Err(Error::NonFinite("the VAE's encoding of the image is NaN or infinite".into()));
    }
    Ok(latents)
}
