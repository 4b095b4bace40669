//! Text to image, as diffusers' `StableDiffusionPipeline.__call__` does it, step by numbered step.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, IndexOp, Tensor};

use super::cuda_graph::GraphedModel;
use super::noise::NoiseSource;
use super::observer::{Observer, StepProgress};
use super::options::{
    FinalLatents, GenerateOptions, GenerateOutput, LatentsInput, LoadOptions, PhaseTimings, RgbImage,
    MAX_IMAGES_PER_PROMPT, MAX_SIDE,
};
use crate::config::{read_json, ModelFolder};
use crate::cudnn;
use crate::device::{self, DeviceChoice};
use crate::error::{expected, Error, Result};
use crate::models::attention::Context;
use crate::models::clip::{ClipTextConfig, ClipTextTransformer};
use crate::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::models::{flash, gemm};
use crate::profile;
use crate::schedulers::SchedulerChoice;
use crate::tokenizer::ClipTokenizer;
use crate::weights;

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
    /// Whether attention runs as fused FlashAttention-2 (CUDA, f16, built with flash attention, not switched off).
    pub flash_attention: bool,
    /// Whether convolutions run through cuDNN (CUDA, built with cuDNN, not switched off).
    pub cudnn: bool,
    /// Whether cuDNN plans are chosen by timing them (`cudnn` on and `cudnn_benchmark` asked).
    pub cudnn_benchmark: bool,
    /// Whether cuBLASLt algorithms are chosen by timing them (CUDA, f16, `gemm_benchmark` asked).
    pub gemm_benchmark: bool,
    /// Whether kxk convolutions run channels-last (`cudnn` on and `channels_last` not false).
    pub channels_last: bool,
    /// Whether self-attention runs through cuDNN's fused kernel (`flash_attention` and `cudnn`
    /// on, and `cudnn_attention` not false).
    pub cudnn_attention: bool,
    /// Whether the UNet step and the text encoder are captured and replayed as CUDA graphs (CUDA,
    /// not switched off).
    pub cuda_graphs: bool,
    /// Whether f32 matrix products may use TF32.
    pub tf32: bool,
    /// Pixels per latent cell along each side.
    pub vae_scale_factor: usize,
    /// Tokens per prompt (77 for CLIP).
    pub max_prompt_tokens: usize,
    /// The UNet was trained on this many timesteps: the most inference steps a scheduler allows.
    pub num_train_timesteps: usize,
    /// The folder's scheduler (scheduler_config.json's `_class_name`): what runs unless a call
    /// chooses another.
    pub scheduler: String,
}

pub struct StableDiffusionPipeline {
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextTransformer,
    unet: UNet2DConditionModel,
    unet_graphs: GraphedModel,
    text_encoder_graphs: GraphedModel,
    unet_config: UNet2DConditionConfig,
    vae: AutoencoderKL,
    vae_config: AutoencoderKLConfig,
    /// The VAE's weights file, for an f32 copy when f16 decoding overflows.
    vae_weights: PathBuf,
    vae_f32: OnceCell<AutoencoderKL>,
    scheduler: SchedulerChoice,
    target: DeviceChoice,
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
        let target = profile::startup_time("device", None, || device::choose(options.device, options.dtype))?;
        let (device, dtype) = (&target.device, target.dtype);

        let tokenizer = ClipTokenizer::from_folder(&folder.component("tokenizer"))?;

        let text_config: ClipTextConfig = read_json(&folder.config_path("text_encoder"))?;
        if tokenizer.vocab_end() > text_config.vocab_size {
            return Err(Error::model(
                folder.component("tokenizer"),
                format!(
                    "does not match the text encoder: its ids reach {} but text_encoder/config.json has vocab_size {}",
                    tokenizer.vocab_end() - 1,
                    text_config.vocab_size
                ),
            ));
        }
        // Read by the convolutions as they load (`models::conv`): channels-last filters or not.
        let cudnn = options.cudnn && cudnn::compiled() && device.is_cuda();
        let channels_last = cudnn && options.channels_last;
        cudnn::set_enabled(cudnn);
        cudnn::set_channels_last(channels_last);
        let path = weights::find_weights(&folder.component("text_encoder"), "model", dtype)?;
        let vb = weights::open(&path, dtype, device)?;
        let text_encoder = profile::startup_time("text_encoder_weights", Some(device), || {
            weights::with_file(&path, || ClipTextTransformer::new(vb, &text_config))
        })?;

        let unet_config: UNet2DConditionConfig = read_json(&folder.config_path("unet"))?;
        let path = weights::find_weights(&folder.component("unet"), "diffusion_pytorch_model", dtype)?;
        let vb = weights::open(&path, dtype, device)?;
        let unet = profile::startup_time("unet_weights", Some(device), || {
            weights::with_file(&path, || UNet2DConditionModel::new(vb, &unet_config))
        })?;

        let vae_config: AutoencoderKLConfig = read_json(&folder.config_path("vae"))?;
        let path = weights::find_weights(&folder.component("vae"), "diffusion_pytorch_model", dtype)?;
        let vb = weights::open(&path, dtype, device)?;
        let vae = profile::startup_time("vae_weights", Some(device), || {
            weights::with_file(&path, || AutoencoderKL::new(vb, &vae_config))
        })?;
        let vae_weights = path;

        let scheduler_path = folder.config_path("scheduler");
        // diffusers builds the class model_index.json names, with scheduler_config.json's fields.
        let mut scheduler_config: serde_json::Map<String, serde_json::Value> = read_json(&scheduler_path)?;
        if let Some(class) = index.component_class("scheduler") {
            scheduler_config.insert("_class_name".into(), class.into());
        }
        let scheduler = SchedulerChoice::from_folder(scheduler_config)
            .map_err(|message| Error::model(&scheduler_path, message))?;

        candle_core::cuda::set_gemm_reduced_precision_f32(options.tf32);
        let flash_attention = options.flash_attention && flash::compiled() && device.is_cuda() && dtype == DType::F16;
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
            device: target.name.clone(),
            device_reason: target.reason.clone(),
            dtype: if dtype == DType::F16 { "f16" } else { "f32" }.into(),
            default_width: default_side,
            default_height: default_side,
            flash_attention,
            cudnn,
            cudnn_benchmark: cudnn && options.cudnn_benchmark,
            gemm_benchmark: options.gemm_benchmark && device.is_cuda() && dtype == DType::F16,
            channels_last,
            cudnn_attention: flash_attention && cudnn && options.cudnn_attention,
            cuda_graphs: options.cuda_graphs && device.is_cuda(),
            tf32: options.tf32 && device.is_cuda(),
            vae_scale_factor,
            max_prompt_tokens: tokenizer.max_length(),
            num_train_timesteps: scheduler.num_train_timesteps(),
            scheduler: scheduler.kind().class_name().into(),
        };
        Ok(Self {
            tokenizer,
            text_encoder,
            unet_graphs: GraphedModel::unet(info.cuda_graphs),
            text_encoder_graphs: GraphedModel::text_encoder(info.cuda_graphs),
            unet,
            unet_config,
            vae,
            vae_config,
            vae_weights,
            vae_f32: OnceCell::new(),
            scheduler,
            target,
            info,
        })
    }

    pub fn info(&self) -> &PipelineInfo {
        &self.info
    }

    /// Generate images from text.
    pub fn generate(&self, options: &GenerateOptions, observer: &Observer) -> Result<GenerateOutput> {
        let result = profile::record(&self.target.device, || self.run(options, observer)).map_err(|e| {
            cudnn::release_workspace();
            self.explain_out_of_memory(e, options)
        });
        profile::print_startup("generate");
        result
    }

    fn run(&self, options: &GenerateOptions, observer: &Observer) -> Result<GenerateOutput> {
        let mut warnings = Vec::new();
        flash::set_enabled(self.info.flash_attention);
        cudnn::set_enabled(self.info.cudnn);
        cudnn::set_benchmark(self.info.cudnn_benchmark);
        gemm::set_benchmark(self.info.gemm_benchmark);
        cudnn::set_attention(self.info.cudnn_attention);

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

        // 2. Encode the prompts (and the negative prompts for classifier-free guidance).
        let mut clock = PhaseClock::start(&self.target.device)?;
        // The UNet's cross-attention keys and values of them are the same at every step: made once.
        let prompt_embeds = self.encode_prompt(options, do_guidance, &mut warnings)?;
        let context = self.unet.project_context(&prompt_embeds, self.target.dtype)?;
        let text_encoder = clock.lap()?;

        // 3. Prepare the timesteps.
        let mut scheduler = self.scheduler.with_overrides(&options.scheduler)?.build(options.num_inference_steps)?;

        // 4. Prepare the latent variables.
        let vsf = self.info.vae_scale_factor;
        let shape = [batch, self.unet_config.in_channels, height / vsf, width / vsf];
        let mut latents = match &options.latents {
            Some(given) => self.latents_from_caller(given, shape)?,
            None => noise.sample(shape, &self.target.device)?,
        };
        latents = (latents * scheduler.init_noise_sigma())?;

        // 5. Denoising loop.
        let timesteps = scheduler.timesteps().to_vec();
        for (i, &t) in timesteps.iter().enumerate() {
            if observer.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let model_input = if do_guidance { Tensor::cat(&[&latents, &latents], 0)? } else { latents.clone() };
            let model_input = scheduler.scale_model_input(&model_input, t)?.to_dtype(self.target.dtype)?;
            let noise_pred = crate::profile::scope("unet", || {
                self.predict_noise(&model_input, t, &context)?.to_dtype(DType::F32)
            })?;
            let noise_pred = if do_guidance {
                let (uncond, text) = (noise_pred.i(..batch)?, noise_pred.i(batch..)?);
                (&uncond + ((text - &uncond)? * options.guidance_scale)?)?
            } else {
                noise_pred
            };
            latents = scheduler.step(&noise_pred, t, &latents, &mut noise)?;
            observer.step_done(StepProgress { step: i + 1, total_steps: timesteps.len(), timestep: t }, &latents);
        }
        if observer.is_cancelled() {
            return Err(Error::Cancelled);
        }
        warnings.extend(self.unet_graphs.take_failure());
        warnings.extend(self.text_encoder_graphs.take_failure());
        let denoise = clock.lap()?;
        if options.output_latents {
            let latents = FinalLatents { shape, data: latents.flatten_all()?.to_vec1::<f32>()? };
            let timings = PhaseTimings { text_encoder, denoise, decode: 0.0 };
            return Ok(GenerateOutput { images: Vec::new(), latents: Some(latents), timings, seed, seeds, warnings });
        }

        // 6. Decode the latents with the VAE.
        let image = self.decode_latents(&latents, &mut warnings)?;

        // 7. Convert to 8-bit RGB.
        let images = to_rgb8(&image)?;
        let timings = PhaseTimings { text_encoder, denoise, decode: clock.lap()? };
        Ok(GenerateOutput { images, latents: None, timings, seed, seeds, warnings })
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

    /// Step 2: CLIP embeddings for every image of the batch, unconditional ones first when
    /// guiding. Each text goes through the encoder once (negative and positive prompts in one
    /// batch), and its embedding is repeated for its `num_images_per_prompt` images.
    fn encode_prompt(&self, o: &GenerateOptions, do_guidance: bool, warnings: &mut Vec<String>) -> Result<Tensor> {
        let mut texts: Vec<&str> = Vec::with_capacity(2 * o.prompt.len());
        if do_guidance {
            match &o.negative_prompt {
                None => texts.extend(o.prompt.iter().map(|_| "")),
                Some(n) if n.len() == 1 => texts.extend(o.prompt.iter().map(|_| n[0].as_str())),
                Some(n) => texts.extend(n.iter().map(String::as_str)),
            }
        }
        texts.extend(o.prompt.iter().map(String::as_str));
        let embeds = self.embed_texts(&texts, warnings)?;
        let copies = o.num_images_per_prompt;
        if copies == 1 {
            return Ok(embeds);
        }
        let rows: Vec<u32> = (0..texts.len() as u32).flat_map(|t| std::iter::repeat_n(t, copies)).collect();
        let rows = Tensor::new(rows.as_slice(), &self.target.device)?;
        Ok(embeds.index_select(&rows, 0)?)
    }

    fn embed_texts(&self, texts: &[&str], warnings: &mut Vec<String>) -> Result<Tensor> {
        let mut ids = Vec::with_capacity(texts.len() * self.tokenizer.max_length());
        for text in texts {
            let encoded = self.tokenizer.encode(text)?;
            if let Some(cut) = encoded.truncated {
                warnings.push(format!(
                    "The following part of your input was truncated because CLIP can only handle sequences up to {} tokens: {cut:?}",
                    self.tokenizer.max_length()
                ));
            }
            ids.extend_from_slice(&encoded.ids);
        }
        let ids = Tensor::from_vec(ids, (texts.len(), self.tokenizer.max_length()), &self.target.device)?;
        Ok(self.text_encoder_graphs.run(&[&ids], |ids| self.text_encoder.forward(ids[0]))?)
    }

    /// Step 5's UNet call: the noise prediction for `sample` at `timestep`, through the shape's
    /// CUDA graph when graphs are on.
    fn predict_noise(&self, sample: &Tensor, timestep: f64, context: &Context) -> candle_core::Result<Tensor> {
        let t_proj = self.unet.time_proj(timestep, sample)?;
        if !self.unet_graphs.enabled() {
            return self.unet.forward_with_time_proj(sample, &t_proj, context);
        }
        // The graph's inputs: the latents, the timestep, the text and each layer's keys and values of it.
        let mut inputs = vec![sample, &t_proj, &context.hidden];
        inputs.extend(&context.keys_values);
        self.unet_graphs.run(&inputs, |x| {
            let context = Context { hidden: x[2].clone(), keys_values: x[3..].iter().map(|&kv| kv.clone()).collect() };
            self.unet.forward_with_time_proj(x[0], x[1], &context)
        })
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
        Ok(Tensor::from_vec(given.data.clone(), &shape, &self.target.device)?)
    }

    /// Step 6: latents to an image tensor in [0, 1], NCHW, f32. An f16 decode that overflows
    /// (NaN or infinity: a black image in diffusers) is redone with an f32 copy of the VAE,
    /// loaded on first need, as diffusers' `force_upcast` does.
    fn decode_latents(&self, latents: &Tensor, warnings: &mut Vec<String>) -> Result<Tensor> {
        let scaled = (latents / self.vae_config.scaling_factor)?;
        let mut image = self.vae.decode(&scaled.to_dtype(self.target.dtype)?)?.to_dtype(DType::F32)?;
        if self.target.dtype != DType::F32 && !all_finite(&image)? {
            warnings.push(format!("the VAE overflowed in {}; the image was decoded again in f32", self.info.dtype));
            image = self.vae_in_f32()?.decode(&scaled.to_dtype(DType::F32)?)?;
        }
        Ok(((image / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
    }

    fn vae_in_f32(&self) -> Result<&AutoencoderKL> {
        if let Some(vae) = self.vae_f32.get() {
            return Ok(vae);
        }
        let vb = weights::open(&self.vae_weights, DType::F32, &self.target.device)?;
        let vae = weights::with_file(&self.vae_weights, || AutoencoderKL::new(vb, &self.vae_config))?;
        Ok(self.vae_f32.get_or_init(|| vae))
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

/// Whether every value of an f32 tensor is finite: a sum carries NaN and infinity through
/// (a max may skip NaN); one reduction, one scalar read back.
fn all_finite(t: &Tensor) -> Result<bool> {
    Ok(t.abs()?.sum_all()?.to_scalar::<f32>()?.is_finite())
}

/// Step 7: NCHW floats in [0, 1] to 8-bit RGB, rounding as diffusers' `numpy_to_pil` does.
fn to_rgb8(image: &Tensor) -> Result<Vec<RgbImage>> {
    let (n, _c, height, width) = image.dims4()?;
    let bytes = (image * 255.0)?.round()?.permute((0, 2, 3, 1))?.to_dtype(DType::U8)?.to_device(&Device::Cpu)?;
    (0..n).map(|i| Ok(RgbImage { width, height, data: bytes.i(i)?.flatten_all()?.to_vec1::<u8>()? })).collect()
}
