//! The text-to-image pipeline, as diffusers' numbered steps, and the worker thread that runs it.

mod components;
mod denoise;
mod noise;
mod observer;
mod options;
mod prompt;
mod txt2img;
mod worker;

pub use observer::{Observer, StepProgress};
pub use options::{
    FinalLatents, GenerateOptions, GenerateOutput, LatentsInput, LoadOptions, PhaseTimings, ResolvedSettings, RgbImage,
};
pub use txt2img::{PipelineInfo, StableDiffusionPipeline};
pub use worker::PipelineWorker;
