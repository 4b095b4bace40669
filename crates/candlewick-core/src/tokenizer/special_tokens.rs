//! The special tokens of a CLIP tokenizer folder, resolved as transformers 5's
//! `PreTrainedTokenizerBase.from_pretrained` + `TokenizersBackend` resolve them:
//!
//! 1. Named tokens (`bos_token`, `eos_token`, `unk_token`, `sep_token`, `pad_token`, `cls_token`,
//!    `mask_token`) come from tokenizer_config.json; CLIPTokenizer's defaults fill bos/eos/unk/pad.
//! 2. If tokenizer_config.json has `added_tokens_decoder`, its entries are added tokens and a named
//!    token with the same content takes that entry's flags; special_tokens_map.json is not read.
//!    Otherwise (older folders, e.g. SD1.5 and SD2) special_tokens_map.json overrides the named tokens.
//! 3. A token given as a plain string is special and matched in the raw text (`normalized: false`);
//!    one given as an object keeps its flags (`normalized` defaults to `not special`).
//! 4. Every named token is then (re)added as special, in the order above, so when two names share
//!    a content (SD1.5: eos, unk and pad are all `<|endoftext|>`) the last one's flags win.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tokenizers::AddedToken;

use crate::config::read_json;
use crate::error::{Error, Result};

/// transformers' `SPECIAL_TOKENS_ATTRIBUTES`, in its order.
const NAMED: [&str; 7] = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

/// CLIPTokenizer.__init__'s defaults.
const BOS_DEFAULT: &str = "<|startoftext|>";
const EOS_DEFAULT: &str = "<|endoftext|>";

/// The resolved special tokens of one tokenizer folder.
pub(super) struct SpecialTokens {
    pub bos: String,
    pub eos: String,
    pub unk: String,
    pub pad: String,
    pub model_max_length: usize,
    /// tokenizer_config.json, named in errors about the settings above.
    pub source: PathBuf,
    /// The tokens to add to the tokenizer, one per content, with their final flags.
    pub added: Vec<AddedToken>,
    /// (content, file it came from, its name) for every named token, to check against the vocab.
    origins: Vec<(String, PathBuf, String)>,
}

/// One named token before resolution, with the file that declared it.
struct Named {
    token: AddedToken,
    from: PathBuf,
}

impl SpecialTokens {
    /// Reads tokenizer_config.json and, when transformers would, special_tokens_map.json.
    pub fn read(config_path: &Path, map_path: Option<&Path>) -> Result<Self> {
        let config: Map<String, Value> = read_json(config_path)?;
        let model_max_length = read_max_length(config_path, &config)?;

        // 1. Named tokens from tokenizer_config.json over CLIPTokenizer's defaults.
        let mut named: Vec<(&str, Option<Named>)> = NAMED.iter().map(|&k| (k, None)).collect();
        let default = |content: &str| Some(Named { token: plain(content), from: config_path.to_path_buf() });
        for (key, slot) in named.iter_mut() {
            *slot = match *key {
                "bos_token" => default(BOS_DEFAULT),
                "eos_token" | "unk_token" | "pad_token" => default(EOS_DEFAULT),
                _ => None,
            };
            if let Some(value) = config.get(*key).filter(|v| !v.is_null()) {
                let token = parse_token(config_path, key, value, false)?;
                *slot = Some(Named { token, from: config_path.to_path_buf() });
            }
        }

        // 2. added_tokens_decoder, or else special_tokens_map.json.
        let mut added: Vec<AddedToken> = Vec::new();
        if let Some(decoder) = config.get("added_tokens_decoder") {
            let entries = decoder
                .as_object()
                .ok_or_else(|| Error::model(config_path, "added_tokens_decoder is not an object of id -> token"))?;
            let mut by_id = Vec::with_capacity(entries.len());
            for (id, value) in entries {
                let id: u32 = id.parse().map_err(|_| {
                    Error::model(config_path, format!("added_tokens_decoder has a key {id:?} that is not a token id"))
                })?;
                by_id.push((id, parse_token(config_path, "added_tokens_decoder", value, false)?));
            }
            by_id.sort_by_key(|(id, _)| *id);
            added.extend(by_id.into_iter().map(|(_, t)| t));
            for (_, slot) in named.iter_mut() {
                if let Some(n) = slot {
                    if let Some(entry) = added.iter().find(|t| t.content == n.token.content) {
                        n.token = entry.clone();
                    }
                }
            }
        } else if let Some(map_path) = map_path {
            let map: Map<String, Value> = read_json(map_path)?;
            for (key, slot) in named.iter_mut() {
                if let Some(value) = map.get(*key).filter(|v| !v.is_null()) {
                    let token = parse_token(map_path, key, value, true)?;
                    *slot = Some(Named { token, from: map_path.to_path_buf() });
                }
            }
        }

        // 3-4. Every named token (re)added as special; the last one per content wins.
        let mut origins = Vec::new();
        for (key, slot) in &named {
            let Some(n) = slot else { continue };
            let token = n.token.clone().special(true);
            match added.iter_mut().find(|t| t.content == token.content) {
                Some(existing) => *existing = token,
                None => added.push(token),
            }
            origins.push((n.token.content.clone(), n.from.clone(), key.to_string()));
        }

        let content = |key: &str| -> Result<String> {
            named
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, slot)| slot.as_ref())
                .map(|n| n.token.content.clone())
                .ok_or_else(|| Error::model(config_path, format!("has no {key}")))
        };
        Ok(Self {
            bos: content("bos_token")?,
            eos: content("eos_token")?,
            unk: content("unk_token")?,
            pad: content("pad_token")?,
            model_max_length,
            source: config_path.to_path_buf(),
            added,
            origins,
        })
    }

    /// (content, declaring file, name) of every named special token.
    pub fn all_with_sources(&self) -> impl Iterator<Item = (&str, &Path, &str)> {
        self.origins.iter().map(|(c, f, k)| (c.as_str(), f.as_path(), k.as_str()))
    }
}

/// A token given as a plain string: special, matched in the raw (unnormalized) text.
fn plain(content: &str) -> AddedToken {
    AddedToken::from(content, true)
}

/// A token as a plain string or as an AddedToken object `{"content": ..., "normalized": ...}`.
/// special_tokens_map.json's objects are always special (transformers drops their `special` key);
/// tokenizer_config.json's are special only if they say so.
fn parse_token(file: &Path, key: &str, value: &Value, in_special_tokens_map: bool) -> Result<AddedToken> {
    let bad = || Error::model(file, format!("{key} is neither a string nor an object with a string \"content\""));
    match value {
        Value::String(s) => Ok(plain(s)),
        Value::Object(obj) => {
            let content = obj.get("content").and_then(Value::as_str).ok_or_else(bad)?;
            let flag = |name: &str, default: bool| -> Result<bool> {
                match obj.get(name) {
                    None | Some(Value::Null) => Ok(default),
                    Some(Value::Bool(b)) => Ok(*b),
                    Some(other) => Err(Error::model(file, format!("{key}.{name} is {other}, expected true or false"))),
                }
            };
            let special = in_special_tokens_map || flag("special", false)?;
            Ok(AddedToken::from(content, special)
                .normalized(flag("normalized", !special)?)
                .lstrip(flag("lstrip", false)?)
                .rstrip(flag("rstrip", false)?)
                .single_word(flag("single_word", false)?))
        }
        _ => Err(bad()),
    }
}

/// `model_max_length`: the number of tokens per prompt; CLIP's text encoder takes 77.
fn read_max_length(file: &Path, config: &Map<String, Value>) -> Result<usize> {
    let value = config
        .get("model_max_length")
        .ok_or_else(|| Error::model(file, "has no model_max_length (CLIP tokenizers use 77)"))?;
    match value.as_u64() {
        Some(n) if (2..=1_000_000).contains(&n) => Ok(n as usize),
        _ => Err(Error::model(file, format!("model_max_length is {value}, expected an integer between 2 and 1000000"))),
    }
}
