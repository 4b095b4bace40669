//! Loading what users bring besides diffusers folders, named after diffusers' `loaders`:
//! single-file checkpoints in the original Stable Diffusion layout (`single_file`, diffusers'
//! `from_single_file`), LoRA files (`lora`, diffusers' `load_lora_weights` + `fuse_lora`) and
//! textual inversion embeddings (`textual_inversion`, diffusers' `load_textual_inversion`).

pub mod base_weights;
pub mod lora;
pub mod lora_keys;
pub mod single_file;
pub mod single_file_configs;
pub mod single_file_convert;
pub mod single_file_keys;
pub mod textual_inversion;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::weights;

type OpenBackend = dyn Fn() -> Result<Box<dyn SimpleBackend>> + Send + Sync;

/// Where a component's weights come from: a safetensors file (or sharded index) read as is, or one component of a
/// single-file checkpoint through its key map. Opened again when the f32 VAE is needed.
#[derive(Clone)]
pub struct WeightsSource {
    /// The file, for error messages.
    pub path: PathBuf,
    open: Arc<OpenBackend>,
}

impl WeightsSource {
    /// A safetensors file whose names are the model's own, or the index of such a file saved in
    /// shards (as [`weights::find_weights`] finds them).
    pub fn file(path: &Path) -> Self {
        let owned = path.to_path_buf();
        Self { path: path.to_path_buf(), open: Arc::new(move || weights::open_backend(&owned)) }
    }

    /// A backend made by `open` (a key map over a file already open), reading `path`.
    pub fn mapped(path: &Path, open: impl Fn() -> Result<Box<dyn SimpleBackend>> + Send + Sync + 'static) -> Self {
        Self { path: path.to_path_buf(), open: Arc::new(open) }
    }

    pub fn backend(&self) -> Result<Box<dyn SimpleBackend>> {
        (self.open)()
    }

    pub fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
        Ok(VarBuilder::from_backend(self.backend()?, dtype, device.clone()))
    }
}
