//! Text to image, as diffusers' `StableDiffusionPipeline.__call__` does it, step by numbered step;
//! with an image, image to image (img2img.rs) and inpainting (inpaint.rs) through the same steps.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, IndexOp, Tensor};

use super::check_inputs::CheckedInputs;
use super::components::Components;
use super::decode_latents::decode_latents;
use super::denoise::{AfterStep, Conditioning, DenoiseOptions, Denoiser};
use super::noise::NoiseSource;
use super::observer::Observer;
use super::options::{
    FinalLatents, GenerateOptions, GenerateOutput, LoadOptions, PhaseTimings, PipelineInfo, ResolvedSettings, RgbImage,
    Task,
};
use super::prompt::PromptEncoder;
use super::{img2img, inpaint, padding_mask_crop, sdxl, sdxl_encode_prompt};
use crate::config::ModelFolder;
use crate::cuda::cudnn;
use crate::error::{expected, Error, Result};
use crate::loaders::lora::LoraSpec;
use crate::profile;
use crate::schedulers::{Scheduler, StepNoise};

/// Pipeline classes whose folders this pipeline can load.
const SUPPORTED_CLASSES: &[&str] = &[
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipeline",
    "LatentConsistencyModelPipeline",
    "StableDiffusionXLPipeline",
    "StableDiffusionXLImg2ImgPipeline",
    "StableDiffusionXLInpaintPipeline",
];

/// diffusers' `StableDiffusionPipeline`: the components, composed as text to image.
pub struct StableDiffusionPipeline {
    pub(super) components: Components,
    prompt_encoder: PromptEncoder,
    denoiser: Denoiser,
    pub(super) info: PipelineInfo,
}

impl StableDiffusionPipeline {
    /// Load a Stable Diffusion model folder in diffusers' layout.
    pub fn load(model_dir: &Path, options: &LoadOptions) -> Result<Self> {
        // The UNet's config: its config.json, or the single file its values were inferred for.
        let (mut components, pipeline_class, unet_config_path) = if model_dir.is_file() {
            let components = Components::load_single_file(model_dir, options)?;
            // The class diffusers' from_single_file builds for the file's layout: SDXL's (the
            // refiner's has text_encoder_2 alone), else an inpainting UNet takes 9 channels.
            let class = match (&components.text_encoder, &components.text_encoder_2) {
                (None, Some(_)) => "StableDiffusionXLImg2ImgPipeline",
                (Some(_), Some(_)) if components.unet.config.in_channels == 9 => "StableDiffusionXLInpaintPipeline",
                (Some(_), Some(_)) => "StableDiffusionXLPipeline",
                _ if components.unet.config.in_channels == 9 => "StableDiffusionInpaintPipeline",
                _ => "StableDiffusionPipeline",
            };
            (components, class.to_string(), model_dir.to_path_buf())
        } else {
            let (folder, index) = ModelFolder::open(model_dir)?;
            if !SUPPORTED_CLASSES.contains(&index.class_name.as_str()) {
                return Err(Error::model(
                    model_dir.join("model_index.json"),
                    format!("_class_name is {:?}; candlewick loads {SUPPORTED_CLASSES:?}", index.class_name),
                ));
            }
            let components = Components::load(&folder, &index, options)?;
            sdxl::check_layout(&components, &model_dir.join("model_index.json"), &index.class_name)?;
            (components, index.class_name, folder.config_path("unet"))
        };
        components.set_loras(&options.loras)?;
        let dtype = components.target.dtype;
        let (unet_config, vae_config) = (&components.unet.config, &components.vae.config);
        let vae_scale_factor = vae_config.scale_factor();
        let default_side = unet_config.sample_size.checked_mul(vae_scale_factor).ok_or_else(|| {
            Error::model(
                &unet_config_path,
                format!(
                    "sample_size {} times the VAE's scale factor {vae_scale_factor} overflows",
                    unet_config.sample_size
                ),
            )
        })?;
        let info = PipelineInfo {
            model_dir: model_dir.to_path_buf(),
            pipeline_class,
            device: components.target.name.clone(),
            device_reason: components.target.reason.clone(),
            dtype: if dtype == DType::F16 { "f16" } else { "f32" }.into(),
            default_width: default_side,
            default_height: default_side,
            cuda: components.cuda.settings,
            cuda_fallbacks: components.cuda.fallbacks.clone(),
            vae_scale_factor,
            max_prompt_tokens: components.max_prompt_tokens(),
            num_train_timesteps: components.scheduler.num_train_timesteps(),
            scheduler: components.scheduler.kind().class_name().into(),
            threads: rayon::current_num_threads(),
            loras: components.loras.clone(),
        };
        Ok(Self {
            prompt_encoder: PromptEncoder::new(info.cuda.cuda_graphs),
            denoiser: Denoiser::new(info.cuda.cuda_graphs),
            components,
            info,
        })
    }

    pub fn info(&self) -> &PipelineInfo {
        &self.info
    }

    /// The dtype the VAE was loaded in (diffusers' `pipe.vae.dtype` after `upcast_vae`): f32 for
    /// SDXL's VAE in f16 under `force_upcast`, which is then the only copy held.
    pub fn vae_dtype(&self) -> candle_core::DType {
        self.components.vae_dtype()
    }

    /// Fuse `loras` in place of the LoRAs fused now (diffusers' `unfuse_lora` + `set_adapters` +
    /// `fuse_lora`; an empty list restores the base weights). The UNet's and text encoder's CUDA
    /// graphs read the old weights' memory: they are dropped and captured again on later calls.
    /// On error the pipeline keeps its weights and stays usable.
    pub fn set_loras(&mut self, loras: &[LoraSpec]) -> Result<()> {
        let result = self.components.set_loras(loras);
        self.denoiser.reset_graphs();
        self.prompt_encoder.reset_graphs();
        result?;
        self.info.loras = self.components.loras.clone();
        Ok(())
    }

    /// Generate images from text.
    pub fn generate(&self, options: &GenerateOptions, observer: &Observer) -> Result<GenerateOutput> {
        let result =
            profile::record(&self.components.target.device, || self.run(options, observer, None)).map_err(|e| {
                cudnn::release_workspace();
                self.explain_out_of_memory(e, options)
            });
        profile::print_startup("generate");
        result
    }

    /// Generate with `noise` as the source of every standard-normal draw (initial latents, VAE
    /// samples, step noise) instead of the seeds' streams: to replay another implementation's
    /// noise (the parity tests replay diffusers'). `seed`/`seeds` are still reported.
    pub fn generate_with_noise(
        &self,
        options: &GenerateOptions,
        observer: &Observer,
        noise: &mut dyn StepNoise,
    ) -> Result<GenerateOutput> {
        self.run(options, observer, Some(noise))
    }

    fn run(
        &self,
        options: &GenerateOptions,
        observer: &Observer,
        noise: Option<&mut dyn StepNoise>,
    ) -> Result<GenerateOutput> {
        let mut warnings = Vec::new();

        // 1. Check inputs; decode the images (the task follows from them).
        let inputs = self.check_inputs(options)?;
        let do_guidance = self.do_classifier_free_guidance(options.guidance_scale);
        let batch = options.prompt.len() * options.num_images_per_prompt;
        // Each image has its own seed and noise stream (image i of a call with `seed` s: s + i),
        // so an image made in a batch is the image its seed makes alone.
        let seeds: Vec<u64> = match &options.seeds {
            Some(seeds) => seeds.clone(),
            None => {
                let first = options.seed.unwrap_or_else(rand::random);
                (0..batch as u64).map(|i| first.wrapping_add(i)).collect()
            }
        };
        let seed = seeds.first().copied().unwrap_or_default();
        let mut streams = NoiseSource::new(&seeds);
        let noise: &mut dyn StepNoise = match noise {
            Some(replayed) => replayed,
            None => &mut streams,
        };

        // 2. Encode the prompts (and the negative prompts for classifier-free guidance). The UNet's
        // cross-attention keys and values of them are the same at every step: made once.
        let c = &self.components;
        let mut clock = PhaseClock::start(&c.target.device)?;
        let context = match &c.text_encoder_2 {
            Some(second) => {
                let prompts = sdxl_encode_prompt::Prompts {
                    prompts: &options.prompt,
                    negative: options.negative_prompt.as_deref(),
                    prompts_2: options.prompt_2.as_deref(),
                    negative_2: options.negative_prompt_2.as_deref(),
                    copies: options.num_images_per_prompt,
                    do_guidance,
                    clip_skip: options.clip_skip,
                    truncate_long_prompts: options.truncate_long_prompts,
                    width: inputs.width,
                    height: inputs.height,
                    time_ids: match (second.requires_aesthetics_score, inputs.task, options.denoising_start) {
                        (false, Task::Txt2Img, None) => sdxl::TimeIds::TextToImage,
                        (aesthetic, ..) => sdxl::TimeIds::ImageToImage { aesthetic },
                    },
                };
                let encoded = sdxl_encode_prompt::encode_prompt(
                    c,
                    second,
                    self.prompt_encoder.sdxl_graphs(),
                    &prompts,
                    &options.size_conditions,
                    &mut warnings,
                )?;
                let context = c.unet.model.project_context(&encoded.prompt_embeds, c.dtype())?;
                c.unet.model.condition(context, options.guidance_scale, Some(&encoded.added))?
            }
            None => {
                let prompt_embeds = self.prompt_encoder.encode(
                    c,
                    &options.prompt,
                    options.negative_prompt.as_deref(),
                    options.num_images_per_prompt,
                    do_guidance,
                    options.truncate_long_prompts,
                    options.clip_skip,
                    &mut warnings,
                )?;
                let context = c.unet.model.project_context(&prompt_embeds, c.dtype())?;
                c.unet.model.condition(context, options.guidance_scale, None)?
            }
        };
        let text_encoder = clock.lap()?;

        // 3. Prepare the timesteps: the folder's scheduler, or the call's, set up for this many
        // steps; with an image, the last `strength` of them (diffusers' `get_timesteps`).
        let choice = c.scheduler.with_overrides(&options.scheduler)?;
        let mut scheduler = choice.build(options.num_inference_steps)?;
        let begin_index = match (options.denoising_start, inputs.strength) {
            (Some(start), _) => {
                let (all, order) = (scheduler.timesteps(), scheduler.order());
                let begin = sdxl::denoising_start_index(all, start, choice.num_train_timesteps(), order);
                if begin >= all.len() {
                    return Err(expected(
                        "denoising_start that leaves at least one timestep to run",
                        "denoising_start",
                        start,
                    ));
                }
                scheduler.set_begin_index(begin);
                begin
            }
            (None, Some(strength)) => {
                img2img::get_timesteps(scheduler.as_mut(), options.num_inference_steps, strength)?
            }
            (None, None) => 0,
        };
        let num_train = choice.num_train_timesteps();
        let settings = ResolvedSettings {
            num_inference_steps: options.num_inference_steps,
            guidance_scale: options.guidance_scale,
            width: inputs.width,
            height: inputs.height,
            scheduler: choice.kind().class_name().into(),
            scheduler_config: choice.config().clone(),
            task: inputs.task,
            strength: inputs.strength,
            padding_mask_crop: inputs.crop.and(options.padding_mask_crop),
            clip_skip: options.clip_skip.filter(|&k| k > 0),
            denoising_end: options.denoising_end,
            denoising_start: options.denoising_start,
            size_conditions: c
                .text_encoder_2
                .as_ref()
                .map(|_| options.size_conditions.resolved(inputs.height, inputs.width)),
        };

        // 4. Prepare the latent variables: each image's noise from its own seed.
        let prepared = self.prepare_latents(&inputs, options, batch, begin_index, scheduler.as_ref(), noise)?;
        let shape: [usize; 4] = prepared.latents.dims4()?.into();
        let conditioning = Conditioning { context, extra_channels: prepared.extra_channels };

        // 5. Denoising loop.
        let denoise_options = DenoiseOptions {
            guidance_scale: options.guidance_scale,
            do_guidance,
            dtype: c.dtype(),
            begin_index,
            end_index: options
                .denoising_end
                .map(|end| sdxl::denoising_end_index(scheduler.timesteps(), end, num_train)),
            after_step: prepared.known_region.as_ref().map(|k| k as &dyn AfterStep),
        };
        let latents = self.denoiser.run(
            &c.unet.model,
            &conditioning,
            prepared.latents,
            scheduler.as_mut(),
            noise,
            &denoise_options,
            observer,
        )?;
        warnings.extend(self.denoiser.take_graph_failure());
        warnings.extend(self.prompt_encoder.take_graph_failure());
        let denoise = clock.lap_releasing_graph_memory()?;
        if options.output_latents {
            let latents = FinalLatents { shape, data: latents.flatten_all()?.to_vec1::<f32>()? };
            let timings = PhaseTimings { text_encoder, denoise, decode: 0.0 };
            return Ok(GenerateOutput {
                images: Vec::new(),
                latents: Some(latents),
                timings,
                seed,
                seeds,
                warnings,
                settings,
            });
        }

        // 6. Decode the latents with the VAE.
        let image = decode_latents(&self.components, &self.info, &latents, options, &mut warnings)?;

        // 7. Convert to 8-bit RGB.
        let mut images = to_rgb8(&image)?;

        // 8. padding_mask_crop: each image laid back over the original through the mask.
        if let (Some(crop), Some(image), Some(mask)) = (inputs.crop, &inputs.image, &inputs.mask) {
            let (original, mask) = (image.pixels(), mask.pixels());
            images = images.iter().map(|i| padding_mask_crop::apply_overlay(&mask, &original, i, crop)).collect();
        }
        let timings = PhaseTimings { text_encoder, denoise, decode: clock.lap()? };
        Ok(GenerateOutput { images, latents: None, timings, seed, seeds, warnings, settings })
    }

    /// Step 4: the task's starting latents: noise (text to image), the image's latents noised to
    /// the first timestep (image to image), and for inpainting the UNet's extra inputs or the
    /// known region's blend.
    fn prepare_latents(
        &self,
        inputs: &CheckedInputs,
        options: &GenerateOptions,
        batch: usize,
        begin_index: usize,
        scheduler: &dyn Scheduler,
        noise: &mut dyn StepNoise,
    ) -> Result<inpaint::Prepared> {
        let c = &self.components;
        let device = &c.target.device;
        let (width, height) = (inputs.width, inputs.height);
        let takes_mask = inpaint::unet_takes_mask(c).unwrap_or(false);
        // padding_mask_crop: the region around the mask, at the output's size.
        let image = match (&inputs.image, inputs.task) {
            (Some(image), Task::Img2Img | Task::Inpaint) => {
                Some(image.cropped(inputs.crop, width, height)?.to_image_tensor(width, height, device)?)
            }
            _ => None,
        };
        let latent_timestep = scheduler.timesteps().get(begin_index).copied();
        match (inputs.task, image, &inputs.mask, latent_timestep) {
            (Task::Txt2Img, _, _, _) => {
                if takes_mask {
                    return Err(Self::inpainting_only());
                }
                let vsf = self.info.vae_scale_factor;
                let shape = [batch, c.unet.config.in_channels, height / vsf, width / vsf];
                let latents = match (&options.latents, options.denoising_start) {
                    // SDXL's handoff: another run's partly denoised latents, continued as they are.
                    (Some(given), Some(_)) => self.latents_from_caller(given, shape)?,
                    (Some(given), None) => (self.latents_from_caller(given, shape)? * scheduler.init_noise_sigma())?,
                    (None, _) => (noise.sample(shape, device)? * scheduler.init_noise_sigma())?,
                };
                Ok(inpaint::Prepared { latents, extra_channels: None, known_region: None })
            }
            (Task::Img2Img, Some(image), _, Some(timestep)) => {
                if takes_mask {
                    return Err(Self::inpainting_only());
                }
                let latents = match options.denoising_start {
                    // SDXL's image to image from denoising_start adds no noise (the image is taken as
                    // that far denoised).
                    Some(_) => img2img::encode_vae_image(c, &image, batch, noise)?,
                    None => img2img::prepare_latents(c, &image, batch, timestep, scheduler, noise)?,
                };
                Ok(inpaint::Prepared { latents, extra_channels: None, known_region: None })
            }
            (Task::Inpaint, Some(image), Some(mask), Some(latent_timestep)) => {
                let mask = mask.cropped(inputs.crop, width, height)?.to_mask_tensor(width, height, device)?;
                let vsf = self.info.vae_scale_factor;
                let shape = [batch, c.vae.config.latent_channels, height / vsf, width / vsf];
                let given = options.latents.as_ref().map(|given| self.latents_from_caller(given, shape)).transpose()?;
                let strength = inputs.strength.unwrap_or(1.0);
                let do_guidance = self.do_classifier_free_guidance(options.guidance_scale);
                let task = inpaint::Inputs {
                    image: &image,
                    mask: &mask,
                    batch,
                    strength,
                    latent_timestep,
                    do_guidance,
                    add_noise: options.denoising_start.is_none(),
                    latents: given.as_ref(),
                };
                inpaint::prepare(c, &task, scheduler, noise)
            }
            (Task::Inpaint, None, Some(mask), Some(_)) => {
                // SDXL's inpainting handoff: the caller's latents stand for the image (from denoising_start).
                let vsf = self.info.vae_scale_factor;
                let shape = [batch, c.vae.config.latent_channels, height / vsf, width / vsf];
                let given =
                    options.latents.as_ref().ok_or_else(|| Error::Internal("a handoff without latents".into()))?;
                let image_latents = self.latents_from_caller(given, shape)?;
                inpaint::prepare_from_latents(c, &mask.to_mask_tensor(width, height, device)?, image_latents, noise)
            }
            (task, ..) => Err(Error::Internal(format!("{} without its image, mask or first timestep", task.name()))),
        }
    }

    /// diffusers' `do_classifier_free_guidance`: guidance_scale > 1, unless the UNet is guided
    /// through LCM's guidance embedding (`time_cond_proj_dim`), which runs no unconditional pass.
    fn do_classifier_free_guidance(&self, guidance_scale: f64) -> bool {
        guidance_scale > 1.0 && self.components.unet.model.time_cond_proj_dim().is_none()
    }

    fn inpainting_only() -> Error {
        expected(
            "image and mask_image (this model's UNet is an inpainting UNet: it takes a mask and the masked image)",
            "mask_image",
            "none",
        )
    }

    /// A tensor allocation that failed for lack of device memory becomes an error that says what
    /// was asked and what to lower. Everything the call allocated is freed when it returns.
    fn explain_out_of_memory(&self, e: Error, o: &GenerateOptions) -> Error {
        match e {
            Error::Candle(cause) if crate::error::is_out_of_memory(&cause) => {
                let images = o.prompt.len() * o.num_images_per_prompt;
                let width = o.width.unwrap_or(self.info.default_width);
                let height = o.height.unwrap_or(self.info.default_height);
                Error::OutOfMemory(format!(
                    "{} ran out of memory generating {images} image(s) of {width}x{height}: lower num_images_per_prompt \
                     (or the number of prompts per call), width or height ({cause})",
                    self.info.device
                ))
            }
            other => other,
        }
    }
}

/// Seconds between phase boundaries, with the device synchronized at each (three waits a call).
struct PhaseClock<'a> {
    device: &'a Device,
    since: Instant,
}

impl<'a> PhaseClock<'a> {
    fn start(device: &'a Device) -> Result<Self> {
        device.synchronize()?;
        Ok(Self { device, since: Instant::now() })
    }

    /// Also a phase boundary of the GPU memory peak (`cuda::memory::phase_boundary`).
    fn lap(&mut self) -> Result<f64> {
        self.lap_trimming(false)
    }

    /// [`Self::lap`] after the denoising loop: the captured graphs' memory, idle until the next
    /// call, goes back to the driver before the VAE decode allocates its own.
    fn lap_releasing_graph_memory(&mut self) -> Result<f64> {
        self.lap_trimming(true)
    }

    fn lap_trimming(&mut self, trim_graphs: bool) -> Result<f64> {
        self.device.synchronize()?;
        let seconds = self.since.elapsed().as_secs_f64();
        crate::cuda::memory::phase_boundary(self.device, trim_graphs)?;
        self.since = Instant::now();
        Ok(seconds)
    }
}

/// Step 7: NCHW floats in [0, 1] to 8-bit RGB, rounding as diffusers' `numpy_to_pil` does.
fn to_rgb8(image: &Tensor) -> Result<Vec<RgbImage>> {
    let (n, _c, height, width) = image.dims4()?;
    let bytes = (image * 255.0)?.round()?.permute((0, 2, 3, 1))?.to_dtype(DType::U8)?.to_device(&Device::Cpu)?;
    (0..n).map(|i| Ok(RgbImage { width, height, data: bytes.i(i)?.flatten_all()?.to_vec1::<u8>()? })).collect()
}
