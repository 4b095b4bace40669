//! A component's weights split over several safetensors files, read as diffusers reads them
//! (`_fetch_index_file` + `_get_checkpoint_shard_files` + `load_state_dict`): an index
//! `<stem>.safetensors.index.json` (`<stem>.safetensors.index.fp16.json` for the fp16 variant) with
//! `metadata.total_size` and a `weight_map` from tensor name to shard file in the same folder, as
//! `save_pretrained` writes for a component over `max_shard_size` (10 GB by default).
//!
//! Every shard's header is checked when the index is opened (as for one file), and so is every
//! `weight_map` entry: a shard outside the folder, a missing shard, or a tensor that its shard does
//! not hold is an error naming the index, the tensor and the shard. Tensors are then read from the
//! shard the map names.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use serde::Deserialize;

use super::SafetensorsFile;
use crate::error::{Error, Result};

/// The index file's name for `stem` (`diffusion_pytorch_model`, `model`) and variant
/// (diffusers' `_add_variant(SAFE_WEIGHTS_INDEX_NAME, variant)`).
pub fn index_name(stem: &str, variant: Option<&str>) -> String {
    match variant {
        Some(variant) => format!("{stem}.safetensors.index.{variant}.json"),
        None => format!("{stem}.safetensors.index.json"),
    }
}

/// Whether `path` names an index file rather than a safetensors file.
pub fn is_index(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(".safetensors.index.") && n.ends_with(".json"))
}

#[derive(Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

/// The shards of one index, their headers checked, and which shard holds each tensor.
pub struct ShardedFile {
    index: PathBuf,
    shards: Vec<(String, SafetensorsFile<memmap2::Mmap>)>,
    tensors: HashMap<String, usize>,
}

impl ShardedFile {
    /// Read the index at `index`, open and check every shard it names, and check that each shard
    /// holds the tensors the map gives it.
    pub fn open(index: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::model(index, "file not found"),
            _ => Error::model(index, format!("cannot be read: {e}")),
        })?;
        let parsed: Index = serde_json::from_str(&text).map_err(|e| {
            Error::model(index, format!("is not a sharded-weights index (JSON with a \"weight_map\" object from tensor name to shard file): {e}"))
        })?;
        if parsed.weight_map.is_empty() {
            return Err(Error::model(index, "has an empty weight_map: it names no tensors"));
        }
        let folder = index.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<(String, SafetensorsFile<memmap2::Mmap>)> = Vec::new();
        let mut tensors = HashMap::with_capacity(parsed.weight_map.len());
        for (tensor, shard) in &parsed.weight_map {
            let slot = match shards.iter().position(|(name, _)| name == shard) {
                Some(slot) => slot,
                None => {
                    let file = open_shard(index, folder, tensor, shard)?;
                    shards.push((shard.clone(), file));
                    shards.len() - 1
                }
            };
            if shards[slot].1.shape(tensor).is_none() {
                return Err(Error::model(
                    index,
                    format!(
                        "weight_map puts tensor {tensor} in shard {shard}, but that shard has no tensor of that name"
                    ),
                ));
            }
            tensors.insert(tensor.clone(), slot);
        }
        Ok(Self { index: index.to_path_buf(), shards, tensors })
    }

    pub fn path(&self) -> &Path {
        &self.index
    }

    fn shard_of(&self, name: &str) -> candle_core::Result<&(String, SafetensorsFile<memmap2::Mmap>)> {
        let slot = self.tensors.get(name).ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.into() })?;
        Ok(&self.shards[*slot])
    }

    fn tensor(&self, name: &str, shape: Option<&Shape>, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let (shard, file) = self.shard_of(name)?;
        file.tensor(name, shape, dtype, device)
            .map_err(|e| candle_core::Error::Msg(format!("{} (in shard {shard})", super::root_cause(&e))))
    }
}

/// One shard named by the index, opened and checked. Shard names are plain file names in the
/// index's folder (diffusers refuses a path separator too).
fn open_shard(index: &Path, folder: &Path, tensor: &str, shard: &str) -> Result<SafetensorsFile<memmap2::Mmap>> {
    let plain = Path::new(shard).file_name().is_some_and(|n| n == std::ffi::OsStr::new(shard));
    if !plain || shard.contains('/') || shard.contains('\\') {
        return Err(Error::model(
            index,
            format!(
                "weight_map puts tensor {tensor} in shard {shard:?}, which is not a file name in the index's folder"
            ),
        ));
    }
    let path = folder.join(shard);
    if !path.is_file() {
        return Err(Error::model(
            index,
            format!("weight_map puts tensor {tensor} in shard {shard}, which is not in {}", folder.display()),
        ));
    }
    super::open_file(&path)
}

impl SimpleBackend for ShardedFile {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.tensor(name, Some(&s), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.tensor(name, None, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}
