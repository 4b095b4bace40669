//! Opening a component's safetensors weights, memory-mapped, as a candle `VarBuilder`.
//!
//! The header is checked before any tensor is touched ([`checked::SafetensorsFile::parse`]: header
//! length, JSON, offsets back to back and inside the file, each span equal to shape x dtype), so no
//! allocation is sized from an unchecked header. Each tensor's shape is checked before its data is
//! read, and integer tensors are refused rather than cast. Missing tensors and wrong shapes surface
//! when a model asks for them; [`with_file`] puts the file's name on those errors. A component
//! saved in shards (an index json and several files, [`sharded`]) is read the same way.

pub mod checked;
pub mod sharded;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
pub use checked::SafetensorsFile;
pub use sharded::ShardedFile;

/// Which weights of a component folder to use: the fp16 variant when f16 is asked for and it
/// exists, else the full-precision weights, else the fp16 variant (upcast on load). Each variant is
/// one file `<stem>[.fp16].safetensors` or, when `save_pretrained` sharded it, an index
/// `<stem>.safetensors.index[.fp16].json` naming its shards; the single file is preferred. The
/// path returned is the file or the index; [`open_backend`] opens either.
pub fn find_weights(component_dir: &Path, stem: &str, dtype: DType) -> Result<PathBuf> {
    let variant = |fp16: bool| {
        let variant = fp16.then_some("fp16");
        let single = match variant {
            Some(v) => format!("{stem}.{v}.safetensors"),
            None => format!("{stem}.safetensors"),
        };
        [component_dir.join(single), component_dir.join(sharded::index_name(stem, variant))]
    };
    let order = if dtype == DType::F16 { [true, false] } else { [false, true] };
    if let Some(found) = order.into_iter().flat_map(variant).find(|p| p.is_file()) {
        return Ok(found);
    }
    Err(Error::model(
        component_dir.join(format!("{stem}.safetensors")),
        format!(
            "file not found (nor {stem}.fp16.safetensors, nor a sharded index {} or {}); candlewick reads safetensors weights only",
            sharded::index_name(stem, None),
            sharded::index_name(stem, Some("fp16"))
        ),
    ))
}

/// Open weights found by [`find_weights`]: a safetensors file, or the shards of an index file.
pub fn open_backend(path: &Path) -> Result<Box<dyn candle_nn::var_builder::SimpleBackend>> {
    if sharded::is_index(path) {
        Ok(Box::new(ShardedFile::open(path)?))
    } else {
        Ok(Box::new(open_file(path)?))
    }
}

/// Open a safetensors file (or a sharded index) and check its header(s); tensors are converted to
/// `dtype` on `device` as a model reads them.
pub fn open(path: &Path, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    Ok(VarBuilder::from_backend(open_backend(path)?, dtype, device.clone()))
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
pub(crate) fn root_cause(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => root_cause(inner),
        candle_core::Error::Context { inner, .. } => root_cause(inner),
        other => other.to_string(),
    }
}
