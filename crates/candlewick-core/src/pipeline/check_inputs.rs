//! Step 1 of every task: everything a caller can get wrong, checked before any work (diffusers'
//! `check_inputs`), the task read from the images given, and the images decoded.

use candle_core::Tensor;

use super::image_processor::Decoded;
use super::img2img::{steps_that_run, too_few_steps};
use super::options::{GenerateOptions, LatentsInput, Task, MAX_IMAGES_PER_PROMPT, MAX_SIDE};
use super::padding_mask_crop::{get_crop_region, CropRegion};
use super::txt2img::StableDiffusionPipeline;
use crate::error::{count, expected, Result};

/// `StableDiffusionXLInpaintPipeline`'s default strength: just under 1, so that the image's latents
/// noised to the first step start the run (int(steps x 0.9999): one step fewer than asked).
const SDXL_INPAINT_STRENGTH: f64 = 0.9999;

/// A call's inputs, checked: its size, task and strength, and its images decoded.
pub(super) struct CheckedInputs {
    pub width: usize,
    pub height: usize,
    pub task: Task,
    /// The call's strength, or the task's default; None for text to image.
    pub strength: Option<f64>,
    pub image: Option<Decoded>,
    pub mask: Option<Decoded>,
    /// `padding_mask_crop`'s box (diffusers' `crops_coords`).
    pub crop: Option<CropRegion>,
}

impl StableDiffusionPipeline {
    pub(super) fn check_inputs(&self, o: &GenerateOptions) -> Result<CheckedInputs> {
        let task = match (&o.image, &o.mask_image) {
            (None, None) => Task::Txt2Img,
            (Some(_), None) => Task::Img2Img,
            (Some(_), Some(_)) => Task::Inpaint,
            // SDXL's inpainting handoff: a base's denoising_end latents as the image (diffusers' `image`
            // given as latents), continued from denoising_start.
            (None, Some(_)) if o.latents.is_some() && o.denoising_start.is_some() => Task::Inpaint,
            (None, Some(_)) => {
                return Err(expected("image with mask_image (inpainting repaints the image)", "image", "none"))
            }
        };
        if let Some(strength) = o.strength {
            if task == Task::Txt2Img {
                return Err(expected(
                    "image with strength (strength is for image to image and inpainting)",
                    "image",
                    "none",
                ));
            }
            if !(strength > 0.0 && strength <= 1.0) {
                return Err(expected("number > 0 and <= 1", "strength", strength));
            }
        }
        if let Some(pad) = o.padding_mask_crop {
            if o.image.is_none() || o.mask_image.is_none() {
                let missing = if o.mask_image.is_none() { "mask_image" } else { "image" };
                return Err(expected(
                    &format!(
                        "image and mask_image with padding_mask_crop {pad} (it inpaints the region around the mask \
                         and pastes it back into the image)"
                    ),
                    missing,
                    "none",
                ));
            }
            if o.output_latents {
                return Err(expected(
                    "no padding_mask_crop when latents are the output (the inpainted crop is pasted back into the image)",
                    "padding_mask_crop",
                    pad,
                ));
            }
        }
        match (task, &o.latents, o.denoising_start) {
            (Task::Img2Img, Some(latents), _) => {
                return Err(expected(
                    "no latents with image (latents are the initial noise of text to image and inpainting)",
                    "latents",
                    format!("latents of shape {:?}", latents.shape),
                ))
            }
            (Task::Inpaint, Some(latents), Some(_)) if o.image.is_some() => {
                return Err(expected(
                    "image or latents with mask_image and denoising_start, not both (latents are then the image's \
                     latents)",
                    "latents",
                    format!("latents of shape {:?}", latents.shape),
                ))
            }
            _ => {}
        }
        // StableDiffusionXLImg2ImgPipeline's default strength is 0.3, StableDiffusionXLInpaintPipeline's 0.9999.
        let sdxl_default = match (task, self.components.text_encoder_2.is_some()) {
            (Task::Img2Img, true) => Some(0.3),
            (Task::Inpaint, true) => Some(SDXL_INPAINT_STRENGTH),
            _ => None,
        };
        let strength = o.strength.or(sdxl_default).or(task.default_strength());
        if task == Task::Txt2Img {
            let (width, height) = self.output_size(o, None, None)?;
            self.check_text_and_steps(o, None)?;
            return Ok(CheckedInputs { width, height, task, strength, image: None, mask: None, crop: None });
        }
        self.check_text_and_steps(o, strength)?;

        // The images last: decoding is the costliest check.
        let image = o.image.as_ref().map(|i| Decoded::new(i, "image")).transpose()?;
        let mask = o.mask_image.as_ref().map(|m| Decoded::new(m, "mask_image")).transpose()?;
        if let (Some(image), Some(mask)) = (&image, &mask) {
            if (image.width, image.height) != (mask.width, mask.height) {
                return Err(expected(
                    &format!("mask of the image's size ({} pixels)", image.size()),
                    "mask_image",
                    format!("{} pixels", mask.size()),
                ));
            }
        }
        // The inpainting handoff's latents are the image: their size is the output's.
        let latents = o.latents.as_ref().filter(|_| image.is_none());
        let (width, height) = self.output_size(o, image.as_ref(), latents)?;
        let crop = match (o.padding_mask_crop, &mask) {
            (Some(pad), Some(mask)) => Some(get_crop_region(&mask.pixels(), width, height, pad)?),
            _ => None,
        };
        Ok(CheckedInputs { width, height, task, strength, image, mask, crop })
    }

    /// Width and height: the call's, or the image's rounded down to a multiple of 8 (and of the
    /// VAE's scale factor), or the size of the latents that stand for the image, or the model's default.
    fn output_size(
        &self,
        o: &GenerateOptions,
        image: Option<&Decoded>,
        image_latents: Option<&LatentsInput>,
    ) -> Result<(usize, usize)> {
        let multiple = self.info.vae_scale_factor.max(8);
        let (default_width, default_height) = match image {
            Some(image) => {
                let (w, h) = (image.width - image.width % multiple, image.height - image.height % multiple);
                if w == 0 || h == 0 {
                    return Err(expected(
                        &format!("image of at least {multiple}x{multiple} pixels"),
                        "image",
                        format!("{} pixels", image.size()),
                    ));
                }
                (w.min(MAX_SIDE - MAX_SIDE % multiple), h.min(MAX_SIDE - MAX_SIDE % multiple))
            }
            None => match image_latents {
                Some(l) => (
                    l.shape[3].saturating_mul(self.info.vae_scale_factor),
                    l.shape[2].saturating_mul(self.info.vae_scale_factor),
                ),
                None => (self.info.default_width, self.info.default_height),
            },
        };
        let width = o.width.unwrap_or(default_width);
        let height = o.height.unwrap_or(default_height);
        for (name, value) in [("width", width), ("height", height)] {
            if value == 0 || value % 8 != 0 {
                return Err(expected("integer multiple of 8", name, value));
            }
            if value > MAX_SIDE {
                return Err(expected(&format!("integer between 8 and {MAX_SIDE}"), name, value));
            }
            if value % self.info.vae_scale_factor != 0 {
                return Err(expected(&format!("integer multiple of {}", self.info.vae_scale_factor), name, value));
            }
        }
        Ok((width, height))
    }

    /// `clip_skip` within the text encoder's layers; the second prompts, the size conditions, `denoising_end` and
    /// `denoising_start` only for SDXL, `denoising_start` only from an image or latents.
    fn check_family_options(&self, o: &GenerateOptions) -> Result<()> {
        let c = &self.components;
        if let Some(skip) = o.clip_skip {
            let max = super::sdxl_encode_prompt::max_clip_skip(c);
            if skip > max {
                return Err(expected(
                    &format!("integer between 0 and {max} (the text encoder's layers)"),
                    "clip_skip",
                    skip,
                ));
            }
        }
        o.size_conditions.validate()?;
        for (name, value) in [("denoising_end", o.denoising_end), ("denoising_start", o.denoising_start)] {
            if let Some(v) = value.filter(|v| !(*v > 0.0 && *v < 1.0)) {
                return Err(expected("number > 0 and < 1", name, v));
            }
        }
        if c.text_encoder_2.is_none() {
            for (name, set) in
                [("denoising_end", o.denoising_end.is_some()), ("denoising_start", o.denoising_start.is_some())]
            {
                if set {
                    return Err(expected("an SDXL model (StableDiffusionXLPipeline)", name, "a model without it"));
                }
            }
            for (name, set) in
                [("prompt_2", o.prompt_2.is_some()), ("negative_prompt_2", o.negative_prompt_2.is_some())]
            {
                if set {
                    return Err(expected(
                        "an SDXL model (StableDiffusionXLPipeline, with a second text encoder)",
                        name,
                        "a model with one text encoder",
                    ));
                }
            }
            if let Some(name) = o.size_conditions.first_set() {
                return Err(expected(
                    "an SDXL model (StableDiffusionXLPipeline)",
                    name,
                    "a model without size conditions",
                ));
            }
        } else if o.denoising_start.is_some() && o.image.is_none() && o.latents.is_none() {
            return Err(expected(
                "image or latents with denoising_start (the run continues from them)",
                "denoising_start",
                "neither",
            ));
        }
        Ok(())
    }

    fn check_text_and_steps(&self, o: &GenerateOptions, strength: Option<f64>) -> Result<()> {
        if o.prompt.is_empty() {
            return Err(expected("at least one prompt", "prompt", "an empty list"));
        }
        for (name, texts) in [
            ("negative_prompt", &o.negative_prompt),
            ("prompt_2", &o.prompt_2),
            ("negative_prompt_2", &o.negative_prompt_2),
        ] {
            let Some(texts) = texts else { continue };
            if texts.len() != 1 && texts.len() != o.prompt.len() {
                let one = if name.starts_with("negative") { "negative prompt" } else { "prompt" };
                return Err(expected(
                    &match o.prompt.len() {
                        1 => format!("1 {one}"),
                        n => format!("1 or {n} {one}s (one per prompt)"),
                    },
                    name,
                    count(texts.len(), one, &format!("{one}s")),
                ));
            }
        }
        self.check_family_options(o)?;
        let max_steps = self.info.num_train_timesteps;
        if o.num_inference_steps == 0 || o.num_inference_steps > max_steps {
            return Err(expected(
                &format!("integer between 1 and {max_steps}"),
                "num_inference_steps",
                o.num_inference_steps,
            ));
        }
        if let Some(strength) = strength {
            if steps_that_run(o.num_inference_steps, strength) == 0 {
                return Err(too_few_steps(o.num_inference_steps, strength));
            }
        }
        if !o.guidance_scale.is_finite() || o.guidance_scale < 0.0 {
            return Err(expected("finite number >= 0", "guidance_scale", o.guidance_scale));
        }
        // Guidance is applied in f32: a larger scale is infinite there (an all-black image).
        if o.guidance_scale > f64::from(f32::MAX) {
            return Err(expected(
                &format!("number at most {:e} (the largest f32)", f32::MAX),
                "guidance_scale",
                o.guidance_scale,
            ));
        }
        if o.num_images_per_prompt == 0 || o.num_images_per_prompt > MAX_IMAGES_PER_PROMPT {
            return Err(expected(
                &format!("integer between 1 and {MAX_IMAGES_PER_PROMPT}"),
                "num_images_per_prompt",
                o.num_images_per_prompt,
            ));
        }
        if let Some(seeds) = &o.seeds {
            let images = o.prompt.len() * o.num_images_per_prompt;
            if o.seed.is_some() {
                return Err(expected("seeds without seed (give one of the two)", "seeds", "both"));
            }
            if seeds.len() != images {
                return Err(expected(
                    &format!("{images} seeds (one per image: prompts x num_images_per_prompt)"),
                    "seeds",
                    count(seeds.len(), "seed", "seeds"),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn latents_from_caller(&self, given: &LatentsInput, shape: [usize; 4]) -> Result<Tensor> {
        if given.shape != shape {
            return Err(expected(
                &format!("latents of shape {shape:?}"),
                "latents",
                format!("shape {:?}", given.shape),
            ));
        }
        if given.data.len() != shape.iter().product::<usize>() {
            return Err(expected(
                &format!("{} values for latents of shape {shape:?}", shape.iter().product::<usize>()),
                "latents",
                format!("{} values", given.data.len()),
            ));
        }
        Ok(Tensor::from_vec(given.data.clone(), &shape, &self.components.target.device)?)
    }
}
