//! The flat options objects JavaScript hands over (validated already by src/options.ts), converted
//! once, with `TryFrom`, into the core's types. Field names become camelCase in JS.

use candlewick_core::cuda::{Autotune, CudaSettings};
use candlewick_core::error::expected;
use candlewick_core::loaders::lora::LoraSpec;
use candlewick_core::loaders::textual_inversion::TextualInversionSource;
use candlewick_core::pipeline::{GenerateOptions, ImageInput, LatentsInput, LoadOptions, PipelineInfo, SizeConditions};
use candlewick_core::Error;
use napi::bindgen_prelude::{BigInt, Float32Array, Uint8Array};
use napi_derive::napi;

/// How to load a model folder. Unset fields take the core's defaults.
#[napi(object)]
pub struct RawLoadOptions {
    /// "auto" | "cpu" | "cuda".
    pub device: Option<String>,
    /// "auto" | "f32" | "f16".
    pub dtype: Option<String>,
    /// "auto" | "cudnn" | "flash" | "math".
    pub attention: Option<String>,
    /// "auto" | "cudnn-nhwc" | "cudnn-nchw" | "candle".
    pub convolution: Option<String>,
    pub cuda_graphs: Option<bool>,
    pub autotune: Option<RawAutotune>,
    pub tf32: Option<bool>,
    /// FP8 (e4m3) products for the UNet's linear layers (CUDA, f16, compute capability 8.9+).
    pub fp8: Option<bool>,
    /// Threads for CPU tensor work (default: the cores available).
    pub threads: Option<u32>,
    /// Textual inversion embeddings (.safetensors paths, each with an optional token).
    pub textual_inversions: Option<Vec<RawTextualInversion>>,
    /// A single-file checkpoint's configs and tokenizer: a diffusers folder.
    pub config: Option<String>,
    /// Another VAE: a diffusers VAE folder or a .safetensors file.
    pub vae: Option<String>,
    /// LoRAs fused at load.
    pub loras: Option<Vec<RawLora>>,
}

/// One textual inversion embedding file and the token to give it (default: the file's own).
#[napi(object)]
pub struct RawTextualInversion {
    pub path: String,
    pub token: Option<String>,
}

/// One LoRA file and its weight.
#[napi(object)]
pub struct RawLora {
    pub path: String,
    pub weight: f64,
}

impl From<RawLora> for LoraSpec {
    fn from(raw: RawLora) -> Self {
        LoraSpec { path: raw.path.into(), weight: raw.weight }
    }
}

impl From<&LoraSpec> for RawLora {
    fn from(spec: &LoraSpec) -> Self {
        RawLora { path: spec.path.display().to_string(), weight: spec.weight }
    }
}

/// Which libraries' plans are chosen by timing them.
#[napi(object)]
pub struct RawAutotune {
    pub cudnn: Option<bool>,
    pub gemm: Option<bool>,
}

impl TryFrom<RawLoadOptions> for LoadOptions {
    type Error = Error;
    fn try_from(raw: RawLoadOptions) -> Result<Self, Error> {
        let defaults = LoadOptions::default();
        let (d, autotune) = (defaults.cuda, raw.autotune.unwrap_or(RawAutotune { cudnn: None, gemm: None }));
        Ok(LoadOptions {
            device: raw.device.as_deref().map(str::parse).transpose()?.unwrap_or(defaults.device),
            dtype: raw.dtype.as_deref().map(str::parse).transpose()?.unwrap_or(defaults.dtype),
            cuda: CudaSettings {
                attention: raw.attention.as_deref().map(str::parse).transpose()?.unwrap_or(d.attention),
                convolution: raw.convolution.as_deref().map(str::parse).transpose()?.unwrap_or(d.convolution),
                cuda_graphs: raw.cuda_graphs.unwrap_or(d.cuda_graphs),
                autotune: Autotune {
                    cudnn: autotune.cudnn.unwrap_or(d.autotune.cudnn),
                    gemm: autotune.gemm.unwrap_or(d.autotune.gemm),
                },
                tf32: raw.tf32.unwrap_or(d.tf32),
                fp8: raw.fp8.unwrap_or(d.fp8),
            },
            threads: raw.threads.map(|n| n as usize).or(defaults.threads),
            textual_inversions: raw
                .textual_inversions
                .unwrap_or_default()
                .into_iter()
                .map(|t| TextualInversionSource { path: t.path.into(), token: t.token })
                .collect(),
            config: raw.config.map(Into::into),
            vae: raw.vae.map(Into::into),
            loras: raw.loras.unwrap_or_default().into_iter().map(LoraSpec::from).collect(),
        })
    }
}

/// Initial latents in NCHW order.
#[napi(object)]
pub struct RawLatents {
    pub shape: Vec<u32>,
    pub data: Float32Array,
}

/// One text-to-image call. Unset fields take the core's defaults (`GenerateOptions::default()`).
#[napi(object)]
pub struct RawGenerateOptions {
    pub prompt: Vec<String>,
    pub negative_prompt: Option<Vec<String>>,
    /// SDXL: the second text encoder's prompts and negative prompts (diffusers' `prompt_2`, `negative_prompt_2`).
    pub prompt_2: Option<Vec<String>>,
    pub negative_prompt_2: Option<Vec<String>>,
    pub num_inference_steps: Option<u32>,
    pub guidance_scale: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub num_images_per_prompt: Option<u32>,
    /// A u64 as a BigInt.
    pub seed: Option<BigInt>,
    /// One u64 per image, instead of `seed`.
    pub seeds: Option<Vec<BigInt>>,
    pub latents: Option<RawLatents>,
    /// `{ type, ...fields }` in diffusers' snake_case names (src/schedulers.ts converts them).
    pub scheduler: Option<serde_json::Map<String, serde_json::Value>>,
    /// Return the denoised latents instead of images.
    pub output_latents: Option<bool>,
    /// img2img's and inpainting's picture.
    pub image: Option<RawImageInput>,
    /// Inpainting's mask (white = repaint).
    pub mask_image: Option<RawImageInput>,
    pub strength: Option<f64>,
    /// Inpaint only the region around the mask, padded by this many pixels (diffusers' `padding_mask_crop`).
    pub padding_mask_crop: Option<u32>,
    pub vae_tiling: Option<bool>,
    pub vae_slicing: Option<bool>,
    /// diffusers' plain prompt encoding (no weighting syntax, cut at 77 tokens with a warning).
    pub truncate_long_prompts: Option<bool>,
    /// diffusers' `clip_skip` (0 or absent: none).
    pub clip_skip: Option<u32>,
    /// SDXL: stop this share of the way through the schedule.
    pub denoising_end: Option<f64>,
    /// SDXL: start this share of the way through it (from `image`, or the handoff's `latents`).
    pub denoising_start: Option<f64>,
    /// SDXL refiner: the aesthetic scores of its size conditions.
    pub aesthetic_score: Option<f64>,
    pub negative_aesthetic_score: Option<f64>,
    /// SDXL's size conditions, each [height, width] (crops: [top, left]).
    pub original_size: Option<Vec<u32>>,
    pub crops_coords_top_left: Option<Vec<u32>>,
    pub target_size: Option<Vec<u32>>,
    pub negative_original_size: Option<Vec<u32>>,
    pub negative_crops_coords_top_left: Option<Vec<u32>>,
    pub negative_target_size: Option<Vec<u32>>,
    /// Progress events carry previews of the latents every this many steps (not a core option:
    /// the binding's observer makes them).
    pub preview_every: Option<u32>,
}

/// An input image: the bytes of a PNG, JPEG or WebP file, or raw pixels when `width`, `height`
/// and `channels` are set (src/image-input.ts reads paths and checks raw sizes).
#[napi(object)]
pub struct RawImageInput {
    pub data: Uint8Array,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub channels: Option<u32>,
}

impl From<RawImageInput> for ImageInput {
    fn from(raw: RawImageInput) -> Self {
        let data = raw.data.to_vec();
        match (raw.width, raw.height, raw.channels) {
            (Some(width), Some(height), Some(channels)) => {
                ImageInput::Raw { width: width as usize, height: height as usize, channels: channels as usize, data }
            }
            _ => ImageInput::Encoded(data),
        }
    }
}

impl TryFrom<RawGenerateOptions> for GenerateOptions {
    type Error = Error;
    fn try_from(raw: RawGenerateOptions) -> Result<Self, Error> {
        let defaults = GenerateOptions::default();
        let sizes = SizeConditions::default();
        Ok(GenerateOptions {
            prompt: raw.prompt,
            negative_prompt: raw.negative_prompt,
            prompt_2: raw.prompt_2,
            negative_prompt_2: raw.negative_prompt_2,
            num_inference_steps: raw.num_inference_steps.map_or(defaults.num_inference_steps, |n| n as usize),
            guidance_scale: raw.guidance_scale.unwrap_or(defaults.guidance_scale),
            width: raw.width.map(|w| w as usize),
            height: raw.height.map(|h| h as usize),
            num_images_per_prompt: raw.num_images_per_prompt.map_or(defaults.num_images_per_prompt, |n| n as usize),
            seed: raw.seed.map(seed_from_bigint).transpose()?,
            seeds: raw.seeds.map(|seeds| seeds.into_iter().map(seed_from_bigint).collect()).transpose()?,
            latents: raw.latents.map(LatentsInput::try_from).transpose()?,
            scheduler: raw.scheduler.unwrap_or_default(),
            output_latents: raw.output_latents.unwrap_or(defaults.output_latents),
            image: raw.image.map(ImageInput::from),
            mask_image: raw.mask_image.map(ImageInput::from),
            strength: raw.strength,
            padding_mask_crop: raw.padding_mask_crop.map(|p| p as usize),
            vae_tiling: raw.vae_tiling.unwrap_or(defaults.vae_tiling),
            vae_slicing: raw.vae_slicing.unwrap_or(defaults.vae_slicing),
            truncate_long_prompts: raw.truncate_long_prompts.unwrap_or(defaults.truncate_long_prompts),
            clip_skip: raw.clip_skip.map(|k| k as usize),
            denoising_end: raw.denoising_end,
            denoising_start: raw.denoising_start,
            size_conditions: SizeConditions {
                original_size: pair(raw.original_size, "original_size")?,
                crops_coords_top_left: pair(raw.crops_coords_top_left, "crops_coords_top_left")?.unwrap_or_default(),
                target_size: pair(raw.target_size, "target_size")?,
                negative_original_size: pair(raw.negative_original_size, "negative_original_size")?,
                negative_crops_coords_top_left: pair(
                    raw.negative_crops_coords_top_left,
                    "negative_crops_coords_top_left",
                )?
                .unwrap_or_default(),
                negative_target_size: pair(raw.negative_target_size, "negative_target_size")?,
                aesthetic_score: raw.aesthetic_score.unwrap_or(sizes.aesthetic_score),
                negative_aesthetic_score: raw.negative_aesthetic_score.unwrap_or(sizes.negative_aesthetic_score),
            },
        })
    }
}

/// A [height, width] (or [top, left]) pair; the core checks the values.
fn pair(value: Option<Vec<u32>>, option: &str) -> Result<Option<[usize; 2]>, Error> {
    match value.as_deref() {
        None => Ok(None),
        Some(&[a, b]) => Ok(Some([a as usize, b as usize])),
        Some(other) => Err(expected("array of 2 integers", option, format!("{other:?}"))),
    }
}

fn seed_from_bigint(seed: BigInt) -> Result<u64, Error> {
    match seed.get_u64() {
        (false, value, true) => Ok(value),
        _ => Err(expected("integer between 0 and 2^64 - 1", "seed", "a BigInt out of that range")),
    }
}

impl TryFrom<RawLatents> for LatentsInput {
    type Error = Error;
    fn try_from(raw: RawLatents) -> Result<Self, Error> {
        let shape: [usize; 4] = match raw.shape.as_slice() {
            &[n, c, h, w] => [n as usize, c as usize, h as usize, w as usize],
            other => return Err(expected("shape of 4 dimensions (NCHW)", "latents.shape", format!("{other:?}"))),
        };
        Ok(LatentsInput { shape, data: raw.data.to_vec() })
    }
}

/// What a loaded pipeline runs on and produces by default.
#[napi(object)]
pub struct RawPipelineInfo {
    pub model_dir: String,
    /// model_index.json's `_class_name`.
    pub pipeline_class: String,
    pub device: String,
    pub device_reason: String,
    pub dtype: String,
    /// The attention backend resolved at load: "auto" | "cudnn" | "flash" | "math".
    pub attention: String,
    /// The convolution path resolved at load: "cudnn-nhwc" | "cudnn-nchw" | "candle".
    pub convolution: String,
    pub cuda_graphs: bool,
    pub autotune: RawAutotuneInfo,
    pub tf32: bool,
    /// Whether the UNet's linear layers multiply in FP8.
    pub fp8: bool,
    /// Why a requested GPU path could not be taken, one sentence each.
    pub cuda_fallbacks: Vec<String>,
    pub default_width: u32,
    pub default_height: u32,
    pub vae_scale_factor: u32,
    pub max_prompt_tokens: u32,
    pub num_train_timesteps: u32,
    /// The folder's scheduler class (scheduler_config.json's `_class_name`).
    pub scheduler: String,
    /// Threads of the pipeline's CPU pool.
    pub threads: u32,
    /// The LoRAs fused into the weights.
    pub loras: Vec<RawLora>,
}

/// Whether cuDNN's and cuBLASLt's plans are chosen by timing them.
#[napi(object)]
pub struct RawAutotuneInfo {
    pub cudnn: bool,
    pub gemm: bool,
}

impl From<&PipelineInfo> for RawPipelineInfo {
    fn from(info: &PipelineInfo) -> Self {
        RawPipelineInfo {
            model_dir: info.model_dir.display().to_string(),
            pipeline_class: info.pipeline_class.clone(),
            device: info.device.clone(),
            device_reason: info.device_reason.clone(),
            dtype: info.dtype.clone(),
            attention: info.cuda.attention.name().to_string(),
            convolution: info.cuda.convolution.name().to_string(),
            cuda_graphs: info.cuda.cuda_graphs,
            autotune: RawAutotuneInfo { cudnn: info.cuda.autotune.cudnn, gemm: info.cuda.autotune.gemm },
            tf32: info.cuda.tf32,
            fp8: info.cuda.fp8,
            cuda_fallbacks: info.cuda_fallbacks.clone(),
            default_width: info.default_width as u32,
            default_height: info.default_height as u32,
            vae_scale_factor: info.vae_scale_factor as u32,
            max_prompt_tokens: info.max_prompt_tokens as u32,
            num_train_timesteps: info.num_train_timesteps as u32,
            scheduler: info.scheduler.clone(),
            threads: info.threads as u32,
            loras: info.loras.iter().map(RawLora::from).collect(),
        }
    }
}
