//! Reading diffusers' JSON configs (model_index.json, each component's config.json).
//!
//! Each model owns its typed config struct beside its code (`models::unet_2d_condition::UNet2DConditionConfig`, ...);
//! this module only reads files and names them in errors.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Read and parse a JSON file; errors name the file and, for parse errors, the line and column.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::model(path, "file not found"),
        _ => Error::model(path, format!("cannot be read: {e}")),
    })?;
    parse_json(path, &text)
}

/// Parse a config's JSON text; errors name `path` and, past the syntax, the field at fault
/// ("is not a valid config: block_out_channels: invalid type: string ..., expected a sequence").
pub fn parse_json<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    let text = python_infinity_as_null(text);
    let mut json = serde_json::Deserializer::from_str(&text);
    let value: T = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner().to_string();
        // Some fields' own messages start with their name already.
        if matches!(at.as_str(), "." | "" | "?") || inner.starts_with(&format!("{at} ")) {
            Error::model(path, format!("is not a valid config: {inner}"))
        } else {
            Error::model(path, format!("is not a valid config: {at}: {inner}"))
        }
    })?;
    json.end().map_err(|e| Error::model(path, format!("is not a valid config: {e}")))?;
    Ok(value)
}

/// Python's `json` writes -inf as the bare literal `-Infinity`, which JSON lacks: every
/// DPMSolverMultistepScheduler config diffusers saves carries `"lambda_min_clipped": -Infinity`
/// (its default). Outside strings it becomes `null`, which the fields that hold -inf read as
/// -infinity (`lambda_min_clipped: None`). Other text is left as it is.
fn python_infinity_as_null(text: &str) -> std::borrow::Cow<'_, str> {
    const LITERAL: &str = "-Infinity";
    if !text.contains(LITERAL) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if !in_string && rest.starts_with(LITERAL) {
            out.push_str("null");
            rest = &rest[LITERAL.len()..];
            continue;
        }
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => in_string = !in_string,
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

/// model_index.json: which pipeline class and which component folders.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelIndex {
    #[serde(rename = "_class_name")]
    pub class_name: String,
    #[serde(rename = "_diffusers_version", default)]
    pub diffusers_version: Option<String>,
    /// Each component's `[library, class]` (`"scheduler": ["diffusers", "PNDMScheduler"]`).
    #[serde(flatten)]
    pub components: std::collections::BTreeMap<String, serde_json::Value>,
}

impl ModelIndex {
    /// A component's class name as model_index.json gives it (`"PNDMScheduler"`), if any.
    pub fn component_class(&self, component: &str) -> Option<&str> {
        self.components.get(component)?.as_array()?.get(1)?.as_str()
    }
}

/// The folders of one Stable Diffusion model in diffusers' layout.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub root: PathBuf,
}

impl ModelFolder {
    /// Check that `root` looks like a diffusers Stable Diffusion folder and read its index.
    pub fn open(root: &Path) -> Result<(Self, ModelIndex)> {
        if !root.is_dir() {
            return Err(Error::model(
                root,
                "is not a folder (expected a diffusers model folder with model_index.json)",
            ));
        }
        let index: ModelIndex = read_json(&root.join("model_index.json"))?;
        Ok((Self { root: root.to_path_buf() }, index))
    }

    pub fn component(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `<component>/config.json` (or scheduler_config.json for the scheduler).
    pub fn config_path(&self, component: &str) -> PathBuf {
        let file = if component == "scheduler" { "scheduler_config.json" } else { "config.json" };
        self.root.join(component).join(file)
    }
}
