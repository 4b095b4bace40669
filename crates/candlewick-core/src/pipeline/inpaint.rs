//! Inpainting, as diffusers' `StableDiffusionInpaintPipeline` and `StableDiffusionXLInpaintPipeline`
//! (the same steps; SDXL adds its prompt encoding and time ids, and `denoising_start`, which starts
//! from the image's latents without noise): what inpainting adds to image to image.
//! With an inpainting UNet (9 input channels, sd-v1-5-inpainting's layout) every step sees the
//! mask and the masked image's latents beside the latents; with an ordinary 4-channel UNet the
//! known region is put back after every step, noised to the next timestep.

use candle_core::{DType, Device, Tensor};

use super::components::Components;
use super::denoise::AfterStep;
use super::img2img::encode_vae_image;
use crate::error::{Error, Result};
use crate::schedulers::{Scheduler, StepNoise};

/// What inpainting hands the denoising loop.
pub(super) struct Prepared {
    /// The starting latents.
    pub latents: Tensor,
    /// The 9-channel UNet's extra inputs (mask, masked-image latents), doubled when guiding.
    pub extra_channels: Option<Tensor>,
    /// The 4-channel UNet's blend of the known region.
    pub known_region: Option<KnownRegion>,
}

/// The inputs of one inpainting call, preprocessed.
pub(super) struct Inputs<'a> {
    /// `image_processor.preprocess(image)`: [1, 3, H, W] in [-1, 1].
    pub image: &'a Tensor,
    /// `mask_processor.preprocess(mask_image)`: [1, 1, H, W], 1 = repaint.
    pub mask: &'a Tensor,
    pub batch: usize,
    pub strength: f64,
    /// The first timestep of the run (`timesteps[:1]`).
    pub latent_timestep: f64,
    pub do_guidance: bool,
    /// False from SDXL's `denoising_start`: the run starts from the image's latents as they are
    /// (the noise is still drawn, for the known region's blend).
    pub add_noise: bool,
    /// The caller's `latents` (diffusers' `latents`): the noise, in place of a draw; the run then
    /// starts from them scaled by `init_noise_sigma`, whatever the strength.
    pub latents: Option<&'a Tensor>,
}

/// Which UNet layout the folder has: 4 channels (latents only) or latents + mask + masked-image
/// latents. Anything else is refused as diffusers refuses it.
pub(super) fn unet_takes_mask(c: &Components) -> Result<bool> {
    let (unet, latent) = (c.unet.config.in_channels, c.vae.config.latent_channels);
    if unet == latent {
        Ok(false)
    } else if unet == 2 * latent + 1 {
        Ok(true)
    } else {
        Err(Error::invalid_option(format!(
            "Expected a UNet with {latent} input channels (an ordinary one) or {} (an inpainting UNet: latents, \
             mask and masked-image latents) for mask_image but received a UNet with {unet} input channels",
            2 * latent + 1
        )))
    }
}

/// diffusers' steps 6 and 7: `prepare_latents` (pure noise at strength 1 or from the caller's
/// latents, the image's latents as they are from `denoising_start`, else the image's latents noised
/// to the first timestep) and `prepare_mask_latents`, drawing noise in diffusers' order: the image's
/// VAE sample (when needed), the initial noise (unless given), the masked image's VAE sample.
pub(super) fn prepare(
    c: &Components,
    inputs: &Inputs,
    scheduler: &dyn Scheduler,
    noise: &mut dyn StepNoise,
) -> Result<Prepared> {
    let takes_mask = unet_takes_mask(c)?;
    let device = inputs.image.device();
    let is_strength_max = inputs.strength == 1.0;
    // diffusers' SDXL pipeline fails on a 9-channel UNet at strength 1 from denoising_start (it has
    // no image latents to start from); here the image is encoded for it too.
    let given = inputs.latents.is_some();
    let image_latents = if !takes_mask || (!is_strength_max && !given) || !inputs.add_noise {
        Some(encode_vae_image(c, inputs.image, inputs.batch, noise)?)
    } else {
        None
    };
    let (_, _, height, width) = inputs.image.dims4()?;
    let vsf = c.vae.config.scale_factor();
    let shape = [inputs.batch, c.vae.config.latent_channels, height / vsf, width / vsf];
    let initial_noise = match inputs.latents {
        Some(given) => given.clone(),
        None => noise.sample(shape, device)?,
    };
    let latents = match &image_latents {
        Some(image_latents) if !inputs.add_noise => image_latents.clone(),
        Some(image_latents) if !is_strength_max && !given => {
            scheduler.add_noise(image_latents, &initial_noise, inputs.latent_timestep)?
        }
        _ => (&initial_noise * scheduler.init_noise_sigma())?,
    };

    // The mask at the latents' size (torch's nearest interpolation), one row per image.
    let mask = nearest(inputs.mask, shape[2], shape[3])?.repeat((inputs.batch, 1, 1, 1))?;
    let masked_image = inputs.image.broadcast_mul(&inputs.mask.lt(0.5)?.to_dtype(DType::F32)?)?;
    if !takes_mask {
        // diffusers encodes the masked image for every UNet; an ordinary UNet never reads it,
        // so only its noise is drawn, to keep the stream where diffusers' generator is.
        noise.sample(shape, device)?;
        let known_region = KnownRegion {
            image_latents: image_latents.unwrap_or(initial_noise.zeros_like()?),
            noise: initial_noise,
            mask,
        };
        return Ok(Prepared { latents, extra_channels: None, known_region: Some(known_region) });
    }
    let masked_image_latents = encode_vae_image(c, &masked_image, inputs.batch, noise)?;
    let extra = Tensor::cat(&[&mask, &masked_image_latents], 1)?;
    let extra = if inputs.do_guidance { Tensor::cat(&[&extra, &extra], 0)? } else { extra };
    Ok(Prepared { latents, extra_channels: Some(extra.to_dtype(c.dtype())?), known_region: None })
}

/// SDXL's inpainting handoff (diffusers' `image` given as latents, with `denoising_start`): the run
/// continues from `image_latents` as they are, and an ordinary UNet's kept region is blended from
/// them with one fresh draw of noise, as diffusers does. An inpainting UNet reads the masked image,
/// which latents do not give (diffusers fails on it): refused.
pub(super) fn prepare_from_latents(
    c: &Components,
    mask: &Tensor,
    image_latents: Tensor,
    noise: &mut dyn StepNoise,
) -> Result<Prepared> {
    if unet_takes_mask(c)? {
        return Err(crate::error::expected(
            "image with an inpainting UNet (it reads the masked image, which latents do not give)",
            "image",
            "none (latents with mask_image and denoising_start)",
        ));
    }
    let shape: [usize; 4] = image_latents.dims4()?.into();
    let initial_noise = noise.sample(shape, image_latents.device())?;
    let mask = nearest(mask, shape[2], shape[3])?.repeat((shape[0], 1, 1, 1))?;
    let known_region = KnownRegion { image_latents: image_latents.clone(), noise: initial_noise, mask };
    Ok(Prepared { latents: image_latents, extra_channels: None, known_region: Some(known_region) })
}

/// `torch.nn.functional.interpolate(mask, size=(h, w))` (mode "nearest"): source index
/// floor(i x in / out) in f32, as torch computes it.
fn nearest(mask: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, in_h, in_w) = mask.dims4()?;
    let index = |out: usize, size: usize, device: &Device| -> Result<Tensor> {
        let scale = size as f32 / out as f32;
        let rows: Vec<u32> = (0..out).map(|i| ((i as f32 * scale).floor() as usize).min(size - 1) as u32).collect();
        Ok(Tensor::new(rows.as_slice(), device)?)
    };
    let device = mask.device();
    Ok(mask.index_select(&index(h, in_h, device)?, 2)?.index_select(&index(w, in_w, device)?, 3)?)
}

/// The known region of a 4-channel UNet's inpainting: after each step the latents outside the
/// mask become the image's latents noised to the next timestep (the clean latents after the last).
pub(super) struct KnownRegion {
    image_latents: Tensor,
    noise: Tensor,
    /// [batch, 1, h, w], 1 = repaint.
    mask: Tensor,
}

impl AfterStep for KnownRegion {
    fn apply(&self, scheduler: &dyn Scheduler, next_timestep: Option<f64>, latents: Tensor) -> Result<Tensor> {
        let proper = match next_timestep {
            Some(t) => scheduler.add_noise(&self.image_latents, &self.noise, t)?,
            None => self.image_latents.clone(),
        };
        let keep = (1.0 - &self.mask)?;
        Ok((keep.broadcast_mul(&proper)? + self.mask.broadcast_mul(&latents)?)?)
    }
}
