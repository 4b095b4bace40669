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
use crate::loaders::base_weights::{BaseWeights, Recorder};
use crate::loaders::lora::{self, LoraSpec, LoraTargets};
use crate::loaders::single_file::SingleFile;
use crate::loaders::single_file_configs;
use crate::loaders::single_file_keys::UnetLayout;
use crate::loaders::textual_inversion::{Encoder, TextualInversions};
use crate::loaders::WeightsSource;
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
    /// Where its weights were read from.
    pub source: WeightsSource,
    /// The tensors it was built from, by name (recorded for the UNet and the text encoders: LoRA
    /// rebuilds them from these, not from the file).
    pub base: BaseWeights,
}

/// SDXL's second tokenizer and text encoder (`tokenizer_2`, `text_encoder_2`:
/// `CLIPTextModelWithProjection`), and model_index.json's `force_zeros_for_empty_prompt`.
pub struct SecondTextEncoder {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: Loaded<ClipTextModelWithProjection, ClipTextConfig>,
    /// The textual inversion embeddings' `clip_g` vectors added to this tokenizer and encoder.
    pub textual_inversions: TextualInversions,
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
    /// The textual inversion embeddings added to the (first) tokenizer and text encoder at load
    /// (SDXL's: their `clip_l` vectors; the `clip_g` ones are `text_encoder_2`'s).
    pub textual_inversions: TextualInversions,
    pub text_encoder: Option<Loaded<ClipTextTransformer, ClipTextConfig>>,
    /// SDXL's second text encoder, when model_index.json lists `text_encoder_2`.
    pub text_encoder_2: Option<SecondTextEncoder>,
    pub unet: Loaded<UNet2DConditionModel, UNet2DConditionConfig>,
    /// In the compute dtype, or in f32 where it always runs in f32 (SDXL's `force_upcast` in f16).
    pub vae: Loaded<AutoencoderKL, AutoencoderKLConfig>,
    /// An f32 copy of an f16 VAE, loaded when an f16 decode overflows.
    vae_f32: OnceCell<AutoencoderKL>,
    /// The folder's scheduler: model_index.json's class with scheduler_config.json's fields.
    pub scheduler: SchedulerChoice,
    pub target: DeviceChoice,
    /// The GPU paths, resolved for this device and dtype and installed on the loading thread.
    pub cuda: Resolved,
    /// The LoRAs fused into the UNet and the text encoders.
    pub loras: Vec<LoraSpec>,
}

/// What the components are made from: the configs, the tokenizers' folders and where each
/// model's weights are (a diffusers folder's files, or a single-file checkpoint's key maps).
pub struct Parts {
    /// The (first) tokenizer and text encoder; None only for SDXL's refiner layout.
    pub text: Option<TextParts>,
    /// SDXL's `tokenizer_2` and `text_encoder_2` (`CLIPTextModelWithProjection`) and the flags
    /// model_index.json sets for them.
    pub text_2: Option<(TextParts, SecondTextFlags)>,
    pub unet_config: UNet2DConditionConfig,
    pub unet_weights: WeightsSource,
    pub vae_config: AutoencoderKLConfig,
    pub vae_weights: WeightsSource,
    /// scheduler_config.json's fields with the class to build as `_class_name`.
    pub scheduler_config: serde_json::Map<String, serde_json::Value>,
    /// Where the scheduler's config came from, for error messages.
    pub scheduler_path: PathBuf,
}

/// A tokenizer's folder and its text encoder's config and weights.
pub struct TextParts {
    pub tokenizer_dir: PathBuf,
    pub config: ClipTextConfig,
    /// The config's folder name (`text_encoder`, `text_encoder_2`), for error messages.
    pub name: &'static str,
    pub weights: WeightsSource,
}

impl TextParts {
    /// The tokenizer, read on a thread of its own (see [`PendingTokenizer`]); here and now when
    /// no thread can be started.
    fn tokenizer_in_background(&self) -> PendingTokenizer {
        let (dir, vocab_size, name) = (self.tokenizer_dir.clone(), self.config.vocab_size, self.name);
        let spawned = std::thread::Builder::new()
            .name("candlewick-tokenizer".into())
            .spawn(move || read_tokenizer(&dir, vocab_size, name));
        match spawned {
            Ok(thread) => PendingTokenizer::Reading(thread),
            Err(_) => PendingTokenizer::Read(read_tokenizer(&self.tokenizer_dir, vocab_size, name)),
        }
    }
}

/// A tokenizer being read while the weights load; [`PendingTokenizer::join`] waits for it.
enum PendingTokenizer {
    Reading(std::thread::JoinHandle<Result<ClipTokenizer>>),
    Read(Result<ClipTokenizer>),
}

impl PendingTokenizer {
    fn join(self) -> Result<ClipTokenizer> {
        match self {
            Self::Reading(thread) => {
                thread.join().unwrap_or_else(|_| Err(Error::Internal("reading the tokenizer panicked".into())))
            }
            Self::Read(tokenizer) => tokenizer,
        }
    }
}

/// The tokenizer in `dir`, checked against its text encoder's vocabulary (`encoder`/config.json's
/// `vocab_size`).
fn read_tokenizer(dir: &std::path::Path, vocab_size: usize, encoder: &str) -> Result<ClipTokenizer> {
    let tokenizer = profile::startup_time("tokenizer", None, || ClipTokenizer::from_folder(dir))?;
    if tokenizer.vocab_end() > vocab_size {
        return Err(Error::model(
            dir,
            format!(
                "does not match the text encoder: its ids reach {} but {encoder}/config.json has vocab_size {vocab_size}",
                tokenizer.vocab_end() - 1,
            ),
        ));
    }
    Ok(tokenizer)
}

/// model_index.json's flags for SDXL's second text encoder.
#[derive(Debug, Clone, Copy)]
pub struct SecondTextFlags {
    pub force_zeros_for_empty_prompt: bool,
    pub requires_aesthetics_score: bool,
}

impl Parts {
    /// A diffusers folder's parts, its f16 variants chosen for `dtype`.
    pub fn from_folder(folder: &ModelFolder, index: &ModelIndex, dtype: DType) -> Result<Self> {
        let weights = |component: &str| -> Result<WeightsSource> {
            let stem = if component.starts_with("text_encoder") { "model" } else { "diffusion_pytorch_model" };
            Ok(WeightsSource::file(&weights::find_weights(&folder.component(component), stem, dtype)?))
        };
        let text = |tokenizer: &str, name: &'static str| -> Result<TextParts> {
            Ok(TextParts {
                tokenizer_dir: folder.component(tokenizer),
                config: read_json(&folder.config_path(name))?,
                name,
                weights: weights(name)?,
            })
        };
        // SDXL's refiner has no first text encoder (model_index.json lists it as null).
        let refiner_layout =
            index.component_class("text_encoder").is_none() && index.component_class("text_encoder_2").is_some();
        let flag = |key: &str, default: bool| {
            index.components.get(key).and_then(serde_json::Value::as_bool).unwrap_or(default)
        };
        let text_2 = match index.component_class("text_encoder_2") {
            None => None,
            Some(_) => Some((
                text("tokenizer_2", "text_encoder_2")?,
                SecondTextFlags {
                    force_zeros_for_empty_prompt: flag("force_zeros_for_empty_prompt", true),
                    requires_aesthetics_score: flag("requires_aesthetics_score", false),
                },
            )),
        };
        let scheduler_path = folder.config_path("scheduler");
        // diffusers builds the class model_index.json names, with scheduler_config.json's fields.
        let mut scheduler_config: serde_json::Map<String, serde_json::Value> = read_json(&scheduler_path)?;
        if let Some(class) = index.component_class("scheduler") {
            scheduler_config.insert("_class_name".into(), class.into());
        }
        Ok(Self {
            text: if refiner_layout { None } else { Some(text("tokenizer", "text_encoder")?) },
            text_2,
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
        let parts = single_file_configs::parts(&file, options.config.as_deref())?;
        Self::from_parts(parts, target, options)
    }

    /// Build the components from `parts` on `target`; `options.vae` replaces the VAE.
    pub fn from_parts(mut parts: Parts, target: DeviceChoice, options: &LoadOptions) -> Result<Self> {
        if let Some(vae) = &options.vae {
            (parts.vae_config, parts.vae_weights) =
                crate::loaders::single_file::vae_option(vae, parts.vae_config, target.dtype)?;
        }
        let cuda = options.cuda.resolve(&target.device, target.dtype);
        cuda.settings.install(&target.device);

        // The tokenizers read their vocabularies (0.1-0.2 s each) on threads of their own while
        // the weights load; the textual inversions, which change both, come after. A tokenizer's
        // error is reported before a weights error, as when it was read first (one that does not
        // match its encoder's config explains the encoder's wrong shapes).
        let sdxl = parts.text_2.is_some();
        let vae_dtype = vae_dtype(sdxl, target.dtype, &parts.vae_config);
        let tokenizer = parts.text.as_ref().map(TextParts::tokenizer_in_background);
        let tokenizer_2 = parts.text_2.as_ref().map(|(text, _)| text.tokenizer_in_background());
        let loaded = (|| {
            let text_encoder = match parts.text {
                None => None,
                Some(text) => Some(load(
                    "text_encoder",
                    text.weights,
                    &target,
                    target.dtype,
                    text.config,
                    ClipTextTransformer::new,
                )?),
            };
            let text_encoder_2 = match parts.text_2 {
                None => None,
                Some((text, flags)) => {
                    let encoder = load(
                        "text_encoder_2",
                        text.weights,
                        &target,
                        target.dtype,
                        text.config,
                        ClipTextModelWithProjection::new,
                    )?;
                    Some((encoder, flags))
                }
            };
            let unet =
                load("unet", parts.unet_weights, &target, target.dtype, parts.unet_config, UNet2DConditionModel::new)?;
            unet.base.read_again(unet.model.quantized_weights());
            let vae = load("vae", parts.vae_weights, &target, vae_dtype, parts.vae_config, AutoencoderKL::new)?;
            Ok::<_, Error>((text_encoder, text_encoder_2, unet, vae))
        })();
        let tokenizer = tokenizer.map(PendingTokenizer::join).transpose();
        let tokenizer_2 = tokenizer_2.map(PendingTokenizer::join).transpose();
        let (tokenizer, tokenizer_2, (text_encoder, text_encoder_2, unet, vae)) = (tokenizer?, tokenizer_2?, loaded?);

        // SDXL's embeddings give the first encoder their clip_l vectors, the second their clip_g.
        let sources = &options.textual_inversions;
        let (first, second) = if sdxl { (Encoder::ClipL, Encoder::ClipG) } else { (Encoder::Single, Encoder::Single) };
        let (tokenizer, text_encoder, textual_inversions) = match (tokenizer, text_encoder) {
            (Some(mut tokenizer), Some(mut encoder)) => {
                let textual_inversions =
                    TextualInversions::load(sources, &mut tokenizer, &mut encoder.model, first, "textual_inversions")?;
                (Some(tokenizer), Some(encoder), textual_inversions)
            }
            _ => (None, None, TextualInversions::default()),
        };
        let text_encoder_2 = match (tokenizer_2, text_encoder_2) {
            (Some(mut tokenizer), Some((mut text_encoder, flags))) => {
                let textual_inversions = TextualInversions::load(
                    sources,
                    &mut tokenizer,
                    &mut text_encoder.model.text_model,
                    second,
                    "textual_inversions",
                )?;
                Some(SecondTextEncoder {
                    tokenizer,
                    text_encoder,
                    textual_inversions,
                    force_zeros_for_empty_prompt: flags.force_zeros_for_empty_prompt,
                    requires_aesthetics_score: flags.requires_aesthetics_score,
                })
            }
            _ => None,
        };

        let scheduler = SchedulerChoice::from_folder(parts.scheduler_config)
            .map_err(|message| Error::model(&parts.scheduler_path, message))?;
        Ok(Self {
            tokenizer,
            textual_inversions,
            text_encoder,
            text_encoder_2,
            unet,
            vae,
            vae_f32: OnceCell::new(),
            scheduler,
            target,
            cuda,
            loras: Vec::new(),
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

    /// The dtype the VAE was loaded in: f32 under SDXL's `force_upcast` in f16, else the compute
    /// dtype.
    pub fn vae_dtype(&self) -> DType {
        vae_dtype(self.text_encoder_2.is_some(), self.dtype(), &self.vae.config)
    }

    /// The VAE encodes and decodes in f32 when the model is f16 and the VAE's config says
    /// `force_upcast` (SDXL's VAE overflows in f16), as `StableDiffusionXLPipeline` does.
    pub fn vae_needs_upcasting(&self) -> bool {
        vae_upcasts(self.text_encoder_2.is_some(), self.dtype(), &self.vae.config)
    }

    /// The VAE in f32: the VAE itself when loaded so, else an f32 copy loaded on first need (an f16
    /// decode that overflowed).
    pub fn vae_in_f32(&self) -> Result<&AutoencoderKL> {
        if self.vae_dtype() == DType::F32 {
            return Ok(&self.vae.model);
        }
        if let Some(vae) = self.vae_f32.get() {
            return Ok(vae);
        }
        let source = &self.vae.source;
        let vb = source.var_builder(DType::F32, &self.target.device)?;
        let vae = weights::with_file(&source.path, || AutoencoderKL::new(vb, &self.vae.config))?;
        Ok(self.vae_f32.get_or_init(|| vae))
    }
}

/// One model component from its config and weights, built on the target device in `dtype`, timed
/// under the component's name in start-up profiles. The UNet's and the text encoders' tensors are
/// recorded (`base`) for LoRA.
fn load<M, C>(
    component: &'static str,
    source: WeightsSource,
    target: &DeviceChoice,
    dtype: DType,
    config: C,
    build: impl FnOnce(candle_nn::VarBuilder<'static>, &C) -> candle_core::Result<M>,
) -> Result<Loaded<M, C>> {
    let backend = profile::startup_time("weights_open", None, || source.backend())?;
    let (vb, base) = match component {
        "vae" => (candle_nn::VarBuilder::from_backend(backend, dtype, target.device.clone()), BaseWeights::default()),
        _ => Recorder::wrap(backend, &source, dtype, &target.device),
    };
    let name = match component {
        "text_encoder" => "text_encoder_weights",
        "text_encoder_2" => "text_encoder_2_weights",
        "unet" => "unet_weights",
        _ => "vae_weights",
    };
    let model =
        profile::startup_time(name, Some(&target.device), || weights::with_file(&source.path, || build(vb, &config)))?;
    Ok(Loaded { model, config, source, base })
}

impl Components {
    /// Fuse `loras` into the UNet and the text encoders (SDXL's `text_encoder_2` too), replacing the
    /// LoRAs fused before (an empty list restores the base weights). The models are rebuilt from the
    /// tensors recorded at load, not from the files. On error the models are left as they were.
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
            text_encoder: self.text_encoder.as_ref().map(|t| &t.base),
            text_encoder_2: self.text_encoder_2.as_ref().map(|t| &t.text_encoder.base),
            device: &self.target.device,
        };
        let deltas = lora::deltas(loras, &targets)?;
        let (dtype, device) = (self.target.dtype, &self.target.device);
        let text_encoder = match self.text_encoder.as_ref() {
            None => None,
            Some(text) => {
                let vb = text.base.rebuild(deltas.text_encoder, dtype, device);
                let mut rebuilt = weights::with_file(&text.source.path, || ClipTextTransformer::new(vb, &text.config))?;
                // Textual inversion rows were appended to the token table at load; the rebuilt
                // table has the file's rows only, so the added ones are carried over.
                self.textual_inversions.carry_rows(&text.model, &mut rebuilt)?;
                Some(rebuilt)
            }
        };
        let text_encoder_2 = match self.text_encoder_2.as_ref() {
            None => None,
            Some(second) => {
                let text = &second.text_encoder;
                let vb = text.base.rebuild(deltas.text_encoder_2, dtype, device);
                let mut rebuilt =
                    weights::with_file(&text.source.path, || ClipTextModelWithProjection::new(vb, &text.config))?;
                second.textual_inversions.carry_rows(&text.model.text_model, &mut rebuilt.text_model)?;
                Some(rebuilt)
            }
        };
        let vb = self.unet.base.rebuild(deltas.unet, dtype, device);
        let unet = weights::with_file(&self.unet.source.path, || UNet2DConditionModel::new(vb, &self.unet.config))?;
        if let (Some(text), Some(model)) = (self.text_encoder.as_mut(), text_encoder) {
            text.model = model;
        }
        if let (Some(text), Some(model)) = (self.text_encoder_2.as_mut(), text_encoder_2) {
            text.text_encoder.model = model;
        }
        self.unet.model = unet;
        self.loras = loras.to_vec();
        Ok(())
    }
}

/// [`Components::vae_needs_upcasting`] from the parts, before the components exist.
fn vae_upcasts(sdxl: bool, dtype: DType, vae: &AutoencoderKLConfig) -> bool {
    sdxl && dtype == DType::F16 && vae.force_upcast
}

/// The dtype the VAE is loaded in: f32 where it upcasts ([`vae_upcasts`]; its f16 copy would
/// never run), else the compute dtype.
fn vae_dtype(sdxl: bool, dtype: DType, vae: &AutoencoderKLConfig) -> DType {
    if vae_upcasts(sdxl, dtype, vae) {
        DType::F32
    } else {
        dtype
    }
}
