//! A LoRA file's keys, grouped by the layer they change: kohya's / A1111's format
//! (`lora_unet_<module>.lora_down.weight`, `.lora_up.weight`, `.alpha`; LoCon's convolution
//! layers the same way), diffusers' PEFT format (`unet.<module>.lora_A.weight`, `.lora_B.weight`)
//! and its older ones (`.lora.down.weight`, attention processors' `processor.to_q_lora.down.weight`).
//! diffusers' `lora_conversion_utils._convert_non_diffusers_lora_to_diffusers` reads the first;
//! candlewick resolves kohya's underscored names against the model's own tensor names instead of
//! a table, so every layer the model has is reachable.

use std::collections::{BTreeMap, HashMap};

use super::single_file_keys::{unet_key, UnetLayout};

/// Which model a LoRA layer changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Unet,
    TextEncoder,
    /// SDXL's second text encoder (`CLIPTextModelWithProjection`): kohya's `lora_te2_`, PEFT's
    /// `text_encoder_2.`.
    TextEncoder2,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Self::Unet => "unet",
            Self::TextEncoder => "text_encoder",
            Self::TextEncoder2 => "text_encoder_2",
        }
    }
}

/// One layer's low-rank pair as the file names it.
#[derive(Debug, Clone, Default)]
pub struct LoraLayer {
    /// `down` ([rank, in] or [rank, in, kh, kw]), PEFT's `lora_A`.
    pub down: Option<String>,
    /// `up` ([out, rank] or [out, rank, 1, 1]), PEFT's `lora_B`.
    pub up: Option<String>,
    pub alpha: Option<String>,
}

/// The file's layers: (target, module as the file names it, kohya-style or dotted) -> keys.
pub type Layers = BTreeMap<(Target, Module), LoraLayer>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Module {
    /// kohya's underscored name without `lora_unet_` / `lora_te_` / `lora_te1_` / `lora_te2_`.
    Kohya(String),
    /// A dotted diffusers module name (`down_blocks.0.attentions.0.proj_in`).
    Dotted(String),
}

/// Group `names` by layer; an error names the first key that is not a LoRA key candlewick reads.
pub fn group(names: &[String]) -> Result<Layers, String> {
    let mut layers = Layers::new();
    for name in names {
        let (target, module, part) = parse(name)?;
        let layer = layers.entry((target, module)).or_default();
        let slot = match part {
            Part::Down => &mut layer.down,
            Part::Up => &mut layer.up,
            Part::Alpha => &mut layer.alpha,
        };
        *slot = Some(name.clone());
    }
    Ok(layers)
}

#[derive(Clone, Copy)]
enum Part {
    Down,
    Up,
    Alpha,
}

fn parse(name: &str) -> Result<(Target, Module, Part), String> {
    // SDXL's kohya files name the text encoders lora_te1_ (text_encoder) and lora_te2_ (text_encoder_2).
    const PREFIXES: [(&str, Target); 4] = [
        ("lora_unet_", Target::Unet),
        ("lora_te_", Target::TextEncoder),
        ("lora_te1_", Target::TextEncoder),
        ("lora_te2_", Target::TextEncoder2),
    ];
    for (prefix, target) in PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            let (module, suffix) =
                rest.split_once('.').ok_or_else(|| format!("key {name}: has no .lora_down/.lora_up/.alpha part"))?;
            let part = match suffix {
                "lora_down.weight" => Part::Down,
                "lora_up.weight" => Part::Up,
                "alpha" => Part::Alpha,
                other => return Err(unsupported(name, other)),
            };
            return Ok((target, Module::Kohya(module.to_string()), part));
        }
    }
    let (target, rest) = if let Some(rest) = name.strip_prefix("unet.") {
        (Target::Unet, rest)
    } else if let Some(rest) = name.strip_prefix("text_encoder_2.") {
        (Target::TextEncoder2, rest)
    } else if let Some(rest) = name.strip_prefix("text_encoder.") {
        (Target::TextEncoder, rest)
    } else if ["down_blocks.", "mid_block.", "up_blocks."].iter().any(|p| name.starts_with(p)) {
        (Target::Unet, name) // attention processors saved alone (diffusers' save_attn_procs)
    } else {
        return Err(format!(
            "key {name}: is not a LoRA key candlewick knows (kohya's lora_unet_/lora_te_/lora_te1_/lora_te2_, or diffusers' unet./text_encoder./text_encoder_2.)"
        ));
    };
    const SUFFIXES: &[(&str, Part)] = &[
        (".lora_A.weight", Part::Down),
        (".lora_B.weight", Part::Up),
        (".lora.down.weight", Part::Down),
        (".lora.up.weight", Part::Up),
        (".lora_down.weight", Part::Down),
        (".lora_up.weight", Part::Up),
        (".alpha", Part::Alpha),
        // attention processors: `processor.to_q_lora.down.weight`
        (".down.weight", Part::Down),
        (".up.weight", Part::Up),
    ];
    for (suffix, part) in SUFFIXES {
        if let Some(module) = rest.strip_suffix(suffix) {
            return Ok((target, Module::Dotted(attn_processor_module(module)), *part));
        }
    }
    Err(unsupported(name, rest.rsplit('.').next().unwrap_or(rest)))
}

/// `...attn1.processor.to_q_lora` (diffusers' old attention processors) -> `...attn1.to_q`.
fn attn_processor_module(module: &str) -> String {
    let Some((block, proc)) = module.split_once(".processor.") else { return module.to_string() };
    let layer = match proc {
        "to_out_lora" => "to_out.0".to_string(),
        other => other.strip_suffix("_lora").unwrap_or(other).to_string(),
    };
    format!("{block}.{layer}")
}

fn unsupported(name: &str, part: &str) -> String {
    let kind = if part.starts_with("hada_") {
        "a LoHa layer (LyCORIS), which candlewick does not read"
    } else if part.starts_with("lokr_") {
        "a LoKr layer (LyCORIS), which candlewick does not read"
    } else if part.starts_with("lora_mid") {
        "a LoCon layer with a CP-decomposed middle (lora_mid), which candlewick does not read"
    } else if part.starts_with("dora_scale") {
        "a DoRA magnitude, which candlewick does not read"
    } else {
        "not a LoRA part candlewick reads (lora_down/lora_up/alpha, lora_A/lora_B)"
    };
    format!("key {name}: {kind}")
}

/// Resolves a file's module names to the model's weight names (`<module>.weight`).
pub struct Resolver {
    /// kohya's underscored module name -> the model's weight name.
    kohya: HashMap<String, String>,
    names: std::collections::HashSet<String>,
}

impl Resolver {
    /// From the model's tensor names. For the UNet (`layout`), kohya names in the original
    /// (SGM/LDM) numbering (`input_blocks_4_1_...`) resolve too.
    pub fn new(names: &[String], layout: Option<&UnetLayout>) -> Self {
        let mut kohya = HashMap::new();
        for name in names {
            let Some(module) = name.strip_suffix(".weight") else { continue };
            kohya.insert(module.replace('.', "_"), name.clone());
            // CLIP's names with and without `text_model.` (kohya writes it; some files lack it).
            match module.strip_prefix("text_model.") {
                Some(bare) => kohya.entry(bare.replace('.', "_")).or_insert_with(|| name.clone()),
                None => kohya.entry(format!("text_model_{}", module.replace('.', "_"))).or_insert_with(|| name.clone()),
            };
            if let Some(ldm) = layout.and_then(|l| unet_key(name, l)) {
                if let Some(ldm_module) = ldm.strip_suffix(".weight") {
                    kohya.entry(ldm_module.replace('.', "_")).or_insert_with(|| name.clone());
                }
            }
        }
        Self { kohya, names: names.iter().cloned().collect() }
    }

    /// The weight `module` changes, if the model has it.
    pub fn weight(&self, module: &Module) -> Option<String> {
        match module {
            Module::Kohya(m) => self.kohya.get(m).cloned(),
            Module::Dotted(m) => {
                let direct = format!("{m}.weight");
                if self.names.contains(&direct) {
                    return Some(direct);
                }
                let with_prefix = format!("text_model.{m}.weight");
                if self.names.contains(&with_prefix) {
                    return Some(with_prefix);
                }
                let without = format!("{}.weight", m.strip_prefix("text_model.")?);
                self.names.contains(&without).then_some(without)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kohya_peft_and_attention_processor_keys_group_by_layer() {
        let names: Vec<String> = [
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",
            "lora_unet_down_blocks_0_attentions_0_proj_in.alpha",
            "unet.mid_block.attentions.0.proj_out.lora_A.weight",
            "unet.mid_block.attentions.0.proj_out.lora_B.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let layers = group(&names).unwrap();
        assert_eq!(layers.len(), 3);
        let kohya = &layers[&(Target::Unet, Module::Kohya("down_blocks_0_attentions_0_proj_in".into()))];
        assert!(kohya.down.is_some() && kohya.up.is_some() && kohya.alpha.is_some());
        let sdxl: Vec<String> = [
            "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight",
            "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight",
            "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_B.weight",
            "text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_B.weight",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let targets: Vec<Target> = group(&sdxl).unwrap().keys().map(|(t, _)| *t).collect();
        assert_eq!(targets, [Target::TextEncoder, Target::TextEncoder, Target::TextEncoder2, Target::TextEncoder2]);
        assert!(layers.contains_key(&(
            Target::Unet,
            Module::Dotted("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0".into())
        )));
    }

    #[test]
    fn unknown_and_unsupported_keys_are_named() {
        for (key, says) in [
            ("model.diffusion_model.out.2.weight", "is not a LoRA key"),
            ("lora_unet_x.hada_w1_a", "LoHa"),
            ("lora_unet_x.lora_mid.weight", "lora_mid"),
        ] {
            let e = group(&[key.to_string()]).unwrap_err();
            assert!(e.contains(key) && e.contains(says), "{e}");
        }
    }
}
