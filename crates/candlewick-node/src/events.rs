//! What a generate call reports back to JavaScript, in order, through one ThreadsafeFunction:
//! a `progress` event after each denoising step, then one `result` event (or an error).

use candlewick_core::pipeline::{GenerateOutput, RgbImage, StepProgress};
use napi::bindgen_prelude::{BigInt, Buffer, Float32Array};
use napi_derive::napi;

use crate::options::RawLatents;

/// After a denoising step.
#[napi(object)]
pub struct RawProgress {
    /// 1-based: 1 after the first step, totalSteps after the last.
    pub step: u32,
    pub total_steps: u32,
    /// The scheduler timestep that step denoised.
    pub timestep: f64,
    /// Previews of the latents (one small RGB image per image), every `previewEvery` steps.
    pub preview: Option<Vec<RawImage>>,
}

/// An 8-bit RGB image, rows top to bottom, 3 bytes a pixel.
#[napi(object)]
pub struct RawImage {
    pub width: u32,
    pub height: u32,
    pub data: Buffer,
}

/// The outcome of a call that succeeded.
#[napi(object)]
pub struct RawGenerateResult {
    pub images: Vec<RawImage>,
    /// The seed used (drawn at random when none was given), a u64.
    pub seed: BigInt,
    /// Each image's seed, a u64.
    pub seeds: Vec<BigInt>,
    /// Things the user should know that did not stop the call (a truncated prompt, ...).
    pub warnings: Vec<String>,
    pub timings: RawPhaseTimings,
    /// The denoised latents, when they were asked for instead of images.
    pub latents: Option<RawLatents>,
    /// The settings the call ran with, defaults filled in.
    pub settings: RawResolvedSettings,
}

/// The core's `ResolvedSettings`.
#[napi(object)]
pub struct RawResolvedSettings {
    pub num_inference_steps: u32,
    pub guidance_scale: f64,
    pub width: u32,
    pub height: u32,
    pub scheduler: String,
    /// diffusers' snake_case field names.
    pub scheduler_config: serde_json::Map<String, serde_json::Value>,
    /// "txt2img", "img2img" or "inpaint".
    pub task: String,
    /// How much of the image was repainted (img2img and inpaint).
    pub strength: Option<f64>,
    /// diffusers' `padding_mask_crop`, when the call set one.
    pub padding_mask_crop: Option<u32>,
    /// diffusers' `clip_skip`, when the call set one.
    pub clip_skip: Option<u32>,
    /// SDXL's `denoising_end`, when the call set one.
    pub denoising_end: Option<f64>,
    /// SDXL's `denoising_start`, when the call set one.
    pub denoising_start: Option<f64>,
    /// SDXL's size conditions as they ran ([height, width]; crops [top, left]); absent for other models.
    pub original_size: Option<Vec<u32>>,
    pub crops_coords_top_left: Option<Vec<u32>>,
    pub target_size: Option<Vec<u32>>,
    pub negative_original_size: Option<Vec<u32>>,
    pub negative_crops_coords_top_left: Option<Vec<u32>>,
    pub negative_target_size: Option<Vec<u32>>,
}

/// Where the call's time went, in milliseconds.
#[napi(object)]
pub struct RawPhaseTimings {
    pub text_encoder_ms: f64,
    pub denoise_ms: f64,
    pub decode_ms: f64,
}

/// Exactly one of the two fields is set.
#[napi(object)]
pub struct RawGenerateEvent {
    pub progress: Option<RawProgress>,
    pub result: Option<RawGenerateResult>,
}

impl From<StepProgress> for RawGenerateEvent {
    fn from(p: StepProgress) -> Self {
        RawGenerateEvent::progress(p, None)
    }
}

impl RawGenerateEvent {
    /// A progress event, with previews when the step has them.
    pub fn progress(p: StepProgress, preview: Option<Vec<RgbImage>>) -> Self {
        let preview = preview.map(|images| images.into_iter().map(RawImage::from).collect());
        let progress =
            RawProgress { step: p.step as u32, total_steps: p.total_steps as u32, timestep: p.timestep, preview };
        RawGenerateEvent { progress: Some(progress), result: None }
    }
}

impl From<GenerateOutput> for RawGenerateEvent {
    fn from(out: GenerateOutput) -> Self {
        let images = out.images.into_iter().map(RawImage::from).collect();
        let t = out.timings;
        let timings = RawPhaseTimings {
            text_encoder_ms: t.text_encoder * 1e3,
            denoise_ms: t.denoise * 1e3,
            decode_ms: t.decode * 1e3,
        };
        let latents = out.latents.map(|l| RawLatents {
            shape: l.shape.iter().map(|&d| d as u32).collect(),
            data: Float32Array::new(l.data),
        });
        let seeds = out.seeds.into_iter().map(BigInt::from).collect();
        let r = out.settings;
        let sizes = r.size_conditions.as_ref();
        let pair = |[a, b]: [usize; 2]| vec![a as u32, b as u32];
        let settings = RawResolvedSettings {
            num_inference_steps: r.num_inference_steps as u32,
            guidance_scale: r.guidance_scale,
            width: r.width as u32,
            height: r.height as u32,
            scheduler: r.scheduler,
            scheduler_config: r.scheduler_config,
            task: r.task.name().into(),
            strength: r.strength,
            padding_mask_crop: r.padding_mask_crop.map(|p| p as u32),
            clip_skip: r.clip_skip.map(|k| k as u32),
            denoising_end: r.denoising_end,
            denoising_start: r.denoising_start,
            original_size: sizes.and_then(|s| s.original_size).map(pair),
            crops_coords_top_left: sizes.map(|s| pair(s.crops_coords_top_left)),
            target_size: sizes.and_then(|s| s.target_size).map(pair),
            negative_original_size: sizes.and_then(|s| s.negative_original_size).map(pair),
            negative_crops_coords_top_left: sizes
                .filter(|s| s.negative_original_size.is_some())
                .map(|s| pair(s.negative_crops_coords_top_left)),
            negative_target_size: sizes.and_then(|s| s.negative_target_size).map(pair),
        };
        let result = RawGenerateResult {
            images,
            seed: BigInt::from(out.seed),
            seeds,
            warnings: out.warnings,
            timings,
            latents,
            settings,
        };
        RawGenerateEvent { progress: None, result: Some(result) }
    }
}

impl From<RgbImage> for RawImage {
    fn from(image: RgbImage) -> Self {
        RawImage { width: image.width as u32, height: image.height as u32, data: Buffer::from(image.data) }
    }
}
