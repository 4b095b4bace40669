//! The napi-rs binding of candlewick-core. It converts types and nothing else: options in
//! (`options`), events out (`events`), errors with the core's codes (`error`), loading as an
//! AsyncTask (`load_task`), and the `Pipeline` class (`pipeline`).
//!
//! The hand-written TypeScript in src/ validates options before they reach this crate and is
//! the public API; these exports are its raw layer.

mod error;
mod events;
mod load_task;
mod options;
mod pipeline;

use napi_derive::napi;

/// What this native build is: its version (checked against the npm package's) and whether it
/// was compiled with CUDA.
#[napi(object)]
pub struct RawBuildInfo {
    pub version: String,
    pub cuda: bool,
    /// Whether the FlashAttention-2 kernels are compiled in.
    pub flash_attention: bool,
}

#[napi]
pub fn build_info() -> RawBuildInfo {
    RawBuildInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        cuda: candlewick_core::device::cuda_compiled(),
        flash_attention: candlewick_core::models::flash::compiled(),
    }
}
