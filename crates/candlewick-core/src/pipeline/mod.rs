//! The text-to-image pipeline, as diffusers' numbered steps, and the worker thread that runs it.

mod check_inputs;
mod components;
mod decode_latents;
mod denoise;
mod image_processor;
mod img2img;
mod inpaint;
mod noise;
mod observer;
mod options;
mod padding_mask_crop;
mod pil_resample;
mod preview;
mod prompt;
pub mod prompt_weighting;
mod sdxl;
mod sdxl_encode_prompt;
mod txt2img;
pub mod weighted_embeddings;
mod worker;

pub use components::{Parts, SecondTextFlags, TextParts};
pub use image_processor::{preprocess_image, preprocess_mask, MAX_INPUT_SIDE};
pub use observer::{Observer, StepProgress};
pub use options::{
    FinalLatents, GenerateOptions, GenerateOutput, ImageInput, LatentsInput, LoadOptions, PhaseTimings, PipelineInfo,
    ResolvedSettings, RgbImage, SizeConditions, Task,
};
pub use padding_mask_crop::{overlay, preprocess_mask_crop, CropRegion};
pub use preview::latents_to_rgb;
pub use txt2img::StableDiffusionPipeline;
pub use worker::PipelineWorker;
