//! A single file's [`parts`]: its weights (single_file.rs) with the configs and tokenizer(s) that
//! diffusers' `from_single_file` takes from `config`, a diffusers folder, or else from the
//! checkpoint type's default repository: [`ConfigValues`], read from the folder where it has
//! them, else built in. SD2.x and SDXL files need the folder's.
//!
//! The built-in ones are diffusers' for an SD1.x checkpoint when none is given: those
//! of its default repositories (`stable-diffusion-v1-5/stable-diffusion-v1-5`, and
//! `stable-diffusion-v1-5/stable-diffusion-inpainting` for 9 input channels), which are the
//! values of the original `v1-inference.yaml`. Built in because nothing is downloaded at load.
//! Only the fields that differ from the config structs' diffusers defaults are written.

use std::path::Path;

use super::single_file::{ModelType, SingleFile, KEY_CONV_IN};
use crate::config::{parse_json, read_json, ModelFolder, ModelIndex};
use crate::error::{Error, Result};
use crate::models::clip::ClipTextConfig;
use crate::models::unet_2d_condition::UNet2DConditionConfig;
use crate::models::vae::AutoencoderKLConfig;
use crate::pipeline::{Parts, SecondTextFlags, TextParts};

/// The parts of a single-file checkpoint: configs and tokenizer(s) from `config` (a diffusers
/// folder, diffusers' `from_single_file(config=...)`) or, for SD1.x, diffusers' defaults built in.
pub fn parts(sf: &SingleFile, config: Option<&Path>) -> Result<Parts> {
    let Some(dir) = config else {
        let tokenizers = match sf.model_type {
            ModelType::XlBase | ModelType::XlInpaint => "tokenizer/ and tokenizer_2/ (vocab.json and merges.txt each)",
            ModelType::XlRefiner => "tokenizer_2/vocab.json and tokenizer_2/merges.txt",
            _ => "tokenizer/vocab.json and tokenizer/merges.txt",
        };
        let configs = if sf.model_type.is_xl() || sf.model_type.is_v2() {
            "and its configs".to_string()
        } else {
            format!("its configs are used when present, else diffusers' defaults for {}", sf.model_type.name())
        };
        return Err(Error::model(
            &sf.path,
            format!(
                "is a single-file checkpoint ({} layout), which holds no tokenizer: pass the `config` option a diffusers \
                 folder of the same family with {tokenizers} (e.g. {} from the Hugging Face Hub); {configs}",
                sf.model_type.name(),
                sf.model_type.default_repo(),
            ),
        ));
    };
    let values = ConfigValues::read(sf, dir)?;
    let folder = ModelFolder { root: dir.to_path_buf() };
    let unet_config: UNet2DConditionConfig = from_value(&folder.config_path("unet"), values.unet)?;
    let stored_in = sf.file.shape(KEY_CONV_IN).and_then(|s| s.get(1).copied());
    if stored_in.is_some_and(|c| c != unet_config.in_channels) {
        return Err(Error::model(
            folder.config_path("unet"),
            format!(
                "has in_channels {} but the checkpoint's UNet takes {} ({}): pass `config` a folder of the same \
                 kind (e.g. {}), or one with only tokenizer/ for diffusers' defaults",
                unet_config.in_channels,
                stored_in.unwrap_or_default(),
                sf.model_type.name(),
                sf.model_type.default_repo()
            ),
        ));
    }
    let vae_config: AutoencoderKLConfig = from_value(&folder.config_path("vae"), values.vae)?;
    let text = match values.text_encoder {
        None => None,
        Some(value) => {
            let config: ClipTextConfig = from_value(&folder.config_path("text_encoder"), value)?;
            Some(TextParts {
                tokenizer_dir: folder.component("tokenizer"),
                weights: sf.text_encoder(config.hidden_size),
                config,
                name: "text_encoder",
            })
        }
    };
    let text_2 = match values.text_encoder_2 {
        None => None,
        Some((value, flags)) => {
            let config: ClipTextConfig = from_value(&folder.config_path("text_encoder_2"), value)?;
            let weights = sf.text_encoder_2(config.hidden_size);
            Some((
                TextParts { tokenizer_dir: folder.component("tokenizer_2"), weights, config, name: "text_encoder_2" },
                flags,
            ))
        }
    };
    Ok(Parts {
        text,
        text_2,
        unet_weights: sf.unet(&unet_config)?,
        unet_config,
        vae_weights: sf.vae(vae_config.block_out_channels.len()),
        vae_config,
        scheduler_config: values.scheduler,
        scheduler_path: folder.config_path("scheduler"),
    })
}

/// A single file's configs as JSON: the `config` folder's where it has them, else built in.
pub struct ConfigValues {
    pub unet: serde_json::Value,
    pub vae: serde_json::Value,
    /// None for SDXL's refiner, which has no first text encoder.
    pub text_encoder: Option<serde_json::Value>,
    /// SDXL's `text_encoder_2` and model_index.json's flags for it.
    pub text_encoder_2: Option<(serde_json::Value, SecondTextFlags)>,
    /// With the class to build as `_class_name`.
    pub scheduler: serde_json::Map<String, serde_json::Value>,
}

impl ConfigValues {
    pub fn read(sf: &SingleFile, dir: &Path) -> Result<Self> {
        let folder = ModelFolder { root: dir.to_path_buf() };
        let index_path = dir.join("model_index.json");
        let index: Option<ModelIndex> = index_path.is_file().then(|| read_json(&index_path)).transpose()?;
        if sf.model_type.is_xl() {
            return Self::read_xl(sf, &folder, index.as_ref());
        }
        if !dir.join("tokenizer").join("vocab.json").is_file() {
            return Err(Error::model(
                dir.join("tokenizer"),
                "has no vocab.json: the `config` folder must hold the tokenizer",
            ));
        }
        let has_unet = folder.config_path("unet").is_file();
        if !has_unet && sf.model_type.is_v2() {
            return Err(Error::model(
                &sf.path,
                format!(
                    "is an SD2.x checkpoint, whose configs are not built in: pass `config` a copy of {} with its configs",
                    sf.model_type.default_repo()
                ),
            ));
        }
        let json = |component: &str, built_in_text: &str| -> Result<serde_json::Value> {
            let path = folder.config_path(component);
            if path.is_file() {
                read_json(&path)
            } else {
                parse_json(&path, built_in_text)
            }
        };
        let mut unet = json("unet", SD1_UNET)?;
        if !has_unet {
            unet["in_channels"] = if sf.model_type == ModelType::Inpainting { 9 } else { 4 }.into();
        }
        check_family(sf, &folder, &unet)?;
        let scheduler_path = folder.config_path("scheduler");
        let mut scheduler: serde_json::Map<String, serde_json::Value> =
            from_value(&scheduler_path, json("scheduler", SD1_SCHEDULER)?)?;
        if let Some(class) = index.as_ref().and_then(|i| i.component_class("scheduler")) {
            scheduler.insert("_class_name".into(), class.into());
        }
        Ok(Self {
            unet,
            vae: json("vae", SD1_VAE)?,
            text_encoder: Some(json("text_encoder", SD1_TEXT_ENCODER)?),
            text_encoder_2: None,
            scheduler,
        })
    }

    /// SDXL: every config from the folder (none is built in), the tokenizers the checkpoint's
    /// text encoders need, and model_index.json's flags (the folder's defaults when absent).
    fn read_xl(sf: &SingleFile, folder: &ModelFolder, index: Option<&ModelIndex>) -> Result<Self> {
        // The inpainting checkpoint has the base's two text encoders.
        let base = sf.model_type != ModelType::XlRefiner;
        let kind = match sf.model_type {
            ModelType::XlInpaint => "an SDXL inpainting",
            ModelType::XlRefiner => "an SDXL refiner",
            _ => "an SDXL base",
        };
        // Another family's folder first, by name (it lacks SDXL's files too, which would say less).
        let unet_path = folder.config_path("unet");
        if unet_path.is_file() {
            check_family(sf, folder, &read_json(&unet_path)?)?;
        }
        let needed: &[(&str, &str)] = if base {
            &[("tokenizer", "vocab.json"), ("tokenizer_2", "vocab.json"), ("text_encoder", "config.json")]
        } else {
            &[("tokenizer_2", "vocab.json")]
        };
        for (component, file) in needed {
            let path = folder.component(component).join(file);
            if !path.is_file() {
                return Err(Error::model(
                    &path,
                    format!(
                        "not found: {} is {kind} checkpoint ({}), whose `config` folder must hold {component}/ \
                         (e.g. a copy of {})",
                        sf.path.display(),
                        sf.model_type.name(),
                        sf.model_type.default_repo()
                    ),
                ));
            }
        }
        if !base && folder.config_path("text_encoder").is_file() {
            return Err(Error::model(
                folder.component("text_encoder"),
                format!(
                    "belongs to an SDXL base folder, but {} is an SDXL refiner checkpoint (xl_refiner: one text \
                     encoder, text_encoder_2): pass `config` a refiner folder (e.g. a copy of {})",
                    sf.path.display(),
                    sf.model_type.default_repo()
                ),
            ));
        }
        let json = |component: &str| -> Result<serde_json::Value> {
            let path = folder.config_path(component);
            if !path.is_file() {
                return Err(Error::model(
                    &path,
                    format!(
                        "not found: {} is {kind} checkpoint ({}), whose configs are not built in: pass `config` a \
                         copy of {} with its configs",
                        sf.path.display(),
                        sf.model_type.name(),
                        sf.model_type.default_repo()
                    ),
                ));
            }
            read_json(&path)
        };
        let unet = json("unet")?;
        let scheduler_path = folder.config_path("scheduler");
        let mut scheduler: serde_json::Map<String, serde_json::Value> =
            from_value(&scheduler_path, json("scheduler")?)?;
        if let Some(class) = index.and_then(|i| i.component_class("scheduler")) {
            scheduler.insert("_class_name".into(), class.into());
        }
        // As Parts::from_folder: diffusers' from_single_file takes these from the folder's model_index.json.
        let flag = |key: &str, default: bool| {
            index.and_then(|i| i.components.get(key)).and_then(serde_json::Value::as_bool).unwrap_or(default)
        };
        let flags = SecondTextFlags {
            force_zeros_for_empty_prompt: flag("force_zeros_for_empty_prompt", true),
            requires_aesthetics_score: flag("requires_aesthetics_score", false),
        };
        Ok(Self {
            unet,
            vae: json("vae")?,
            text_encoder: if base { Some(json("text_encoder")?) } else { None },
            text_encoder_2: Some((json("text_encoder_2")?, flags)),
            scheduler,
        })
    }
}

/// The `config` folder's UNet must be of the checkpoint's family: SDXL's takes the added
/// conditions (`addition_embed_type`), SD1.x's and SD2.x's do not.
fn check_family(sf: &SingleFile, folder: &ModelFolder, unet: &serde_json::Value) -> Result<()> {
    let folder_xl = unet.get("addition_embed_type").is_some_and(|t| !t.is_null());
    if folder_xl == sf.model_type.is_xl() {
        return Ok(());
    }
    let (folder_kind, file_kind) = if folder_xl {
        ("an SDXL UNet config (addition_embed_type set)", "an SD1.x/SD2.x checkpoint")
    } else {
        ("an SD1.x/SD2.x UNet config (no addition_embed_type)", "an SDXL checkpoint")
    };
    Err(Error::model(
        folder.config_path("unet"),
        format!(
            "is {folder_kind}, but {} is {file_kind} ({}): pass `config` a folder of the checkpoint's family (e.g. a \
             copy of {})",
            sf.path.display(),
            sf.model_type.name(),
            sf.model_type.default_repo()
        ),
    ))
}

pub(crate) fn from_value<T: serde::de::DeserializeOwned>(path: &Path, value: serde_json::Value) -> Result<T> {
    parse_json(path, &value.to_string())
}

/// unet/config.json (`in_channels` is set from the checkpoint: 4, or 9 for inpainting).
pub const SD1_UNET: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "act_fn": "silu",
  "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 4,
  "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
}"#;

/// vae/config.json.
pub const SD1_VAE: &str = r#"{
  "_class_name": "AutoencoderKL",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 512,
  "scaling_factor": 0.18215,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
}"#;

/// text_encoder/config.json (openai/clip-vit-large-patch14's text model).
pub const SD1_TEXT_ENCODER: &str = r#"{
  "architectures": ["CLIPTextModel"],
  "bos_token_id": 0,
  "eos_token_id": 2,
  "hidden_act": "quick_gelu",
  "hidden_size": 768,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "model_type": "clip_text_model",
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "pad_token_id": 1,
  "projection_dim": 768,
  "vocab_size": 49408
}"#;

/// scheduler/scheduler_config.json.
pub const SD1_SCHEDULER: &str = r#"{
  "_class_name": "PNDMScheduler",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "clip_sample": false,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null
}"#;

/// model_index.json of a folder `candlewick convert` writes (`{class}` is the pipeline class).
pub fn model_index(class: &str, scheduler_class: &str) -> String {
    format!(
        r#"{{
  "_class_name": "{class}",
  "feature_extractor": [null, null],
  "requires_safety_checker": false,
  "safety_checker": [null, null],
  "scheduler": ["diffusers", "{scheduler_class}"],
  "text_encoder": ["transformers", "CLIPTextModel"],
  "tokenizer": ["transformers", "CLIPTokenizer"],
  "unet": ["diffusers", "UNet2DConditionModel"],
  "vae": ["diffusers", "AutoencoderKL"]
}}
"#
    )
}

/// model_index.json of an SDXL folder `candlewick convert` writes, as diffusers' `save_pretrained`
/// of `StableDiffusionXLPipeline` / `StableDiffusionXLImg2ImgPipeline` (`refiner`: no first
/// tokenizer and text encoder); the flags are the `config` folder's.
pub fn model_index_xl(
    class: &str,
    scheduler_class: &str,
    refiner: bool,
    force_zeros_for_empty_prompt: bool,
    requires_aesthetics_score: bool,
) -> String {
    let first = |library: &str, class: &str| {
        if refiner {
            "[null, null]".to_string()
        } else {
            format!(r#"["{library}", "{class}"]"#)
        }
    };
    // save_pretrained writes the flag for the classes that register it (image to image, inpainting).
    let aesthetics = if class.contains("Img2Img") || class.contains("Inpaint") {
        format!("\n  \"requires_aesthetics_score\": {requires_aesthetics_score},")
    } else {
        String::new()
    };
    format!(
        r#"{{
  "_class_name": "{class}",
  "feature_extractor": [null, null],
  "force_zeros_for_empty_prompt": {force_zeros_for_empty_prompt},
  "image_encoder": [null, null],{aesthetics}
  "scheduler": ["diffusers", "{scheduler_class}"],
  "text_encoder": {},
  "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
  "tokenizer": {},
  "tokenizer_2": ["transformers", "CLIPTokenizer"],
  "unet": ["diffusers", "UNet2DConditionModel"],
  "vae": ["diffusers", "AutoencoderKL"]
}}
"#,
        first("transformers", "CLIPTextModel"),
        first("transformers", "CLIPTokenizer")
    )
}
