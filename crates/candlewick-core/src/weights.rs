//! Opening a component's safetensors weights, memory-mapped, as a candle `VarBuilder`.
//!
//! The safetensors crate checks the header against the file (length, offsets inside the
//! buffer, no overlap) before any tensor is touched, so no allocation is sized from an
//! unchecked header. Missing tensors and wrong shapes surface when a model asks for them;
//! [`with_file`] puts the file's name on those errors.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};

/// Which weights file of a component folder to use: `<stem>.fp16.safetensors` when f16 is
/// asked for and it exists, else `<stem>.safetensors`.
pub fn find_weights(component_dir: &Path, stem: &str, dtype: DType) -> Result<PathBuf> {
    let plain = component_dir.join(format!("{stem}.safetensors"));
    let fp16 = component_dir.join(format!("{stem}.fp16.safetensors"));
    if dtype == DType::F16 && fp16.is_file() {
        return Ok(fp16);
    }
    if plain.is_file() {
        return Ok(plain);
    }
    if fp16.is_file() {
        // Only the fp16 variant exists: use it, upcasting on load.
        return Ok(fp16);
    }
    Err(Error::model(
        &plain,
        format!("file not found (nor {stem}.fp16.safetensors); candlewick reads safetensors weights only"),
    ))
}

/// Memory-map a safetensors file; tensors are converted to `dtype` on `device` as they are read.
pub fn open(path: &Path, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    // SAFETY: the file is mapped read-only; like every safetensors reader we assume that
    // nobody truncates it while the pipeline is loading.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device) }
        .map_err(|e| Error::model(path, format!("is not a valid safetensors file: {}", root_cause(&e))))?;
    Ok(vb)
}

/// Run a model constructor, naming `path` on any error (missing tensor, wrong shape, ...).
pub fn with_file<T>(path: &Path, build: impl FnOnce() -> candle_core::Result<T>) -> Result<T> {
    build().map_err(|e| Error::model(path, root_cause(&e)))
}

/// candle wraps errors in context layers; users need the innermost message.
fn root_cause(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => root_cause(inner),
        candle_core::Error::Context { inner, .. } => root_cause(inner),
        other => other.to_string(),
    }
}
