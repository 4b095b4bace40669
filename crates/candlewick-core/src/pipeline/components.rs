//! The model folder's components, loaded and owned: diffusers' `pipe.components`
//! (tokenizer, text encoder, UNet, VAE, scheduler config). One generic loader reads each model's
//! config.json and weights; model_index.json's `_class_name`s say which classes to build.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use candle_core::DType;

use super::options::LoadOptions;
use crate::config::{read_json, ModelFolder, ModelIndex};
use crate::cuda::settings::Resolved;
use crate::device::{self, DeviceChoice};
use crate::error::{Error, Result};
use crate::models::clip::{ClipTextConfig, ClipTextModelWithProjection, ClipTextTransformer};
use crate::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::profile;
use crate::schedulers::SchedulerChoice;
use crate::tokenizer::ClipTokenizer;
use crate::weights;

/// A model component as loaded: the network and its config.json.
pub struct Loaded<M, C> {
    pub model: M,
    pub config: C,
    /// The weights file it was read from.
    pub weights: PathBuf,
}

/// SDXL's second tokenizer and text encoder (`tokenizer_2`, `text_encoder_2`:
/// `CLIPTextModelWithProjection`), and model_index.json's `force_zeros_for_empty_prompt`.
pub struct SecondTextEncoder {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: Loaded<ClipTextModelWithProjection, ClipTextConfig>,
    /// Without a negative prompt, the unconditional embeddings are zeros (SDXL's default).
    pub force_zeros_for_empty_prompt: bool,
    /// The refiner's size conditions end with an aesthetic score (model_index.json's
    /// `requires_aesthetics_score`).
    pub requires_aesthetics_score: bool,
}

/// Everything a Stable Diffusion folder holds, on one device.
pub struct Components {
    /// None only for SDXL's refiner layout (`text_encoder_2` alone).
    pub tokenizer: Option<ClipTokenizer>,
    pub text_encoder: Option<Loaded<ClipTextTransformer, ClipTextConfig>>,
    /// SDXL's second text encoder, when model_index.json lists `text_encoder_2`.
    pub text_encoder_2: Option<SecondTextEncoder>,
    pub unet: Loaded<UNet2DConditionModel, UNet2DConditionConfig>,
    pub vae: Loaded<AutoencoderKL, AutoencoderKLConfig>,
    /// An f32 copy of the VAE, loaded when an f16 decode overflows.
    vae_f32: OnceCell<AutoencoderKL>,
    /// The folder's scheduler: model_index.json's class with scheduler_config.json's fields.
    pub scheduler: SchedulerChoice,
    pub target: DeviceChoice,
    /// The GPU paths, resolved for this device and dtype and installed on the loading thread.
    pub cuda: Resolved,
}

impl Components {
    /// Load every component of `folder`. The GPU paths (`options.cuda`) are resolved and
    /// installed on this thread first: the convolutions read theirs as they load.
    pub fn load(folder: &ModelFolder, index: &ModelIndex, options: &LoadOptions) -> Result<Self> {
        let target = profile::startup_time("device", None, || device::choose(options.device, options.dtype))?;

        let cuda = options.cuda.resolve(&target.device, target.dtype);
        cuda.settings.install(&target.device);

        // SDXL's refiner has no first text encoder (model_index.json lists it as null).
        let refiner_layout =
            index.component_class("text_encoder").is_none() && index.component_class("text_encoder_2").is_some();
        let (tokenizer, text_encoder) = if refiner_layout {
            (None, None)
        } else {
            let tokenizer = ClipTokenizer::from_folder(&folder.component("tokenizer"))?;
            let config = text_config(folder, "tokenizer", &tokenizer, "text_encoder")?;
            let text_encoder = load(folder, "text_encoder", "model", &target, config, ClipTextTransformer::new)?;
            (Some(tokenizer), Some(text_encoder))
        };
        let text_encoder_2 = match index.component_class("text_encoder_2") {
            None => None,
            Some(_) => {
                let tokenizer = ClipTokenizer::from_folder(&folder.component("tokenizer_2"))?;
                let config = text_config(folder, "tokenizer_2", &tokenizer, "text_encoder_2")?;
                let text_encoder =
                    load(folder, "text_encoder_2", "model", &target, config, ClipTextModelWithProjection::new)?;
                let flag = |key: &str, default: bool| {
                    index.components.get(key).and_then(serde_json::Value::as_bool).unwrap_or(default)
                };
                Some(SecondTextEncoder {
                    tokenizer,
                    text_encoder,
                    force_zeros_for_empty_prompt: flag("force_zeros_for_empty_prompt", true),
                    requires_aesthetics_score: flag("requires_aesthetics_score", false),
                })
            }
        };
        let unet_config = read_json(&folder.config_path("unet"))?;
        let unet = load(folder, "unet", "diffusion_pytorch_model", &target, unet_config, UNet2DConditionModel::new)?;
        // The load option's VAE folder, or the model's.
        let vae_dir = options.vae.clone().unwrap_or_else(|| folder.component("vae"));
        let vae_config = read_json(&vae_dir.join("config.json"))?;
        let vae = load_in(&vae_dir, "vae", "diffusion_pytorch_model", &target, vae_config, AutoencoderKL::new)?;

        let scheduler_path = folder.config_path("scheduler");
        // diffusers builds the class model_index.json names, with scheduler_config.json's fields.
        let mut scheduler_config: serde_json::Map<String, serde_json::Value> = read_json(&scheduler_path)?;
        if let Some(class) = index.component_class("scheduler") {
            scheduler_config.insert("_class_name".into(), class.into());
        }
        let scheduler =
            SchedulerChoice::from_folder(scheduler_config).map_err(|message| Error::model(&scheduler_path, message))?;
        Ok(Self {
            tokenizer,
            text_encoder,
            text_encoder_2,
            unet,
            vae,
            vae_f32: OnceCell::new(),
            scheduler,
            target,
            cuda,
        })
    }

    /// The (first) tokenizer: every layout but SDXL's refiner has one.
    pub fn tokenizer(&self) -> Result<&ClipTokenizer> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| Error::Internal("this model has no tokenizer (text_encoder_2 only)".into()))
    }

    /// The (first) text encoder: every layout but SDXL's refiner has one.
    pub fn text_encoder(&self) -> Result<&ClipTextTransformer> {
        let encoder = self.text_encoder.as_ref().map(|e| &e.model);
        encoder.ok_or_else(|| Error::Internal("this model has no text_encoder (text_encoder_2 only)".into()))
    }

    /// The tokens a prompt is cut to (77 for CLIP).
    pub fn max_prompt_tokens(&self) -> usize {
        match (&self.tokenizer, &self.text_encoder_2) {
            (Some(t), _) => t.max_length(),
            (None, Some(second)) => second.tokenizer.max_length(),
            (None, None) => 0,
        }
    }

    /// The compute dtype (f16 or f32).
    pub fn dtype(&self) -> DType {
        self.target.dtype
    }

    /// The VAE in f32, loaded on first need (diffusers' `force_upcast` when f16 overflows).
    pub fn vae_in_f32(&self) -> Result<&AutoencoderKL> {
        if let Some(vae) = self.vae_f32.get() {
            return Ok(vae);
        }
        let path = &self.vae.weights;
        let vb = weights::open(path, DType::F32, &self.target.device)?;
        let vae = weights::with_file(path, || AutoencoderKL::new(vb, &self.vae.config))?;
        Ok(self.vae_f32.get_or_init(|| vae))
    }
}

/// A text encoder's config.json, checked against its tokenizer's vocabulary.
fn text_config(
    folder: &ModelFolder,
    tokenizer_name: &str,
    tokenizer: &ClipTokenizer,
    name: &str,
) -> Result<ClipTextConfig> {
    let config: ClipTextConfig = read_json(&folder.config_path(name))?;
    if tokenizer.vocab_end() > config.vocab_size {
        return Err(Error::model(
            folder.component(tokenizer_name),
            format!(
                "does not match the text encoder: its ids reach {} but {name}/config.json has vocab_size {}",
                tokenizer.vocab_end() - 1,
                config.vocab_size
            ),
        ));
    }
    Ok(config)
}

/// One model component from its config (`<component>/config.json`) and
/// `<component>/<stem>[.fp16].safetensors`, built on the target device, timed under the
/// component's name in start-up profiles.
fn load<M, C>(
    folder: &ModelFolder,
    component: &'static str,
    stem: &str,
    target: &DeviceChoice,
    config: C,
    build: impl FnOnce(candle_nn::VarBuilder<'static>, &C) -> candle_core::Result<M>,
) -> Result<Loaded<M, C>> {
    load_in(&folder.component(component), component, stem, target, config, build)
}

/// [`load`] from the folder `dir` (a component folder given apart from the model's).
fn load_in<M, C>(
    dir: &Path,
    component: &'static str,
    stem: &str,
    target: &DeviceChoice,
    config: C,
    build: impl FnOnce(candle_nn::VarBuilder<'static>, &C) -> candle_core::Result<M>,
) -> Result<Loaded<M, C>> {
    let path = weights::find_weights(dir, stem, target.dtype)?;
    let vb = weights::open(&path, target.dtype, &target.device)?;
    let name = match component {
        "text_encoder" => "text_encoder_weights",
        "text_encoder_2" => "text_encoder_2_weights",
        "unet" => "unet_weights",
        _ => "vae_weights",
    };
    let model = profile::startup_time(name, Some(&target.device), || weights::with_file(&path, || build(vb, &config)))?;
    Ok(Loaded { model, config, weights: path })
}
