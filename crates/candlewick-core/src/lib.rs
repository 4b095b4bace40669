//! Candlewick's core: Stable Diffusion in diffusers' model-folder layout, on candle.
//!
//! This crate knows nothing of JavaScript. The napi binding (crates/candlewick-node)
//! converts types at the boundary and calls [`pipeline::PipelineWorker`].

pub mod config;
pub mod cuda;
pub mod device;
pub mod error;
pub mod loaders;
pub mod models;
pub mod pipeline;
pub mod profile;
pub mod schedulers;
pub mod tokenizer;
pub mod weights;

pub use cuda::{build_info, BuildInfo};
pub use error::{Error, Result};
