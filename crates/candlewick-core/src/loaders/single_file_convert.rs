//! `candlewick convert`: a single-file checkpoint written out as a diffusers folder (what diffusers'
//! `from_single_file(...).save_pretrained(out)` gives), for tools that read folders only. Each model
//! is built on the CPU through the same key maps the pipeline loads with, and the tensors it asked
//! for are written under its own names, in the file's dtype.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::base_weights::Recorder;
use super::single_file::SingleFile;
use super::single_file_configs::{from_value, ConfigValues};
use super::single_file_configs::{model_index, model_index_xl};
use super::WeightsSource;
use crate::error::{Error, Result};
use crate::models::clip::{ClipTextModelWithProjection, ClipTextTransformer};
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
    let parts = super::single_file_configs::parts(&sf, config)?; // checks the config folder and the tokenizer
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
    let class = sf.model_type.pipeline_class();
    let index = match &values.text_encoder_2 {
        None => model_index(class, scheduler_class),
        Some((_, flags)) => model_index_xl(
            class,
            scheduler_class,
            values.text_encoder.is_none(),
            flags.force_zeros_for_empty_prompt,
            flags.requires_aesthetics_score,
        ),
    };
    write("model_index.json", index)?;
    write("unet/config.json", pretty(&values.unet))?;
    write("vae/config.json", pretty(&values.vae))?;
    if let Some(text_encoder) = &values.text_encoder {
        write("text_encoder/config.json", pretty(text_encoder))?;
    }
    if let Some((text_encoder_2, _)) = &values.text_encoder_2 {
        write("text_encoder_2/config.json", pretty(text_encoder_2))?;
    }
    write("scheduler/scheduler_config.json", pretty(&serde_json::Value::Object(values.scheduler.clone())))?;
    let tokenizers = [(parts.text.as_ref(), "tokenizer"), (parts.text_2.as_ref().map(|(t, _)| t), "tokenizer_2")];
    for (text_parts, name) in tokenizers {
        if let Some(text_parts) = text_parts {
            copy_files(&text_parts.tokenizer_dir, &out.join(name), &mut files)?;
        }
    }

    let unet_config: UNet2DConditionConfig = from_value(&sf.path, values.unet)?;
    let vae_config: AutoencoderKLConfig = from_value(&sf.path, values.vae)?;
    let unet = record(&parts.unet_weights, dtype, |vb| UNet2DConditionModel::new(vb, &unet_config).map(drop))?;
    save(&unet, &out.join("unet/diffusion_pytorch_model.safetensors"), &mut files)?;
    let vae = record(&parts.vae_weights, dtype, |vb| AutoencoderKL::new(vb, &vae_config).map(drop))?;
    save(&vae, &out.join("vae/diffusion_pytorch_model.safetensors"), &mut files)?;
    if let Some(text_parts) = &parts.text {
        let config = &text_parts.config;
        let text = record(&text_parts.weights, dtype, |vb| ClipTextTransformer::new(vb, config).map(drop))?;
        save(&text, &out.join("text_encoder/model.safetensors"), &mut files)?;
    }
    if let Some((text_parts, _)) = &parts.text_2 {
        let config = &text_parts.config;
        let text = record(&text_parts.weights, dtype, |vb| ClipTextModelWithProjection::new(vb, config).map(drop))?;
        save(&text, &out.join("text_encoder_2/model.safetensors"), &mut files)?;
    }
    Ok(Converted { folder: out.to_path_buf(), model_type: sf.model_type.name().into(), files })
}

/// Build a model on the CPU from `source` and return the tensors it read, by name.
fn record(
    source: &WeightsSource,
    dtype: DType,
    build: impl FnOnce(candle_nn::VarBuilder<'static>) -> candle_core::Result<()>,
) -> Result<HashMap<String, Tensor>> {
    // On the CPU no tensor is rewritten at load, so the record keeps them all.
    let (vb, base) = Recorder::wrap(source.backend()?, source, dtype, &Device::Cpu);
    weights::with_file(&source.path, || build(vb))?;
    Ok(base.names().into_iter().filter_map(|n| Some((n.clone(), base.get(&n)?))).collect())
}

fn save(tensors: &HashMap<String, Tensor>, path: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    create_parent(path)?;
    candle_core::safetensors::save(tensors, path).map_err(|e| Error::model(path, format!("cannot be written: {e}")))?;
    files.push(path.to_path_buf());
    Ok(())
}

/// Copy the files of folder `from` (a tokenizer) into `to`.
fn copy_files(from: &Path, to: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(from).map_err(|e| Error::model(from, e))? {
        let entry = entry.map_err(|e| Error::model(from, e))?;
        if entry.path().is_file() {
            let target = to.join(entry.file_name());
            create_parent(&target)?;
            std::fs::copy(entry.path(), &target)
                .map_err(|e| Error::model(&target, format!("cannot be written: {e}")))?;
            files.push(target);
        }
    }
    Ok(())
}

fn create_parent(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::model(parent, format!("cannot be created: {e}")))
}
