//! What a caller asks of the pipeline and what it answers: loading options and what the loaded
//! pipeline runs on ([`PipelineInfo`]), per-call generation options and each call's output.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cuda::CudaSettings;
use crate::device::{DTypeRequest, DeviceRequest};
use crate::loaders::lora::LoraSpec;
use crate::loaders::textual_inversion::TextualInversionSource;

/// How to load a model folder.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// "auto" (default), "cpu" or "cuda".
    pub device: DeviceRequest,
    /// f32 or f16; the default is f16 on CUDA and f32 on the CPU.
    pub dtype: DTypeRequest,
    /// The GPU paths asked for (attention backend, convolution path, CUDA graphs, autotuning,
    /// TF32), resolved at load against the build, the device and the dtype.
    pub cuda: CudaSettings,
    /// Threads for CPU tensor work, in a pool of the pipeline's own (None: the cores available to
    /// the process). Under load, fewer threads than cores can be faster.
    pub threads: Option<usize>,
    /// Textual inversion embeddings to add to the tokenizer and text encoder (diffusers'
    /// `load_textual_inversion`), in order.
    pub textual_inversions: Vec<TextualInversionSource>,
    /// For a single-file checkpoint: a diffusers folder of its family whose configs and
    /// tokenizer(s) it takes (diffusers' `from_single_file(config=...)`); for an SD1.x file a folder
    /// with only `tokenizer/` takes diffusers' built-in SD1.x defaults for the rest (SD2.x and SDXL
    /// files need the folder's configs; SDXL's `tokenizer_2/` too).
    pub config: Option<PathBuf>,
    /// Another VAE instead of the model's: a diffusers VAE folder, or a `.safetensors` file in
    /// diffusers' names or the original layout (A1111's VAE files).
    pub vae: Option<PathBuf>,
    /// LoRAs fused into the UNet and the text encoder at load.
    pub loras: Vec<LoraSpec>,
}

/// What a loaded pipeline is running on and what it produces by default.
#[derive(Debug, Clone)]
pub struct PipelineInfo {
    pub model_dir: PathBuf,
    /// model_index.json's `_class_name` ("StableDiffusionXLPipeline", ...): the model's family.
    pub pipeline_class: String,
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
    /// The LoRAs fused into the weights (load option `loras`, then [`StableDiffusionPipeline::set_loras`]).
    pub loras: Vec<LoraSpec>,
}

/// SDXL's micro-conditioning (diffusers' `StableDiffusionXLPipeline.__call__` arguments of the same
/// names), each `[height, width]` or `[top, left]` in pixels. Unset sizes are the output's size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SizeConditions {
    /// The size the image is presented as having been before any resize (default: the output size).
    pub original_size: Option<[usize; 2]>,
    /// Where the image is presented as cropped from (default [0, 0]: centred, uncropped).
    pub crops_coords_top_left: [usize; 2],
    /// The size the image is presented as having (default: the output size).
    pub target_size: Option<[usize; 2]>,
    /// The same for the unconditional pass; used when both negative sizes are given (else the
    /// unconditional pass reads the positive ones), as diffusers does.
    pub negative_original_size: Option<[usize; 2]>,
    pub negative_crops_coords_top_left: [usize; 2],
    pub negative_target_size: Option<[usize; 2]>,
    /// The refiner's (`requires_aesthetics_score`) score of the wanted image (diffusers' default 6).
    pub aesthetic_score: f64,
    /// The refiner's score for the unconditional pass (default 2.5).
    pub negative_aesthetic_score: f64,
}

impl Default for SizeConditions {
    fn default() -> Self {
        Self {
            original_size: None,
            crops_coords_top_left: [0, 0],
            target_size: None,
            negative_original_size: None,
            negative_crops_coords_top_left: [0, 0],
            negative_target_size: None,
            aesthetic_score: 6.0,
            negative_aesthetic_score: 2.5,
        }
    }
}

/// The most pixels along one side (src/options.ts has the same limit).
pub const MAX_SIDE: usize = 8192;
/// The most images per prompt in one call (src/options.ts has the same limit).
pub const MAX_IMAGES_PER_PROMPT: usize = 64;

/// Latents the caller supplies for exact reproduction, in NCHW order.
#[derive(Debug, Clone)]
pub struct LatentsInput {
    pub shape: [usize; 4],
    pub data: Vec<f32>,
}

/// An image a call takes: img2img's and inpainting's `image`, inpainting's `mask_image`.
#[derive(Debug, Clone)]
pub enum ImageInput {
    /// The bytes of a PNG, JPEG or WebP file (the format is read from the bytes).
    Encoded(Vec<u8>),
    /// Decoded pixels, rows top to bottom, `channels` bytes a pixel: 1 gray, 2 gray + alpha,
    /// 3 RGB, 4 RGBA.
    Raw { width: usize, height: usize, channels: usize, data: Vec<u8> },
}

/// One call: text to image, or, with `image`, image to image, or, with `image` and `mask_image`,
/// inpainting. Field names follow diffusers' `StableDiffusionPipeline.__call__`.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// One or more prompts; each yields `num_images_per_prompt` images.
    pub prompt: Vec<String>,
    /// None, or one negative prompt per prompt (or a single one for all).
    pub negative_prompt: Option<Vec<String>>,
    /// SDXL: the prompts `tokenizer_2` and `text_encoder_2` read (diffusers' `prompt_2`), one for all
    /// prompts or one per prompt. None: `prompt` (diffusers' `prompt_2 or prompt`). The refiner, whose
    /// only text encoder is the second, reads `prompt` and not these, as diffusers does (a warning says so).
    pub prompt_2: Option<Vec<String>>,
    /// SDXL: the negative prompts of the second text encoder (diffusers' `negative_prompt_2`), one for all
    /// or one per prompt. None: `negative_prompt`. Without `negative_prompt`, a model with
    /// `force_zeros_for_empty_prompt` (SDXL base's default) conditions on zeros and ignores it, as diffusers does.
    pub negative_prompt_2: Option<Vec<String>>,
    pub num_inference_steps: usize,
    pub guidance_scale: f64,
    /// Pixels; None means the UNet's sample_size times the VAE's scale factor.
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub num_images_per_prompt: usize,
    /// Seeds image i's initial latents and step noise with `seed + i`. None draws a random seed.
    pub seed: Option<u64>,
    /// One seed per image (prompts x num_images_per_prompt, in output order), instead of `seed`:
    /// each image's latents and eta noise come from its own stream, so an image made in a batch is
    /// the image that a one-image call with `seed: seeds[i]` makes.
    pub seeds: Option<Vec<u64>>,
    /// Initial latents (text to image), or inpainting's noise (diffusers' `latents`: the run starts
    /// from them whatever the strength), or with `mask_image` and `denoising_start` and no `image`
    /// the image's latents (SDXL's inpainting handoff); when given, `seed` feeds only the other draws.
    pub latents: Option<LatentsInput>,
    /// The scheduler: `type` (a class, type or preset name: another class than the folder's) and
    /// fields of its config in diffusers' names, merged over the folder's scheduler_config.json
    /// (diffusers' `from_config(config, **overrides)`). Empty: the folder's scheduler as is.
    pub scheduler: serde_json::Map<String, serde_json::Value>,
    /// Return the denoised latents instead of decoding them (diffusers' `output_type="latent"`).
    pub output_latents: bool,
    /// The picture to start from (diffusers' `StableDiffusionImg2ImgPipeline`'s `image`): the call
    /// is image to image, or inpainting with `mask_image`. Its size, rounded down to a multiple
    /// of 8, is the output's unless `width` and `height` are given.
    pub image: Option<ImageInput>,
    /// Where to repaint (white) and what to keep (black), the size of `image`
    /// (`StableDiffusionInpaintPipeline`'s `mask_image`).
    pub mask_image: Option<ImageInput>,
    /// How much of the image to repaint, in (0, 1]: the share of the steps that run, from
    /// the image noised to that point. None: 0.8 for image to image, 1 for inpainting; for SDXL
    /// 0.3 and 0.9999 (diffusers' defaults).
    pub strength: Option<f64>,
    /// Inpaint only the region around the mask (diffusers' `padding_mask_crop`, A1111's "inpaint
    /// only masked"): the box around the mask's nonzero pixels, this many pixels wider on each
    /// side and grown to the output's aspect ratio, is cropped from the image and mask, resized to
    /// the output's size, inpainted, and laid back over the original through the mask: the images
    /// come out at the original image's size. Needs `image` and `mask_image`.
    pub padding_mask_crop: Option<usize>,
    /// Decode the latents in overlapping tiles (diffusers' `enable_vae_tiling`): memory follows
    /// the tile, not the image. Off, a decode that runs out of memory is redone in tiles, with a warning.
    pub vae_tiling: bool,
    /// Decode the images of the batch one at a time (diffusers' `enable_vae_slicing`). Off, a batch
    /// of large images (about 0.5 megapixels and up, where one image keeps the GPU busy) is decoded
    /// one at a time anyway, in a fraction of the memory (images within one 8-bit level of the
    /// whole batch's: cuDNN may pick other algorithms for one image).
    pub vae_slicing: bool,
    /// Encode prompts as diffusers' `StableDiffusionPipeline` does: no weighting syntax, cut at
    /// `model_max_length` (77) tokens with a warning (compel's `truncate_long_prompts`). Off (the
    /// default), prompts take A1111's `(word:1.3)` syntax and any length, in 75-token chunks.
    pub truncate_long_prompts: bool,
    /// Condition on the text encoder's hidden states this many layers before the last (diffusers'
    /// `clip_skip`: 1 is the penultimate layer's output, with the final layer norm applied in
    /// Stable Diffusion 1.x/2.x; SDXL starts from the penultimate layer and skips further). The
    /// negative prompts are encoded without it, as diffusers does. None and 0: no skip.
    pub clip_skip: Option<usize>,
    /// SDXL's size conditions (`original_size`, `crops_coords_top_left`, `target_size` and their
    /// negatives); only SDXL models take them.
    pub size_conditions: SizeConditions,
    /// SDXL: stop denoising this share of the way through the schedule, in (0, 1) (diffusers'
    /// `denoising_end`): with `output_latents`, the latents a refiner continues from.
    pub denoising_end: Option<f64>,
    /// SDXL: start this share of the way through the schedule, in (0, 1) (diffusers'
    /// `denoising_start`): from `image` without adding noise, or from `latents` as they are (the
    /// refiner's half of a base-to-refiner handoff: the base's `denoising_end` latents).
    pub denoising_start: Option<f64>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            prompt: vec![String::new()],
            negative_prompt: None,
            prompt_2: None,
            negative_prompt_2: None,
            num_inference_steps: 50,
            guidance_scale: 7.5,
            width: None,
            height: None,
            num_images_per_prompt: 1,
            seed: None,
            seeds: None,
            latents: None,
            scheduler: serde_json::Map::new(),
            output_latents: false,
            image: None,
            mask_image: None,
            strength: None,
            padding_mask_crop: None,
            vae_tiling: false,
            vae_slicing: false,
            truncate_long_prompts: false,
            clip_skip: None,
            size_conditions: SizeConditions::default(),
            denoising_end: None,
            denoising_start: None,
        }
    }
}

/// An 8-bit RGB image, rows top to bottom, 3 bytes a pixel.
#[derive(Debug, Clone)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Where one call's time went, in seconds, measured with the device synchronized at each boundary.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseTimings {
    /// Tokenizing and the CLIP text encoder (prompts and negative prompts).
    pub text_encoder: f64,
    /// The whole denoising loop (UNet, guidance, scheduler steps).
    pub denoise: f64,
    /// The VAE decode and the conversion to 8-bit RGB.
    pub decode: f64,
}

/// Denoised latents, NCHW, f32 (not divided by the VAE's scaling factor).
#[derive(Debug, Clone)]
pub struct FinalLatents {
    pub shape: [usize; 4],
    pub data: Vec<f32>,
}

/// The settings a call ran with, every default filled in: callers record them without knowing
/// the defaults (the model's size, the folder's scheduler and its config).
#[derive(Debug, Clone)]
pub struct ResolvedSettings {
    pub num_inference_steps: usize,
    pub guidance_scale: f64,
    pub width: usize,
    pub height: usize,
    /// The scheduler's diffusers class ("PNDMScheduler").
    pub scheduler: String,
    /// Its config as it ran: the folder's fields with the call's merged over them (diffusers' names).
    pub scheduler_config: serde_json::Map<String, serde_json::Value>,
    /// What the call did.
    pub task: Task,
    /// How much of the image was repainted (image to image and inpainting).
    pub strength: Option<f64>,
    /// The call's `padding_mask_crop`.
    pub padding_mask_crop: Option<usize>,
    /// The call's `clip_skip` (None when 0 or absent).
    pub clip_skip: Option<usize>,
    /// The call's `denoising_end`.
    pub denoising_end: Option<f64>,
    /// The call's `denoising_start`.
    pub denoising_start: Option<f64>,
    /// SDXL: the size conditions as they ran (unset sizes filled with the output's); None for other models.
    pub size_conditions: Option<SizeConditions>,
}

/// What a call does, from the images it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Txt2Img,
    Img2Img,
    Inpaint,
}

impl Task {
    /// "txt2img", "img2img", "inpaint" (the CLI's commands).
    pub fn name(self) -> &'static str {
        match self {
            Task::Txt2Img => "txt2img",
            Task::Img2Img => "img2img",
            Task::Inpaint => "inpaint",
        }
    }

    /// diffusers' default `strength` (none for text to image).
    pub fn default_strength(self) -> Option<f64> {
        match self {
            Task::Txt2Img => None,
            Task::Img2Img => Some(0.8),
            Task::Inpaint => Some(1.0),
        }
    }
}

/// What one call returns.
#[derive(Debug, Clone)]
pub struct GenerateOutput {
    /// The images; empty when latents were asked for.
    pub images: Vec<RgbImage>,
    /// The denoised latents, when `output_latents` was set.
    pub latents: Option<FinalLatents>,
    pub timings: PhaseTimings,
    /// The first image's seed (drawn at random when the caller gave none).
    pub seed: u64,
    /// Each image's seed, the one that makes that image alone: `seed + i`, or the caller's `seeds`.
    pub seeds: Vec<u64>,
    /// Things a user should know but that did not stop the call (a truncated prompt, ...).
    pub warnings: Vec<String>,
    /// The settings it ran with.
    pub settings: ResolvedSettings,
}
