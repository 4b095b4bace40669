//! `candlewick convert`: a single-file checkpoint written out as a diffusers folder (what diffusers'
//! `from_single_file(...).save_pretrained(out)` gives), for tools that read folders only. Each model
//! is built on the CPU through the same key maps the pipeline loads with, and the tensors it asked
//! for are written under its own names, in the file's dtype.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::base_weights::Recorder;
use super::single_file::{from_value, ConfigValues, SingleFile};
use super::single_file_configs::model_index;
use super::WeightsSource;
use crate::error::{Error, Result};
use crate::models::clip::{ClipTextConfig, ClipTextTransformer};
use crate::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::weights;

/// What [`convert`] wrote.
#[derive(Debug, Clone)]
pub struct Converted {
    pub folder: PathBuf,
    /// "v1", "inpainting", ... (diffusers' `infer_diffusers_model_type`).
    pub model_type: String,
    pub files: Vec<PathBuf>,
}

/// Write `checkpoint` (configs and tokenizer from `config`) as a diffusers folder `out`, which must
/// not exist or be empty.
pub fn convert(checkpoint: &Path, config: Option<&Path>, out: &Path) -> Result<Converted> {
    let sf = SingleFile::open(checkpoint)?;
    let parts = super::single_file::parts(&sf, config)?; // checks the config folder and the tokenizer
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(Error::model(out, "exists and is not empty; convert writes a new diffusers folder"));
    }
    let dir = config.unwrap_or(Path::new(""));
    let values = ConfigValues::read(&sf, dir)?;
    let dtype = match sf.file.dtype("model.diffusion_model.input_blocks.0.0.weight") {
        Some(DType::F16) => DType::F16,
        Some(DType::BF16) => DType::BF16,
        _ => DType::F32,
    };
    let mut files = Vec::new();
    let mut write = |rel: &str, text: String| -> Result<()> {
        let path = out.join(rel);
        create_parent(&path)?;
        std::fs::write(&path, text).map_err(|e| Error::model(&path, format!("cannot be written: {e}")))?;
        files.push(path);
        Ok(())
    };
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    let scheduler_class = values.scheduler.get("_class_name").and_then(|c| c.as_str()).unwrap_or("PNDMScheduler");
    write("model_index.json", model_index(sf.model_type.pipeline_class(), scheduler_class))?;
    write("unet/config.json", pretty(&values.unet))?;
    write("vae/config.json", pretty(&values.vae))?;
    write("text_encoder/config.json", pretty(&values.text_encoder))?;
    write("scheduler/scheduler_config.json", pretty(&serde_json::Value::Object(values.scheduler.clone())))?;
    let Some(text_parts) = parts.text.as_ref() else {
        return Err(Error::Internal("a single file without its text encoder".into()));
    };
    let tokenizer_dir = &text_parts.tokenizer_dir;
    for entry in std::fs::read_dir(tokenizer_dir).map_err(|e| Error::model(tokenizer_dir, e))? {
        let entry = entry.map_err(|e| Error::model(tokenizer_dir, e))?;
        if entry.path().is_file() {
            let to = out.join("tokenizer").join(entry.file_name());
            create_parent(&to)?;
            std::fs::copy(entry.path(), &to).map_err(|e| Error::model(&to, format!("cannot be written: {e}")))?;
            files.push(to);
        }
    }

    let unet_config: UNet2DConditionConfig = from_value(&sf.path, values.unet)?;
    let vae_config: AutoencoderKLConfig = from_value(&sf.path, values.vae)?;
    let text_config: ClipTextConfig = from_value(&sf.path, values.text_encoder)?;
    let unet = record(&parts.unet_weights, dtype, |vb| UNet2DConditionModel::new(vb, &unet_config).map(drop))?;
    save(&unet, &out.join("unet/diffusion_pytorch_model.safetensors"), &mut files)?;
    let vae = record(&parts.vae_weights, dtype, |vb| AutoencoderKL::new(vb, &vae_config).map(drop))?;
    save(&vae, &out.join("vae/diffusion_pytorch_model.safetensors"), &mut files)?;
    let text = record(&text_parts.weights, dtype, |vb| ClipTextTransformer::new(vb, &text_config).map(drop))?;
    save(&text, &out.join("text_encoder/model.safetensors"), &mut files)?;
    Ok(Converted { folder: out.to_path_buf(), model_type: sf.model_type.name().into(), files })
}

/// Build a model on the CPU from `source` and return the tensors it read, by name.
fn record(
    source: &WeightsSource,
    dtype: DType,
    build: impl FnOnce(candle_nn::VarBuilder<'static>) -> candle_core::Result<()>,
) -> Result<HashMap<String, Tensor>> {
    let (vb, base) = Recorder::wrap(source.backend()?, dtype, &Device::Cpu);
    weights::with_file(&source.path, || build(vb))?;
    Ok(base.names().into_iter().filter_map(|n| Some((n.clone(), base.get(&n)?))).collect())
}

fn save(tensors: &HashMap<String, Tensor>, path: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    create_parent(path)?;
    candle_core::safetensors::save(tensors, path).map_err(|e| Error::model(path, format!("cannot be written: {e}")))?;
    files.push(path.to_path_buf());
    Ok(())
}

fn create_parent(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::model(parent, format!("cannot be created: {e}")))
}
