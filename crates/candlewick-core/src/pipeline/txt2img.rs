//! Text to image, as diffusers' `StableDiffusionPipeline.__call__` does it, step by numbered step.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, IndexOp, Tensor};

use super::components::Components;
use super::denoise::{all_finite, Conditioning, DenoiseOptions, Denoiser};
use super::noise::NoiseSource;
use super::observer::Observer;
use super::options::{
    FinalLatents, GenerateOptions, GenerateOutput, LatentsInput, LoadOptions, PhaseTimings, ResolvedSettings, RgbImage,
    MAX_IMAGES_PER_PROMPT, MAX_SIDE,
};
use super::prompt::PromptEncoder;
use crate::config::ModelFolder;
use crate::cuda::cudnn;
use crate::cuda::CudaSettings;
use crate::error::{expected, Error, Result};
use crate::profile;

/// Pipeline classes whose folders this pipeline can load.
const SUPPORTED_CLASSES: &[&str] = &["StableDiffusionPipeline"];

/// What a loaded pipeline is running on and what it produces by default.
#[derive(Debug, Clone)]
pub struct PipelineInfo {
    pub model_dir: PathBuf,
    /// "cpu" or "cuda:0".
    pub device: String,
    /// Why that device was chosen.
    pub device_reason: String,
    /// "f32" or "f16".
    pub dtype: String,
    pub default_width: usize,
    pub default_height: usize,
    /// The GPU paths this pipeline takes, resolved at load (installed on the pipeline's thread).
    pub cuda: CudaSettings,
    /// Why a requested GPU path could not be taken, one sentence each (empty when all were).
    pub cuda_fallbacks: Vec<String>,
    /// Pixels per latent cell along each side.
    pub vae_scale_factor: usize,
    /// Tokens per prompt (77 for CLIP).
    pub max_prompt_tokens: usize,
    /// The UNet was trained on this many timesteps: the most inference steps a scheduler allows.
    pub num_train_timesteps: usize,
    /// The folder's scheduler (scheduler_config.json's `_class_name`): what runs unless a call
    /// chooses another.
    pub scheduler: String,
    /// Threads of the pipeline's pool for CPU tensor work (set by the worker that runs it).
    pub threads: usize,
}

/// diffusers' `StableDiffusionPipeline`: the components, composed as text to image.
pub struct StableDiffusionPipeline {
    components: Components,
    prompt_encoder: PromptEncoder,
    denoiser: Denoiser,
    info: PipelineInfo,
}

impl StableDiffusionPipeline {
    /// Load a Stable Diffusion model folder in diffusers' layout.
    pub fn load(model_dir: &Path, options: &LoadOptions) -> Result<Self> {
        let (folder, index) = ModelFolder::open(model_dir)?;
        if !SUPPORTED_CLASSES.contains(&index.class_name.as_str()) {
            return Err(Error::model(
                model_dir.join("model_index.json"),
                format!("_class_name is {:?}; candlewick loads {SUPPORTED_CLASSES:?}", index.class_name),
            ));
        }
        let components = Components::load(&folder, &index, options)?;
        let dtype = components.target.dtype;
        let (unet_config, vae_config) = (&components.unet.config, &components.vae.config);
        let vae_scale_factor = vae_config.scale_factor();
        let default_side = unet_config.sample_size.checked_mul(vae_scale_factor).ok_or_else(|| {
            Error::model(
                folder.config_path("unet"),
                format!(
                    "sample_size {} times the VAE's scale factor {vae_scale_factor} overflows",
                    unet_config.sample_size
                ),
            )
        })?;
        let info = PipelineInfo {
            model_dir: model_dir.to_path_buf(),
            device: components.target.name.clone(),
            device_reason: components.target.reason.clone(),
            dtype: if dtype == DType::F16 { "f16" } else { "f32" }.into(),
            default_width: default_side,
            default_height: default_side,
            cuda: components.cuda.settings,
            cuda_fallbacks: components.cuda.fallbacks.clone(),
            vae_scale_factor,
            max_prompt_tokens: components.tokenizer.max_length(),
            num_train_timesteps: components.scheduler.num_train_timesteps(),
            scheduler: components.scheduler.kind().class_name().into(),
            threads: rayon::current_num_threads(),
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

    /// Generate images from text.
    pub fn generate(&self, options: &GenerateOptions, observer: &Observer) -> Result<GenerateOutput> {
        let result = profile::record(&self.components.target.device, || self.run(options, observer)).map_err(|e| {
            cudnn::release_workspace();
            self.explain_out_of_memory(e, options)
        });
        profile::print_startup("generate");
        result
    }

    fn run(&self, options: &GenerateOptions, observer: &Observer) -> Result<GenerateOutput> {
        let mut warnings = Vec::new();

        // 1. Check inputs.
        let (width, height) = self.check_inputs(options)?;
        let do_guidance = options.guidance_scale > 1.0;
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
        let mut noise = NoiseSource::new(&seeds);

        // 2. Encode the prompts (and the negative prompts for classifier-free guidance). The UNet's
        // cross-attention keys and values of them are the same at every step: made once.
        let c = &self.components;
        let mut clock = PhaseClock::start(&c.target.device)?;
        let prompt_embeds = self.prompt_encoder.encode(
            c,
            &options.prompt,
            options.negative_prompt.as_deref(),
            options.num_images_per_prompt,
            do_guidance,
            &mut warnings,
        )?;
        let conditioning = Conditioning { context: c.unet.model.project_context(&prompt_embeds, c.dtype())? };
        let text_encoder = clock.lap()?;

        // 3. Prepare the timesteps: the folder's scheduler, or the call's, set up for this many steps.
        let choice = c.scheduler.with_overrides(&options.scheduler)?;
        let mut scheduler = choice.build(options.num_inference_steps)?;
        let settings = ResolvedSettings {
            num_inference_steps: options.num_inference_steps,
            guidance_scale: options.guidance_scale,
            width,
            height,
            scheduler: choice.kind().class_name().into(),
            scheduler_config: choice.config().clone(),
        };

        // 4. Prepare the latent variables: each image's noise from its own seed.
        let vsf = self.info.vae_scale_factor;
        let shape = [batch, c.unet.config.in_channels, height / vsf, width / vsf];
        let latents = match &options.latents {
            Some(given) => self.latents_from_caller(given, shape)?,
            None => noise.sample(shape, &c.target.device)?,
        };
        let latents = (latents * scheduler.init_noise_sigma())?;

        // 5. Denoising loop.
        let denoise_options = DenoiseOptions { guidance_scale: options.guidance_scale, dtype: c.dtype() };
        let latents = self.denoiser.run(
            &c.unet.model,
            &conditioning,
            latents,
            scheduler.as_mut(),
            &mut noise,
            &denoise_options,
            observer,
        )?;
        warnings.extend(self.denoiser.take_graph_failure());
        warnings.extend(self.prompt_encoder.take_graph_failure());
        let denoise = clock.lap()?;
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
        let image = self.decode_latents(&latents, &mut warnings)?;

        // 7. Convert to 8-bit RGB.
        let images = to_rgb8(&image)?;
        let timings = PhaseTimings { text_encoder, denoise, decode: clock.lap()? };
        Ok(GenerateOutput { images, latents: None, timings, seed, seeds, warnings, settings })
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

    /// Step 1: everything a caller can get wrong, before any work. Returns (width, height).
    fn check_inputs(&self, o: &GenerateOptions) -> Result<(usize, usize)> {
        let width = o.width.unwrap_or(self.info.default_width);
        let height = o.height.unwrap_or(self.info.default_height);
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
        if o.prompt.is_empty() {
            return Err(expected("at least one prompt", "prompt", "an empty list"));
        }
        if let Some(negative) = &o.negative_prompt {
            if negative.len() != 1 && negative.len() != o.prompt.len() {
                return Err(expected(
                    &match o.prompt.len() {
                        1 => "1 negative prompt".to_string(),
                        n => format!("1 or {n} negative prompts (one per prompt)"),
                    },
                    "negative_prompt",
                    crate::error::count(negative.len(), "negative prompt", "negative prompts"),
                ));
            }
        }
        let max_steps = self.info.num_train_timesteps;
        if o.num_inference_steps == 0 || o.num_inference_steps > max_steps {
            return Err(expected(
                &format!("integer between 1 and {max_steps}"),
                "num_inference_steps",
                o.num_inference_steps,
            ));
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
                    crate::error::count(seeds.len(), "seed", "seeds"),
                ));
            }
        }
        Ok((width, height))
    }

    fn latents_from_caller(&self, given: &LatentsInput, shape: [usize; 4]) -> Result<Tensor> {
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

    /// Step 6: latents to an image tensor in [0, 1], NCHW, f32. An f16 decode that overflows
    /// (NaN or infinity: a black image in diffusers) is redone with an f32 copy of the VAE,
    /// loaded on first need, as diffusers' `force_upcast` does.
    fn decode_latents(&self, latents: &Tensor, warnings: &mut Vec<String>) -> Result<Tensor> {
        let c = &self.components;
        let scaled = (latents / c.vae.config.scaling_factor)?;
        let mut image = c.vae.model.decode(&scaled.to_dtype(c.dtype())?)?.to_dtype(DType::F32)?;
        if c.dtype() != DType::F32 && !all_finite(&image)? {
            warnings.push(format!("the VAE overflowed in {}; the image was decoded again in f32", self.info.dtype));
            image = c.vae_in_f32()?.decode(&scaled.to_dtype(DType::F32)?)?;
        }
        if !all_finite(&image)? {
            return Err(Error::NonFinite(
                "the VAE's decoded image is NaN or infinite (the latents are out of range)".into(),
            ));
        }
        Ok(((image / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
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

    fn lap(&mut self) -> Result<f64> {
        self.device.synchronize()?;
        let seconds = self.since.elapsed().as_secs_f64();
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
