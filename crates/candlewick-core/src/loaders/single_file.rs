//! diffusers' `from_single_file`: a `.safetensors` checkpoint in the original Stable Diffusion
//! (LDM) layout — `model.diffusion_model.*` (UNet), `first_stage_model.*` (VAE),
//! `cond_stage_model.transformer.*` (CLIP, SD1.x) or `cond_stage_model.model.*` (OpenCLIP,
//! SD2.x); SDXL's `conditioner.embedders.0.transformer.*` (CLIP) and
//! `conditioner.embedders.1.model.*` (OpenCLIP, `text_encoder_2`), or the refiner's
//! `conditioner.embedders.0.model.*` alone — read in place: each diffusers model asks for its
//! tensors by its own names and a key map ([`super::single_file_keys`]) finds them in the file.
//! Nothing is copied or written.
//!
//! The architecture is inferred from the tensors as diffusers' `infer_diffusers_model_type` does;
//! the configs are diffusers' defaults for that type (built in for SD1.x), or a diffusers
//! folder's (`config`, diffusers' argument of the same name), which must also give the
//! tokenizer(s): a checkpoint carries none. SD2.x and SDXL files need the folder's configs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;
use memmap2::Mmap;

use super::single_file_keys::{self as keys, Source, UnetLayout};
use super::WeightsSource;
use crate::config::read_json;
use crate::error::{Error, Result};
use crate::models::unet_2d_condition::UNet2DConditionConfig;
use crate::models::vae::AutoencoderKLConfig;
use crate::weights::{self, SafetensorsFile};

/// diffusers' `CHECKPOINT_KEY_NAMES` that `infer_diffusers_model_type` reads.
const UNET_PREFIX: &str = "model.diffusion_model.";
const VAE_PREFIX: &str = "first_stage_model.";
pub(super) const KEY_CONV_IN: &str = "model.diffusion_model.input_blocks.0.0.weight";
const KEY_V2: &str = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";
const KEY_XL_BASE: &str = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias";
const KEY_XL_REFINER: &str = "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias";
/// diffusers' `is_open_clip_sdxl_model` / `is_open_clip_sdxl_refiner_model` keys, which its
/// converters read: they hold for any depth (the two above need a tenth layer).
const KEY_OPEN_CLIP_SDXL: &str = "conditioner.embedders.1.model.positional_embedding";
const KEY_OPEN_CLIP_SDXL_REFINER: &str = "conditioner.embedders.0.model.text_projection";
/// Where SDXL's text encoders lie.
const CLIP_SDXL_PREFIX: &str = "conditioner.embedders.0.transformer.";
const OPEN_CLIP_SDXL_PREFIX: &str = "conditioner.embedders.1.model.";
const OPEN_CLIP_SDXL_REFINER_PREFIX: &str = "conditioner.embedders.0.model.";

/// File endings of pickled PyTorch checkpoints.
const PICKLE_EXTENSIONS: &[&str] = &["ckpt", "pt", "pth", "bin", "pkl", "pickle"];

/// The checkpoint's architecture, by diffusers' `infer_diffusers_model_type` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    /// "v1": SD1.x (the default when nothing else matches, as in diffusers).
    V1,
    /// "inpainting": SD1.x with a 9-channel UNet input.
    Inpainting,
    /// "v2": SD2.x (OpenCLIP text encoder, 1024-wide cross-attention).
    V2,
    /// "inpainting_v2".
    InpaintingV2,
    /// "xl_base": SDXL base (CLIP and OpenCLIP text encoders, `text_time` added conditions).
    XlBase,
    /// "xl_refiner": SDXL's refiner (the OpenCLIP text encoder alone).
    XlRefiner,
    /// "xl_inpaint": SDXL base's layout with a 9-channel UNet input.
    XlInpaint,
}

impl ModelType {
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::Inpainting => "inpainting",
            Self::V2 => "v2",
            Self::InpaintingV2 => "inpainting_v2",
            Self::XlBase => "xl_base",
            Self::XlRefiner => "xl_refiner",
            Self::XlInpaint => "xl_inpaint",
        }
    }

    pub fn is_v2(self) -> bool {
        matches!(self, Self::V2 | Self::InpaintingV2)
    }

    pub fn is_xl(self) -> bool {
        matches!(self, Self::XlBase | Self::XlRefiner | Self::XlInpaint)
    }

    /// The pipeline class diffusers would build.
    pub fn pipeline_class(self) -> &'static str {
        match self {
            Self::V1 | Self::V2 => "StableDiffusionPipeline",
            Self::Inpainting | Self::InpaintingV2 => "StableDiffusionInpaintPipeline",
            Self::XlBase => "StableDiffusionXLPipeline",
            Self::XlRefiner => "StableDiffusionXLImg2ImgPipeline",
            Self::XlInpaint => "StableDiffusionXLInpaintPipeline",
        }
    }

    /// The repository whose configs diffusers takes for this type.
    pub fn default_repo(self) -> &'static str {
        match self {
            Self::V1 => "stable-diffusion-v1-5/stable-diffusion-v1-5",
            Self::Inpainting => "stable-diffusion-v1-5/stable-diffusion-inpainting",
            Self::V2 => "stabilityai/stable-diffusion-2-1",
            Self::InpaintingV2 => "stabilityai/stable-diffusion-2-inpainting",
            Self::XlBase => "stabilityai/stable-diffusion-xl-base-1.0",
            Self::XlRefiner => "stabilityai/stable-diffusion-xl-refiner-1.0",
            Self::XlInpaint => "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
        }
    }
}

/// Refuse a pickled checkpoint, saying why and how to convert it.
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    if !PICKLE_EXTENSIONS.contains(&ext.as_str()) {
        return Ok(());
    }
    Err(Error::model(
        path,
        format!(
            "is a pickled PyTorch checkpoint (.{ext}); candlewick does not load pickle files because unpickling can run \
             arbitrary code hidden in the file. Convert it once to .safetensors in a Python you trust, e.g. \
             python -c \"import torch, safetensors.torch as st; sd = torch.load('model.{ext}', map_location='cpu', \
             weights_only=True); sd = sd.get('state_dict', sd); st.save_file({{k: v.contiguous() for k, v in sd.items() \
             if isinstance(v, torch.Tensor)}}, 'model.safetensors')\" (weights_only=True refuses code), or download the \
             model's .safetensors version"
        ),
    ))
}

/// A single-file checkpoint, open and its architecture inferred.
#[derive(Clone)]
pub struct SingleFile {
    pub path: PathBuf,
    pub file: Arc<SafetensorsFile<Mmap>>,
    pub model_type: ModelType,
}

impl SingleFile {
    pub fn open(path: &Path) -> Result<Self> {
        refuse_pickle(path)?;
        let file = Arc::new(weights::open_file(path)?);
        let model_type = infer_model_type(path, &file)?;
        Ok(Self { path: path.to_path_buf(), file, model_type })
    }

    /// The UNet's weights: `model.diffusion_model.*` through the LDM block numbering of `config`.
    pub fn unet(&self, config: &UNet2DConditionConfig) -> Result<WeightsSource> {
        let n = config.down_block_types.len();
        let layers = config
            .layers_per_block
            .per_block(n, "layers_per_block")
            .map_err(|e| Error::model(&self.path, format!("unet config: {e}")))?;
        let layout = UnetLayout::new(&layers, &config.up_block_types);
        let map =
            move |name: &str| keys::unet_key(name, &layout).map(|k| vec![Source::key(format!("{UNET_PREFIX}{k}"))]);
        Ok(self.mapped(map))
    }

    /// The VAE's weights under `first_stage_model.` (`num_blocks`: its `block_out_channels` length).
    pub fn vae(&self, num_blocks: usize) -> WeightsSource {
        self.mapped(move |name: &str| {
            keys::vae_key(name, num_blocks).map(|k| vec![Source::key(format!("{VAE_PREFIX}{k}"))])
        })
    }

    /// The (first) text encoder's weights: CLIP (SD1.x, SDXL base) or OpenCLIP (SD2.x, `hidden`
    /// wide). SDXL's refiner has no first one: its OpenCLIP encoder, mapped here too, loads as
    /// [`Self::text_encoder_2`].
    pub fn text_encoder(&self, hidden: usize) -> WeightsSource {
        match self.model_type {
            ModelType::V2 | ModelType::InpaintingV2 => self.open_clip(hidden, "cond_stage_model.model."),
            ModelType::XlBase | ModelType::XlInpaint => {
                self.mapped(|name: &str| Some(keys::clip_keys(name, CLIP_SDXL_PREFIX)))
            }
            ModelType::XlRefiner => self.open_clip(hidden, OPEN_CLIP_SDXL_REFINER_PREFIX),
            ModelType::V1 | ModelType::Inpainting => {
                self.mapped(|name: &str| Some(keys::clip_keys(name, "cond_stage_model.transformer.")))
            }
        }
    }

    /// SDXL's `text_encoder_2` (`CLIPTextModelWithProjection`, `hidden` wide): the OpenCLIP
    /// encoder, `conditioner.embedders.1` in base files and `.0` in the refiner's.
    pub fn text_encoder_2(&self, hidden: usize) -> WeightsSource {
        let prefix =
            if self.model_type == ModelType::XlRefiner { OPEN_CLIP_SDXL_REFINER_PREFIX } else { OPEN_CLIP_SDXL_PREFIX };
        self.open_clip(hidden, prefix)
    }

    fn open_clip(&self, hidden: usize, prefix: &'static str) -> WeightsSource {
        self.mapped(move |name: &str| keys::open_clip_key(name, hidden, prefix).map(|s| vec![s]))
    }

    fn mapped(&self, map: impl Fn(&str) -> Option<Vec<Source>> + Send + Sync + 'static) -> WeightsSource {
        let map: Arc<KeyMap> = Arc::new(map);
        let file = self.file.clone();
        WeightsSource::mapped(&self.path, move || Ok(Box::new(Mapped { file: file.clone(), map: map.clone() }) as _))
    }
}

/// A VAE file given on its own (the `vae` load option): diffusers names, or the LDM layout with or
/// without `first_stage_model.` (A1111's `vae-ft-mse-840000-ema-pruned.safetensors` has none).
pub fn vae_file(path: &Path, num_blocks: usize) -> Result<WeightsSource> {
    refuse_pickle(path)?;
    let file = Arc::new(weights::open_file(path)?);
    let prefix = if file.shape("encoder.down_blocks.0.resnets.0.conv1.weight").is_some() {
        return Ok(WeightsSource::file(path));
    } else if file.shape("encoder.down.0.block.0.conv1.weight").is_some() {
        ""
    } else if file.shape("first_stage_model.encoder.down.0.block.0.conv1.weight").is_some() {
        VAE_PREFIX
    } else {
        return Err(Error::model(
            path,
            "is not a VAE: it has neither encoder.down_blocks.0.resnets.0.conv1.weight (diffusers) nor \
             encoder.down.0.block.0.conv1.weight (the original layout, with or without first_stage_model.)",
        ));
    };
    let map: Arc<KeyMap> =
        Arc::new(move |name: &str| keys::vae_key(name, num_blocks).map(|k| vec![Source::key(format!("{prefix}{k}"))]));
    Ok(WeightsSource::mapped(path, move || Ok(Box::new(Mapped { file: file.clone(), map: map.clone() }) as _)))
}

/// diffusers' `infer_diffusers_model_type`, for the types candlewick loads; files that are not
/// Stable Diffusion checkpoints are refused by name.
fn infer_model_type(path: &Path, file: &SafetensorsFile<Mmap>) -> Result<ModelType> {
    let Some(conv_in) = file.shape(KEY_CONV_IN) else {
        let hint = if file.shape("conv_in.weight").is_some() || file.shape("unet.conv_in.weight").is_some() {
            "; it looks like a diffusers component file: load its diffusers folder instead"
        } else if file.names().iter().any(|n| n.starts_with("lora_") || n.contains(".lora_")) {
            "; it looks like a LoRA: pass it in `loras`"
        } else {
            ""
        };
        return Err(Error::model(
            path,
            format!("is not a Stable Diffusion checkpoint in the original layout: it has no {KEY_CONV_IN}{hint}"),
        ));
    };
    let has = |key: &str| file.shape(key).is_some();
    if has(KEY_XL_BASE) || has(KEY_OPEN_CLIP_SDXL) {
        if conv_in.get(1).copied() == Some(9) {
            return Ok(ModelType::XlInpaint);
        }
        return Ok(ModelType::XlBase);
    }
    if has(KEY_XL_REFINER) || has(KEY_OPEN_CLIP_SDXL_REFINER) {
        return Ok(ModelType::XlRefiner);
    }
    let v2 = file.shape(KEY_V2).and_then(|s| s.last().copied()) == Some(1024);
    Ok(match (conv_in.get(1).copied() == Some(9), v2) {
        (true, true) => ModelType::InpaintingV2,
        (true, false) => ModelType::Inpainting,
        (false, true) => ModelType::V2,
        (false, false) => ModelType::V1,
    })
}

type KeyMap = dyn Fn(&str) -> Option<Vec<Source>> + Send + Sync;

/// A candle backend that reads a diffusers model's tensors from a file through a key map.
struct Mapped {
    file: Arc<SafetensorsFile<Mmap>>,
    map: Arc<KeyMap>,
}

impl Mapped {
    /// The first of the name's sources that the file has.
    fn find(&self, name: &str) -> candle_core::Result<Source> {
        let sources = (self.map)(name).unwrap_or_default();
        sources.iter().find(|s| self.file.shape(&s.key).is_some()).cloned().ok_or_else(|| {
            let tried: Vec<&str> = sources.iter().map(|s| s.key.as_str()).collect();
            let path = if tried.is_empty() { name.to_string() } else { format!("{name} (as {})", tried.join(" or ")) };
            candle_core::Error::CannotFindTensor { path }
        })
    }

    fn read(&self, name: &str, shape: Option<&Shape>, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let source = self.find(name)?;
        let stored = self.file.shape(&source.key).unwrap_or_default().to_vec();
        let mut t = match source.rows {
            None if source.transposed => self.file.tensor(&source.key, None, dtype, dev)?.t()?.contiguous()?,
            None if shape.is_some_and(|s| s.dims() == stored.as_slice()) => {
                return self.file.tensor(&source.key, shape, dtype, dev);
            }
            None => self.file.tensor(&source.key, None, dtype, dev)?,
            Some((start, len)) => {
                let t = self.file.tensor(&source.key, None, dtype, dev)?;
                if t.dim(0)? < start + len {
                    candle_core::bail!(
                        "{}: has {} rows, fewer than {} needed for {name}",
                        source.key,
                        t.dim(0)?,
                        start + len
                    );
                }
                t.narrow(0, start, len)?.contiguous()?
            }
        };
        if let Some(shape) = shape {
            // The VAE's attention projections are 1x1 convolutions [c, c, 1, 1] in the original
            // layout and linear layers [c, c] in diffusers': drop trailing unit dimensions.
            let trimmed: Vec<usize> = {
                let mut d = t.dims().to_vec();
                while d.len() > shape.rank() && d.last() == Some(&1) {
                    d.pop();
                }
                d
            };
            if trimmed.as_slice() != shape.dims() {
                return Err(candle_core::Error::UnexpectedShape {
                    msg: format!("shape mismatch for {name} (stored as {})", source.key),
                    expected: shape.clone(),
                    got: t.shape().clone(),
                });
            }
            t = t.reshape(shape)?;
        }
        Ok(t)
    }
}

impl SimpleBackend for Mapped {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.read(name, Some(&s), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.read(name, None, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }
}

/// The `vae` load option: a diffusers VAE folder (config.json and weights) or a VAE `.safetensors`
/// file of the model's VAE architecture (`config`), in diffusers' names or the original layout.
pub fn vae_option(
    path: &Path,
    config: AutoencoderKLConfig,
    dtype: DType,
) -> Result<(AutoencoderKLConfig, WeightsSource)> {
    if path.is_dir() {
        let config = read_json(&path.join("config.json"))?;
        return Ok((config, WeightsSource::file(&weights::find_weights(path, "diffusion_pytorch_model", dtype)?)));
    }
    if !path.exists() {
        return Err(Error::model(path, "file not found (the `vae` option names a VAE folder or .safetensors file)"));
    }
    let blocks = config.block_out_channels.len();
    Ok((config, vae_file(path, blocks)?))
}
