//! The model folder's components, loaded and owned: diffusers' `pipe.components`
//! (tokenizer, text encoder, UNet, VAE, scheduler config). One generic loader reads each model's
//! config.json and weights; model_index.json's `_class_name`s say which classes to build.

use std::cell::OnceCell;
use std::path::PathBuf;

use candle_core::DType;

use super::options::LoadOptions;
use crate::config::{read_json, ModelFolder, ModelIndex};
use crate::cuda::settings::Resolved;
use crate::device::{self, DeviceChoice};
use crate::error::{Error, Result};
use crate::loaders::textual_inversion::TextualInversions;
use crate::loaders::base_weights::{BaseWeights, Recorder};
use crate::loaders::lora::{self, LoraSpec, LoraTargets};
use crate::loaders::single_file::{self, SingleFile};
use crate::loaders::single_file_keys::UnetLayout;
use crate::loaders::WeightsSource;
use crate::models::clip::{ClipTextConfig, ClipTextTransformer};
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
    /// Where its weights were read from.
    pub source: WeightsSource,
    /// The tensors it was built from, by name (recorded for the UNet and the text encoder: LoRA
    /// rebuilds them from these, not from the file).
    pub base: BaseWeights,
}

/// Everything a Stable Diffusion folder holds, on one device.
pub struct Components {
    pub tokenizer: ClipTokenizer,
    /// The textual inversion embeddings added to the tokenizer and text encoder at load.
    pub textual_inversions: TextualInversions,
    pub text_encoder: Loaded<ClipTextTransformer, ClipTextConfig>,
    pub unet: Loaded<UNet2DConditionModel, UNet2DConditionConfig>,
    pub vae: Loaded<AutoencoderKL, AutoencoderKLConfig>,
    /// An f32 copy of the VAE, loaded when an f16 decode overflows.
    vae_f32: OnceCell<AutoencoderKL>,
    /// The folder's scheduler: model_index.json's class with scheduler_config.json's fields.
    pub scheduler: SchedulerChoice,
    pub target: DeviceChoice,
    /// The GPU paths, resolved for this device and dtype and installed on the loading thread.
    pub cuda: Resolved,
    /// The LoRAs fused into the UNet and the text encoder.
    pub loras: Vec<LoraSpec>,
}

/// What the components are made from: the configs, the tokenizer's folder and where each
/// model's weights are (a diffusers folder's files, or a single-file checkpoint's key maps).
pub struct Parts {
    pub tokenizer_dir: PathBuf,
    pub text_config: ClipTextConfig,
    pub text_weights: WeightsSource,
    pub unet_config: UNet2DConditionConfig,
    pub unet_weights: WeightsSource,
    pub vae_config: AutoencoderKLConfig,
    pub vae_weights: WeightsSource,
    /// scheduler_config.json's fields with the class to build as `_class_name`.
    pub scheduler_config: serde_json::Map<String, serde_json::Value>,
    /// Where the scheduler's config came from, for error messages.
    pub scheduler_path: PathBuf,
}

impl Parts {
    /// A diffusers folder's parts, its f16 variants chosen for `dtype`.
    pub fn from_folder(folder: &ModelFolder, index: &ModelIndex, dtype: DType) -> Result<Self> {
        let weights = |component: &str| -> Result<WeightsSource> {
            let stem = if component == "text_encoder" { "model" } else { "diffusion_pytorch_model" };
            Ok(WeightsSource::file(&weights::find_weights(&folder.component(component), stem, dtype)?))
        };
        let scheduler_path = folder.config_path("scheduler");
        // diffusers builds the class model_index.json names, with scheduler_config.json's fields.
        let mut scheduler_config: serde_json::Map<String, serde_json::Value> = read_json(&scheduler_path)?;
        if let Some(class) = index.component_class("scheduler") {
            scheduler_config.insert("_class_name".into(), class.into());
        }
        Ok(Self {
            tokenizer_dir: folder.component("tokenizer"),
            text_config: read_json(&folder.config_path("text_encoder"))?,
            text_weights: weights("text_encoder")?,
            unet_config: read_json(&folder.config_path("unet"))?,
            unet_weights: weights("unet")?,
            vae_config: read_json(&folder.config_path("vae"))?,
            vae_weights: weights("vae")?,
            scheduler_config,
            scheduler_path,
        })
    }
}

impl Components {
    /// Load every component of `folder`. The GPU paths (`options.cuda`) are resolved and
    /// installed on this thread first: the convolutions read theirs as they load.
    pub fn load(folder: &ModelFolder, index: &ModelIndex, options: &LoadOptions) -> Result<Self> {
        let target = profile::startup_time("device", None, || device::choose(options.device, options.dtype))?;
        let parts = Parts::from_folder(folder, index, target.dtype)?;
        Self::from_parts(parts, target, options)
    }

    /// Load a single-file checkpoint (diffusers' `from_single_file`), configs and tokenizer from
    /// `options.config` or built in.
    pub fn load_single_file(path: &std::path::Path, options: &LoadOptions) -> Result<Self> {
        let file = SingleFile::open(path)?;
        let target = profile::startup_time("device", None, || device::choose(options.device, options.dtype))?;
        let parts = single_file::parts(&file, options.config.as_deref())?;
        Self::from_parts(parts, target, options)
    }

    /// Build the components from `parts` on `target`; `options.vae` replaces the VAE.
    pub fn from_parts(mut parts: Parts, target: DeviceChoice, options: &LoadOptions) -> Result<Self> {
        if let Some(vae) = &options.vae {
            (parts.vae_config, parts.vae_weights) =
                crate::loaders::single_file::vae_option(vae, parts.vae_config, target.dtype)?;
        }
        let mut tokenizer = ClipTokenizer::from_folder(&parts.tokenizer_dir)?;

        let cuda = options.cuda.resolve(&target.device, target.dtype);
        cuda.settings.install(&target.device);

        if tokenizer.vocab_end() > parts.text_config.vocab_size {
            return Err(Error::model(
                &parts.tokenizer_dir,
                format!(
                    "does not match the text encoder: its ids reach {} but text_encoder/config.json has vocab_size {}",
                    tokenizer.vocab_end() - 1,
                    parts.text_config.vocab_size
                ),
            ));
        }
        let mut text_encoder =
            load("text_encoder", parts.text_weights, &target, parts.text_config, ClipTextTransformer::new)?;
        let textual_inversions = TextualInversions::load(
            &options.textual_inversions,
            &mut tokenizer,
            &mut text_encoder.model,
            "textual_inversions",
        )?;
        let unet = load("unet", parts.unet_weights, &target, parts.unet_config, UNet2DConditionModel::new)?;
        let vae = load("vae", parts.vae_weights, &target, parts.vae_config, AutoencoderKL::new)?;

        let scheduler = SchedulerChoice::from_folder(parts.scheduler_config)
            .map_err(|message| Error::model(&parts.scheduler_path, message))?;
        Ok(Self {
            tokenizer,
            textual_inversions,
            text_encoder,
            unet,
            vae,
            vae_f32: OnceCell::new(),
            scheduler,
            target,
            cuda,
            loras: Vec::new(),
        })
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
        let source = &self.vae.source;
        let vb = source.var_builder(DType::F32, &self.target.device)?;
        let vae = weights::with_file(&source.path, || AutoencoderKL::new(vb, &self.vae.config))?;
        Ok(self.vae_f32.get_or_init(|| vae))
    }
}

/// One model component from its config and weights, built on the target device, timed under the
/// component's name in start-up profiles. The UNet's and the text encoder's tensors are recorded
/// (`base`) for LoRA.
fn load<M, C>(
    component: &'static str,
    source: WeightsSource,
    target: &DeviceChoice,
    config: C,
    build: impl FnOnce(candle_nn::VarBuilder<'static>, &C) -> candle_core::Result<M>,
) -> Result<Loaded<M, C>> {
    let backend = source.backend()?;
    let (vb, base) = match component {
        "vae" => {
            (candle_nn::VarBuilder::from_backend(backend, target.dtype, target.device.clone()), BaseWeights::default())
        }
        _ => Recorder::wrap(backend, target.dtype, &target.device),
    };
    let name = match component {
        "text_encoder" => "text_encoder_weights",
        "unet" => "unet_weights",
        _ => "vae_weights",
    };
    let model =
        profile::startup_time(name, Some(&target.device), || weights::with_file(&source.path, || build(vb, &config)))?;
    Ok(Loaded { model, config, source, base })
}

impl Components {
    /// Fuse `loras` into the UNet and the text encoder, replacing the LoRAs fused before (an empty
    /// list restores the base weights). The models are rebuilt from the tensors recorded at load,
    /// not from the files. On error the models are left as they were.
    pub fn set_loras(&mut self, loras: &[LoraSpec]) -> Result<()> {
        if loras.is_empty() && self.loras.is_empty() {
            return Ok(());
        }
        let c = &self.unet.config;
        let layers = c.layers_per_block.per_block(c.down_block_types.len(), "layers_per_block")?;
        let layout = UnetLayout::new(&layers, &c.up_block_types);
        let targets = LoraTargets {
            unet: &self.unet.base,
            unet_layout: &layout,
            text_encoder: &self.text_encoder.base,
            device: &self.target.device,
        };
        let deltas = lora::deltas(loras, &targets)?;
        let (dtype, device) = (self.target.dtype, &self.target.device);
        let vb = self.text_encoder.base.rebuild(deltas.text_encoder, dtype, device);
        let mut text_encoder = weights::with_file(&self.text_encoder.source.path, || {
            ClipTextTransformer::new(vb, &self.text_encoder.config)
        })?;
        // Textual inversion rows were appended to the token table at load; the rebuilt table has
        // the file's rows only, so the added ones are carried over.
        let (had, has) = (self.text_encoder.model.token_embedding_rows()?, text_encoder.token_embedding_rows()?);
        if had > has {
            let added = self.text_encoder.model.token_embedding_table().narrow(0, has, had - has)?;
            text_encoder.set_token_embeddings_from(has, &added)?;
        }
        let vb = self.unet.base.rebuild(deltas.unet, dtype, device);
        let unet = weights::with_file(&self.unet.source.path, || UNet2DConditionModel::new(vb, &self.unet.config))?;
        self.text_encoder.model = text_encoder;
        self.unet.model = unet;
        self.loras = loras.to_vec();
        Ok(())
    }
}
