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
    /// The version of the cuDNN library in use ("9.14.0"), or null in a build without cuDNN.
    pub cudnn: Option<String>,
}

#[napi]
pub fn build_info() -> RawBuildInfo {
    let core = candlewick_core::build_info();
    RawBuildInfo { version: core.version, cuda: core.cuda, flash_attention: core.flash_attention, cudnn: core.cudnn }
}

/// How many CUDA GPUs this process can use (0 in a build without CUDA or without a driver): what
/// `devices: "all"` spreads a pool over.
#[napi]
pub fn cuda_device_count() -> u32 {
    candlewick_core::device::cuda_device_count() as u32
}

/// GPU memory of this process's tensors on one CUDA device, in bytes (see candlewick-core's
/// `cuda::memory`).
#[napi(object)]
pub struct RawGpuMemory {
    pub used: f64,
    pub peak_used: f64,
    pub reserved: f64,
}

#[napi]
pub fn gpu_memory(env: napi::Env, ordinal: u32) -> napi::Result<RawGpuMemory> {
    error::catch_panic(&env, || {
        let m = candlewick_core::cuda::memory::usage(ordinal as usize)
            .map_err(|e| error::into_js_error(&env, error::CoreError(e)))?;
        Ok(RawGpuMemory { used: m.used as f64, peak_used: m.peak_used as f64, reserved: m.reserved as f64 })
    })
}

#[napi]
pub fn reset_gpu_memory_peak(env: napi::Env, ordinal: u32) -> napi::Result<()> {
    error::catch_panic(&env, || {
        candlewick_core::cuda::memory::reset_peak(ordinal as usize)
            .map_err(|e| error::into_js_error(&env, error::CoreError(e)))
    })
}

/// Test hook, not part of the API: panic inside a binding entry point, on the JS thread
/// (`place` "call": throws) or in an AsyncTask on the libuv pool ("task": rejects), to prove that
/// a panic reaches JavaScript as an error with code ERR_CANDLEWICK_INTERNAL (test/reliability.test.ts).
#[napi(js_name = "__panicForTest", catch_unwind, ts_return_type = "Promise<void>")]
pub fn panic_for_test(env: napi::Env, place: String) -> napi::Result<napi::bindgen_prelude::AsyncTask<PanicTask>> {
    error::catch_panic(&env, || {
        if place == "call" {
            panic!("a panic in a binding call, for a test");
        }
        Ok(napi::bindgen_prelude::AsyncTask::new(PanicTask))
    })
}

/// An AsyncTask whose work panics (see [`panic_for_test`]).
pub struct PanicTask;

impl napi::bindgen_prelude::Task for PanicTask {
    type Output = candlewick_core::Result<()>;
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<Self::Output> {
        Ok(error::catch_panic_off_thread(|| panic!("a panic in an AsyncTask, for a test")))
    }

    fn resolve(&mut self, env: napi::Env, output: Self::Output) -> napi::Result<()> {
        output.map_err(|e| error::into_js_error(&env, error::CoreError(e)))
    }
}
