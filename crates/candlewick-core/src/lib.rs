//! Candlewick's core: Stable Diffusion in diffusers' model-folder layout, on candle.
//!
//! This crate knows nothing of JavaScript. The napi binding (crates/candlewick-node)
//! converts types at the boundary and calls [`pipeline::PipelineWorker`].

pub mod config;
#[cfg(feature = "cuda")]
mod cuda_op;
pub mod cudnn;
pub mod device;
pub mod error;
pub mod gpu_memory;
pub mod models;
pub mod pipeline;
pub mod profile;
pub mod schedulers;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};
