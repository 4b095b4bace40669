//! LoRA, fused into the weights as diffusers' `load_lora_weights` + `set_adapters(names, weights)`
//! + `fuse_lora()` does it: each layer's weight becomes `W + Σ weight_i · scale_i · up_i · down_i`,
//! with `scale = alpha / rank` when the file gives an alpha (kohya) and 1 otherwise (PEFT's
//! default `lora_alpha = rank`). A convolution LoRA (LoCon) multiplies the flattened filters.
//!
//! The sum is added to the tensors the model was built from ([`super::base_weights`]), so another
//! set of LoRAs replaces this one exactly (no subtraction), without reading the model's file again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::base_weights::BaseWeights;
use super::lora_keys::{group, LoraLayer, Resolver, Target};
use super::single_file::refuse_pickle;
use super::single_file_keys::UnetLayout;
use crate::error::{Error, Result};
use crate::weights::{self, SafetensorsFile};

/// One LoRA file and its weight (diffusers' adapter weight, A1111's `<lora:name:weight>`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub weight: f64,
}

/// The sum of the LoRAs' changes to each model, by weight name (f32).
#[derive(Default)]
pub struct LoraDeltas {
    pub unet: HashMap<String, Tensor>,
    pub text_encoder: HashMap<String, Tensor>,
    /// SDXL's `text_encoder_2`.
    pub text_encoder_2: HashMap<String, Tensor>,
}

/// The models a LoRA can change, as built.
pub struct LoraTargets<'a> {
    pub unet: &'a BaseWeights,
    pub unet_layout: &'a UnetLayout,
    /// None for SDXL's refiner layout (`text_encoder_2` alone).
    pub text_encoder: Option<&'a BaseWeights>,
    /// SDXL's `text_encoder_2`; None for SD1.x/SD2.x.
    pub text_encoder_2: Option<&'a BaseWeights>,
    /// Where the deltas are computed (the models' device).
    pub device: &'a Device,
}

/// Read every LoRA of `specs` and sum their changes. Errors name the file and the key at fault: a
/// key that is not a LoRA key, a layer the model does not have, shapes that do not fit it.
pub fn deltas(specs: &[LoraSpec], targets: &LoraTargets) -> Result<LoraDeltas> {
    let unet = Resolver::new(&targets.unet.names(), Some(targets.unet_layout));
    let resolver = |base: Option<&BaseWeights>| base.map(|b| Resolver::new(&b.names(), None));
    let (text, text_2) = (resolver(targets.text_encoder), resolver(targets.text_encoder_2));
    let has: Vec<&str> = [
        Some(Target::Unet.name()),
        text.as_ref().map(|_| Target::TextEncoder.name()),
        text_2.as_ref().map(|_| Target::TextEncoder2.name()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut out = LoraDeltas::default();
    for spec in specs {
        if !spec.weight.is_finite() {
            return Err(Error::invalid_option(format!(
                "Expected a finite number for loras weight but received {} (for {})",
                spec.weight,
                spec.path.display()
            )));
        }
        refuse_pickle(&spec.path)?;
        let file = weights::open_file(&spec.path)?;
        let names: Vec<String> = file.names().into_iter().filter(|n| n != "__metadata__").collect();
        if names.is_empty() {
            return Err(Error::model(&spec.path, "holds no tensors: it is not a LoRA"));
        }
        let layers = group(&names).map_err(|e| Error::model(&spec.path, e))?;
        let peft = PeftScales::read(&file).map_err(|e| Error::model(&spec.path, e))?;
        let key_of = |layer: &LoraLayer| {
            layer.down.as_ref().or(layer.up.as_ref()).or(layer.alpha.as_ref()).cloned().unwrap_or_default()
        };
        // A model without a text encoder the file changes (an SDXL LoRA on SD1.x/SD2.x, or on the
        // refiner) is said first: its other layers would not fit either.
        if let Some(((target, _), layer)) = layers.iter().find(|((t, _), _)| !has.contains(&t.name())) {
            return Err(Error::model(
                &spec.path,
                format!(
                    "key {}: changes the {}, which this model does not have (it has {})",
                    key_of(layer),
                    target.name(),
                    has.join(", ")
                ),
            ));
        }
        for ((target, module), layer) in &layers {
            let key = key_of(layer);
            let (resolver, base, sums) = match target {
                Target::Unet => (Some(&unet), Some(targets.unet), &mut out.unet),
                Target::TextEncoder => (text.as_ref(), targets.text_encoder, &mut out.text_encoder),
                Target::TextEncoder2 => (text_2.as_ref(), targets.text_encoder_2, &mut out.text_encoder_2),
            };
            let (Some(resolver), Some(base)) = (resolver, base) else {
                return Err(Error::Internal(format!("{key}: no {} to change", target.name())));
            };
            let weight_name = resolver.weight(module).ok_or_else(|| {
                Error::model(
                    &spec.path,
                    format!(
                        "key {key}: the {} has no layer it maps to (a LoRA for another architecture, or a layer candlewick does not have)",
                        target.name()
                    ),
                )
            })?;
            let base_dims =
                base.dims(&weight_name).ok_or_else(|| Error::Internal(format!("{weight_name} not recorded")))?;
            let default_scale = match module {
                super::lora_keys::Module::Dotted(m) => peft.scale(*target, m),
                super::lora_keys::Module::Kohya(_) => None,
            };
            let delta = layer_delta(&file, layer, &key, &base_dims, default_scale, targets.device)
                .map_err(|e| Error::model(&spec.path, e))?;
            let delta = (delta * spec.weight)?;
            let sum = match sums.remove(&weight_name) {
                Some(previous) => (previous + delta)?,
                None => delta,
            };
            sums.insert(weight_name, sum);
        }
    }
    Ok(out)
}

/// `scale · up · down`, shaped as the layer's weight (`dims`).
fn layer_delta(
    file: &SafetensorsFile<memmap2::Mmap>,
    layer: &LoraLayer,
    key: &str,
    dims: &[usize],
    default_scale: Option<f64>,
    device: &Device,
) -> std::result::Result<Tensor, String> {
    let (Some(down_key), Some(up_key)) = (&layer.down, &layer.up) else {
        return Err(format!(
            "key {key}: the layer lacks its {} half",
            if layer.down.is_none() { "down (lora_A)" } else { "up (lora_B)" }
        ));
    };
    let read = |k: &str| file.tensor(k, None, DType::F32, device).map_err(|e| format!("key {k}: {e}"));
    let (down, up) = (read(down_key)?, read(up_key)?);
    let rank = down.dims().first().copied().unwrap_or(0);
    if down.rank() < 2 || up.rank() < 2 || up.dims()[1] != rank || rank == 0 {
        return Err(format!(
            "keys {down_key} {:?} and {up_key} {:?}: not a LoRA pair (down is [rank, in, ...], up is [out, rank, ...])",
            down.dims(),
            up.dims()
        ));
    }
    if up.dims()[2..].iter().any(|&d| d != 1) {
        return Err(format!("key {up_key}: shape {:?}, the up half of a LoRA has 1x1 kernels", up.dims()));
    }
    let scale = match &layer.alpha {
        Some(alpha_key) => {
            let alpha = read(alpha_key)?
                .flatten_all()
                .and_then(|a| a.to_vec1::<f32>())
                .map_err(|e| format!("key {alpha_key}: {e}"))?;
            let [alpha] = alpha.as_slice() else {
                return Err(format!("key {alpha_key}: alpha is one number, this has {}", alpha.len()));
            };
            *alpha as f64 / rank as f64
        }
        None => default_scale.unwrap_or(1.0),
    };
    let out = up.dims()[0];
    let product = (|| up.reshape((out, rank))?.matmul(&down.reshape((rank, ()))?)? * scale)()
        .map_err(|e: candle_core::Error| e.to_string())?;
    let want: usize = dims.iter().product();
    if product.elem_count() != want || dims.first() != Some(&out) {
        return Err(format!(
            "keys {down_key} {:?} and {up_key} {:?} make a [{out}, {}] change but the layer's weight is {dims:?} (a LoRA for another architecture?)",
            down.dims(),
            up.dims(),
            product.elem_count() / out.max(1)
        ));
    }
    product.reshape(dims).map_err(|e| e.to_string())
}

/// Where a LoRA spec's file is, for messages.
pub fn describe(specs: &[LoraSpec]) -> Vec<String> {
    specs.iter().map(|s| format!("{}:{}", Path::new(&s.path).display(), s.weight)).collect()
}

/// PEFT's scale (`lora_alpha / r`, or `/ sqrt(r)` with rsLoRA) per target, from the adapter configs
/// diffusers writes into the file's metadata (`lora_adapter_metadata`: `unet.r`, `unet.lora_alpha`,
/// `unet.alpha_pattern`, ...). Without them PEFT's default applies (`lora_alpha = r`: scale 1).
#[derive(Default)]
struct PeftScales {
    configs: HashMap<&'static str, serde_json::Map<String, serde_json::Value>>,
}

impl PeftScales {
    fn read(file: &SafetensorsFile<memmap2::Mmap>) -> std::result::Result<Self, String> {
        let Some(text) = file.user_metadata("lora_adapter_metadata") else { return Ok(Self::default()) };
        let all: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| format!("its lora_adapter_metadata is not a JSON object: {e}"))?;
        let mut configs: HashMap<&'static str, serde_json::Map<String, serde_json::Value>> = HashMap::new();
        for (key, value) in all {
            for target in [Target::Unet, Target::TextEncoder, Target::TextEncoder2] {
                if let Some(field) = key.strip_prefix(target.name()).and_then(|k| k.strip_prefix('.')) {
                    configs.entry(target.name()).or_default().insert(field.to_string(), value.clone());
                }
            }
        }
        Ok(Self { configs })
    }

    /// The scale of `module` (a dotted name), if the file's metadata gives one.
    fn scale(&self, target: Target, module: &str) -> Option<f64> {
        let config = self.configs.get(target.name())?;
        // PEFT's patterns match a module whose name ends with the key.
        let pattern = |field: &str| {
            let map = config.get(field)?.as_object()?;
            map.iter()
                .find(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}")))
                .and_then(|(_, v)| v.as_f64())
        };
        let r = pattern("rank_pattern").or_else(|| config.get("r")?.as_f64())?;
        let alpha = pattern("alpha_pattern").or_else(|| config.get("lora_alpha")?.as_f64())?;
        let rslora = config.get("use_rslora").and_then(|v| v.as_bool()).unwrap_or(false);
        (r > 0.0).then(|| if rslora { alpha / r.sqrt() } else { alpha / r })
    }
}
