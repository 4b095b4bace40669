//! Opening a component's safetensors weights, memory-mapped, as a candle `VarBuilder`.
//!
//! The header is checked before any tensor is touched ([`checked::SafetensorsFile::parse`]: header
//! length, JSON, offsets back to back and inside the file, each span equal to shape x dtype), so no
//! allocation is sized from an unchecked header. Each tensor's shape is checked before its data is
//! read, and integer tensors are refused rather than cast. Missing tensors and wrong shapes surface
//! when a model asks for them; [`with_file`] puts the file's name on those errors.

pub mod checked;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
pub use checked::SafetensorsFile;

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

/// Memory-map a safetensors file and check its header; tensors are converted to `dtype` on
/// `device` as a model reads them.
pub fn open(path: &Path, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    Ok(VarBuilder::from_backend(Box::new(open_file(path)?), dtype, device.clone()))
}

/// Memory-map a safetensors file and check its header.
pub fn open_file(path: &Path) -> Result<SafetensorsFile<memmap2::Mmap>> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::model(path, "file not found"),
        _ => Error::model(path, format!("cannot be read: {e}")),
    })?;
    // SAFETY: the file is mapped read-only; like every safetensors reader we assume that
    // nobody truncates it while the pipeline is loading.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::model(path, format!("cannot be mapped: {e}")))?;
    SafetensorsFile::parse(path, map)
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
