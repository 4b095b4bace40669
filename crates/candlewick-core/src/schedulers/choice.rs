//! Which scheduler runs, with which config: diffusers' `_class_name` dispatch and
//! `Class.from_config(config, **overrides)`, plus the names users know ("dpm++-2m-karras").

use serde::de::DeserializeOwned;
use serde_aux::serde_introspection::serde_introspect;
use serde_json::{Map, Value};

use super::scheduler::Scheduler;
use super::scheduling_ddim::{DdimScheduler, DdimSchedulerConfig};
use super::scheduling_ddpm::{DdpmScheduler, DdpmSchedulerConfig};
use super::scheduling_dpmsolver_multistep::{DpmSolverMultistepScheduler, DpmSolverMultistepSchedulerConfig};
use super::scheduling_euler_ancestral_discrete::{
    EulerAncestralDiscreteScheduler, EulerAncestralDiscreteSchedulerConfig,
};
use super::scheduling_euler_discrete::{EulerDiscreteScheduler, EulerDiscreteSchedulerConfig};
use super::scheduling_heun_discrete::{HeunDiscreteScheduler, HeunDiscreteSchedulerConfig};
use super::scheduling_lcm::{LcmScheduler, LcmSchedulerConfig};
use super::scheduling_pndm::{PndmScheduler, PndmSchedulerConfig};
use super::scheduling_unipc_multistep::{UniPcMultistepScheduler, UniPcMultistepSchedulerConfig};
use crate::error::{expected, Error, Result};

/// The schedulers Candlewick implements. Each has a config struct (serde, diffusers' defaults)
/// and a constructor that runs `set_timesteps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    Ddim,
    Pndm,
    Ddpm,
    Lcm,
    EulerDiscrete,
    EulerAncestralDiscrete,
    HeunDiscrete,
    DpmSolverMultistep,
    UniPcMultistep,
}

/// Each kind's diffusers class name and the `type` name a call uses.
const KINDS: &[(SchedulerKind, &str, &str)] = &[
    (SchedulerKind::Ddim, "DDIMScheduler", "ddim"),
    (SchedulerKind::Pndm, "PNDMScheduler", "pndm"),
    (SchedulerKind::Ddpm, "DDPMScheduler", "ddpm"),
    (SchedulerKind::Lcm, "LCMScheduler", "lcm"),
    (SchedulerKind::EulerDiscrete, "EulerDiscreteScheduler", "euler"),
    (SchedulerKind::EulerAncestralDiscrete, "EulerAncestralDiscreteScheduler", "euler-ancestral"),
    (SchedulerKind::HeunDiscrete, "HeunDiscreteScheduler", "heun"),
    (SchedulerKind::DpmSolverMultistep, "DPMSolverMultistepScheduler", "dpmsolver-multistep"),
    (SchedulerKind::UniPcMultistep, "UniPCMultistepScheduler", "unipc"),
];

/// Names users know from web UIs and other tools: a kind plus the fields that make it
/// ("DPM++ 2M Karras" is DPMSolverMultistep with Karras sigmas).
const PRESETS: &[(&str, SchedulerKind, &[(&str, PresetValue)])] = &[
    // PLMS: PNDM's linear multistep method without the Runge-Kutta warm-up (what SD1.x ships).
    ("plms", SchedulerKind::Pndm, &[("skip_prk_steps", PresetValue::Bool(true))]),
    ("euler-karras", SchedulerKind::EulerDiscrete, &[("use_karras_sigmas", PresetValue::Bool(true))]),
    ("euler-a", SchedulerKind::EulerAncestralDiscrete, &[]),
    ("heun-karras", SchedulerKind::HeunDiscrete, &[("use_karras_sigmas", PresetValue::Bool(true))]),
    ("dpm++-2m", SchedulerKind::DpmSolverMultistep, &DPM_2M),
    ("dpm++-2m-karras", SchedulerKind::DpmSolverMultistep, &DPM_2M_KARRAS),
    ("dpm++-2m-sde", SchedulerKind::DpmSolverMultistep, &DPM_2M_SDE),
    ("dpm++-2m-sde-karras", SchedulerKind::DpmSolverMultistep, &DPM_2M_SDE_KARRAS),
    // "unipc" itself is UniPC's type name.
    ("unipc-karras", SchedulerKind::UniPcMultistep, &[("use_karras_sigmas", PresetValue::Bool(true))]),
];

/// DPM++ 2M as web UIs name it: DPM-Solver++ of order 2, with or without Karras sigmas, ODE or SDE.
const fn dpm_2m(algorithm: &'static str, karras: bool) -> [(&'static str, PresetValue); 3] {
    [
        ("algorithm_type", PresetValue::Str(algorithm)),
        ("solver_order", PresetValue::Int(2)),
        ("use_karras_sigmas", PresetValue::Bool(karras)),
    ]
}
const DPM_2M: [(&str, PresetValue); 3] = dpm_2m("dpmsolver++", false);
const DPM_2M_KARRAS: [(&str, PresetValue); 3] = dpm_2m("dpmsolver++", true);
const DPM_2M_SDE: [(&str, PresetValue); 3] = dpm_2m("sde-dpmsolver++", false);
const DPM_2M_SDE_KARRAS: [(&str, PresetValue); 3] = dpm_2m("sde-dpmsolver++", true);

/// A preset's field value (consts cannot hold `serde_json::Value`).
#[derive(Debug, Clone, Copy)]
enum PresetValue {
    #[allow(dead_code)]
    Bool(bool),
    #[allow(dead_code)]
    Str(&'static str),
    #[allow(dead_code)]
    Int(i64),
}

impl SchedulerKind {
    /// diffusers' class name ("DDIMScheduler").
    pub fn class_name(self) -> &'static str {
        KINDS.iter().find(|k| k.0 == self).map(|k| k.1).unwrap_or("?")
    }

    /// The `type` name a call uses ("ddim").
    pub fn type_name(self) -> &'static str {
        KINDS.iter().find(|k| k.0 == self).map(|k| k.2).unwrap_or("?")
    }

    /// A class name from scheduler_config.json.
    pub fn from_class_name(name: &str) -> Option<Self> {
        KINDS.iter().find(|k| k.1 == name).map(|k| k.0)
    }

    /// Every name a call's `type` accepts: type names, presets, class names.
    pub fn type_names() -> Vec<&'static str> {
        let mut names: Vec<&str> = KINDS.iter().map(|k| k.2).collect();
        names.extend(PRESETS.iter().map(|p| p.0));
        names.extend(KINDS.iter().map(|k| k.1));
        names
    }

    /// The config fields this kind takes, as diffusers names them.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            SchedulerKind::Ddim => serde_introspect::<DdimSchedulerConfig>(),
            SchedulerKind::Pndm => serde_introspect::<PndmSchedulerConfig>(),
            SchedulerKind::Ddpm => serde_introspect::<DdpmSchedulerConfig>(),
            SchedulerKind::Lcm => serde_introspect::<LcmSchedulerConfig>(),
            SchedulerKind::EulerDiscrete => serde_introspect::<EulerDiscreteSchedulerConfig>(),
            SchedulerKind::EulerAncestralDiscrete => serde_introspect::<EulerAncestralDiscreteSchedulerConfig>(),
            SchedulerKind::HeunDiscrete => serde_introspect::<HeunDiscreteSchedulerConfig>(),
            SchedulerKind::DpmSolverMultistep => serde_introspect::<DpmSolverMultistepSchedulerConfig>(),
            SchedulerKind::UniPcMultistep => serde_introspect::<UniPcMultistepSchedulerConfig>(),
        }
    }

    fn build(self, config: &Map<String, Value>, steps: usize) -> Result<Box<dyn Scheduler>> {
        Ok(match self {
            SchedulerKind::Ddim => Box::new(DdimScheduler::new(parse::<DdimSchedulerConfig>(config)?, steps)?),
            SchedulerKind::Pndm => Box::new(PndmScheduler::new(parse::<PndmSchedulerConfig>(config)?, steps)?),
            SchedulerKind::Ddpm => Box::new(DdpmScheduler::new(parse::<DdpmSchedulerConfig>(config)?, steps)?),
            SchedulerKind::Lcm => Box::new(LcmScheduler::new(parse::<LcmSchedulerConfig>(config)?, steps)?),
            SchedulerKind::EulerDiscrete => Box::new(EulerDiscreteScheduler::new(parse(config)?, steps)?),
            SchedulerKind::EulerAncestralDiscrete => {
                Box::new(EulerAncestralDiscreteScheduler::new(parse(config)?, steps)?)
            }
            SchedulerKind::HeunDiscrete => Box::new(HeunDiscreteScheduler::new(parse(config)?, steps)?),
            SchedulerKind::DpmSolverMultistep => {
                Box::new(DpmSolverMultistepScheduler::new(parse::<DpmSolverMultistepSchedulerConfig>(config)?, steps)?)
            }
            SchedulerKind::UniPcMultistep => {
                Box::new(UniPcMultistepScheduler::new(parse::<UniPcMultistepSchedulerConfig>(config)?, steps)?)
            }
        })
    }
}

/// A scheduler class and its config: scheduler_config.json's fields with a call's overrides
/// merged over them. Checked when made, so that a bad folder fails at load and a bad call
/// before any work.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerChoice {
    kind: SchedulerKind,
    config: Map<String, Value>,
}

impl SchedulerChoice {
    /// The folder's scheduler: `_class_name` picks the class. `Err` is a message about the file.
    pub fn from_folder(config: Map<String, Value>) -> std::result::Result<Self, String> {
        let class = config.get("_class_name").and_then(Value::as_str).unwrap_or("").to_string();
        let kind = SchedulerKind::from_class_name(&class).ok_or_else(|| {
            let supported: Vec<&str> = KINDS.iter().map(|k| k.1).collect();
            format!("_class_name is {class:?}; candlewick implements {}", supported.join(", "))
        })?;
        // diffusers' bookkeeping keys (`_class_name`, `_diffusers_version`) are not config fields.
        let config = config.into_iter().filter(|(k, _)| !k.starts_with('_')).collect();
        let choice = Self { kind, config };
        // The config alone (no step count: PNDM's Runge-Kutta warm-up needs at least 4 steps).
        choice.parse_config().map_err(|e| format!("is not a valid {class} config: {e}"))?;
        Ok(choice)
    }

    /// A choice of `kind` with diffusers' defaults (no folder config).
    pub fn defaults(kind: SchedulerKind) -> Self {
        Self { kind, config: Map::new() }
    }

    pub fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// `Class.from_config(self.config, **overrides)`: `overrides` holds an optional `type` (a
    /// type name, a preset or a class name: another class) and fields of the chosen class; a
    /// field the class does not have is refused. Fields of the folder's config that the new
    /// class does not have are dropped, as diffusers does.
    pub fn with_overrides(&self, overrides: &Map<String, Value>) -> Result<Self> {
        let mut kind = self.kind;
        let mut fields = Map::new();
        if let Some(name) = overrides.get("type") {
            let name = name
                .as_str()
                .ok_or_else(|| expected(&crate::error::one_of(&SchedulerKind::type_names()), "scheduler.type", name))?;
            (kind, fields) = resolve_type(name)?;
        }
        let known = kind.fields();
        for (key, value) in overrides {
            if key == "type" {
                continue;
            }
            if !known.contains(&key.as_str()) {
                return Err(Error::invalid_option(format!(
                    "scheduler.{key} is not an option of the {} scheduler ({}); its options are {}",
                    kind.type_name(),
                    kind.class_name(),
                    known.join(", ")
                )));
            }
            fields.insert(key.clone(), value.clone());
        }
        let mut config: Map<String, Value> = self
            .config
            .iter()
            .filter(|(k, _)| known.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        config.extend(fields);
        let choice = Self { kind, config };
        // Field types and ranges are checked by the config's own deserialization and validation.
        choice.parse_config()?;
        Ok(choice)
    }

    /// The scheduler set up for `num_inference_steps` steps (`set_timesteps`).
    pub fn build(&self, num_inference_steps: usize) -> Result<Box<dyn Scheduler>> {
        self.kind.build(&self.config, num_inference_steps)
    }

    /// The timesteps the model was trained on (`num_train_timesteps`, 1000 by default in every class).
    pub fn num_train_timesteps(&self) -> usize {
        self.config.get("num_train_timesteps").and_then(Value::as_u64).map_or(1000, |n| n as usize)
    }

    /// The merged config's fields as diffusers names them (the folder's plus the call's).
    pub fn config(&self) -> &Map<String, Value> {
        &self.config
    }

    fn parse_config(&self) -> Result<()> {
        match self.kind {
            SchedulerKind::Ddim => parse::<DdimSchedulerConfig>(&self.config)?.validate(),
            SchedulerKind::Pndm => parse::<PndmSchedulerConfig>(&self.config)?.validate(),
            SchedulerKind::Ddpm => parse::<DdpmSchedulerConfig>(&self.config)?.validate(),
            SchedulerKind::Lcm => parse::<LcmSchedulerConfig>(&self.config)?.validate(),
            SchedulerKind::EulerDiscrete => parse::<EulerDiscreteSchedulerConfig>(&self.config)?.validate(),
            SchedulerKind::EulerAncestralDiscrete => {
                parse::<EulerAncestralDiscreteSchedulerConfig>(&self.config)?.validate()
            }
            SchedulerKind::HeunDiscrete => parse::<HeunDiscreteSchedulerConfig>(&self.config)?.validate(),
            SchedulerKind::DpmSolverMultistep => parse::<DpmSolverMultistepSchedulerConfig>(&self.config)?.validate(),
            SchedulerKind::UniPcMultistep => parse::<UniPcMultistepSchedulerConfig>(&self.config)?.validate(),
        }
    }
}

fn resolve_type(name: &str) -> Result<(SchedulerKind, Map<String, Value>)> {
    if let Some(k) = KINDS.iter().find(|k| k.2 == name || k.1 == name) {
        return Ok((k.0, Map::new()));
    }
    if let Some((_, kind, fields)) = PRESETS.iter().find(|p| p.0 == name) {
        let fields = fields
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    PresetValue::Bool(b) => Value::Bool(*b),
                    PresetValue::Str(s) => Value::String((*s).into()),
                    PresetValue::Int(i) => Value::from(*i),
                };
                (k.to_string(), v)
            })
            .collect();
        return Ok((*kind, fields));
    }
    Err(expected(&crate::error::one_of(&SchedulerKind::type_names()), "scheduler.type", format!("{name:?}")))
}

/// A config struct from the merged fields; a field of the wrong type is named with the value
/// received ("Expected a number for scheduler.beta_end but received \"x\"").
fn parse<C: DeserializeOwned>(config: &Map<String, Value>) -> Result<C> {
    let value = Value::Object(config.clone());
    serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let received = config.get(path.split(['.', '[']).next().unwrap_or("")).map(|v| v.to_string());
        let inner = e.into_inner().to_string();
        // serde: "invalid type: string \"x\", expected f64", or a closed enum's "..., expected one of ...".
        let what = inner.rsplit_once("expected ").map(|(_, w)| w.to_string()).unwrap_or(inner);
        let what = match what.as_str() {
            "f64" | "f32" => "number",
            "usize" | "u64" | "u32" => "integer >= 0",
            "a boolean" => "boolean",
            "a string" => "string",
            "a sequence" => "array of numbers",
            other => other,
        };
        expected(what, &format!("scheduler.{path}"), received.unwrap_or_else(|| "a missing value".into()))
    })
}
