//! Textual inversion embeddings, loaded as diffusers' `TextualInversionLoaderMixin.
//! load_textual_inversion` loads them (loaders/textual_inversion.py):
//!
//! - a file holds one tensor: diffusers' `learned_embeds.safetensors` (`{token: tensor}`, the key
//!   is the token) or AUTOMATIC1111's safetensors embedding (`{"emb_params": tensor}`, or
//!   `string_to_param.*`; its token is the file's name, as A1111 names it, where diffusers would
//!   use the key); the caller's `token` replaces either;
//! - a tensor `[n, width]` with n > 1 is a multi-vector embedding: tokens `token`, `token_1` ...
//!   `token_{n-1}` are added, and prompts have `token` replaced by `token token_1 ...`
//!   ([`TextualInversions::convert_prompt`], diffusers' `maybe_convert_prompt`);
//! - the tokens are added to the tokenizer (not special, normalized) and their vectors become the
//!   text encoder's token embedding rows of the new ids;
//! - SDXL's embeddings (A1111's, ComfyUI's, civitai's) hold two tensors, `clip_l` for
//!   `text_encoder`/`tokenizer` and `clip_g` for `text_encoder_2`/`tokenizer_2`; each is loaded as
//!   diffusers' documented pair of calls does, `pipe.load_textual_inversion(state_dict["clip_g"],
//!   token=..., text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)` and the same with
//!   `clip_l` and the first pair ([`Encoder`]), the token the caller's or else the file's name.
//!
//! Refused with a message: a pickle (`.pt`, `.bin`, `.ckpt`: loading one can run code), a file of
//! zero or several tensors, an SDXL file given to a one-encoder model and a one-tensor file given
//! to SDXL, a width other than the text encoder's, a token already in the vocabulary (also
//! `token_1` for a multi-vector one).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{expected, Error, Result};
use crate::models::clip::ClipTextTransformer;
use crate::tokenizer::ClipTokenizer;

/// A1111's keys for an embedding's vectors in a safetensors file.
const A1111_KEYS: [&str; 2] = ["emb_params", "string_to_param.*"];

/// SDXL's keys: the first text encoder's (CLIP ViT-L) vectors and the second's (OpenCLIP ViT-bigG).
const SDXL_KEYS: [&str; 2] = ["clip_l", "clip_g"];

/// Which text encoder an embedding is loaded into, and so which of a file's tensors it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    /// The one text encoder of SD1.x and SD2: the file's one tensor.
    Single,
    /// SDXL's `text_encoder`: the file's `clip_l`.
    ClipL,
    /// SDXL's `text_encoder_2`: the file's `clip_g`.
    ClipG,
}

impl Encoder {
    /// The tensor's key in an SDXL file.
    fn key(self) -> Option<&'static str> {
        match self {
            Self::Single => None,
            Self::ClipL => Some("clip_l"),
            Self::ClipG => Some("clip_g"),
        }
    }

    /// The text encoder, as errors name it.
    fn name(self) -> &'static str {
        match self {
            Self::Single => "this text encoder",
            Self::ClipL => "text_encoder",
            Self::ClipG => "text_encoder_2",
        }
    }
}

/// One embedding to load: a `.safetensors` file and, optionally, the token to give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextualInversionSource {
    pub path: PathBuf,
    pub token: Option<String>,
}

/// An embedding read from its file.
#[derive(Debug, Clone)]
pub struct TextualInversion {
    pub token: String,
    /// `[vectors, width]`, f32.
    pub vectors: Tensor,
    pub path: PathBuf,
}

/// The tokens loaded into one tokenizer, for prompt conversion.
#[derive(Debug, Clone, Default)]
pub struct TextualInversions {
    /// (token, number of vectors) of each embedding loaded.
    loaded: Vec<(String, usize)>,
    /// The id of the first token added (its row in the text encoder's token table).
    first_id: Option<usize>,
}

impl TextualInversion {
    /// Reads `source.path` (refusing pickles and files that are not one embedding): the one tensor
    /// of an SD1.x/SD2 file for [`Encoder::Single`], else SDXL's `clip_l` or `clip_g`.
    pub fn read(source: &TextualInversionSource, encoder: Encoder) -> Result<Self> {
        let path = &source.path;
        refuse_pickle(path)?;
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
            Error::model(path, format!("is not a readable safetensors file ({e}); a textual inversion is one"))
        })?;
        let mut entries: Vec<(String, Tensor)> = tensors.into_iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let listed = || {
            let names: Vec<String> = entries.iter().map(|(k, t)| format!("{k} {:?}", t.dims())).collect();
            names.join(", ")
        };
        let sdxl = entries.iter().any(|(k, _)| SDXL_KEYS.contains(&k.as_str()));
        let (key, vectors) = match encoder.key() {
            None if sdxl => {
                return Err(Error::model(
                    path,
                    format!(
                        "is an SDXL textual inversion ({}); this model has one text encoder and takes an SD1.x/SD2 \
                         embedding: one tensor, {{token: vectors}} (diffusers) or {{\"emb_params\": vectors}} (AUTOMATIC1111)",
                        listed()
                    ),
                ))
            }
            None if entries.len() != 1 => {
                return Err(Error::model(
                    path,
                    format!(
                        "holds {} tensors ({}); a textual inversion file holds one: {{token: vectors}} (diffusers) \
                         or {{\"emb_params\": vectors}} (AUTOMATIC1111)",
                        entries.len(),
                        listed()
                    ),
                ));
            }
            None => entries.pop().expect("one entry"),
            Some(key) => {
                if !SDXL_KEYS.iter().all(|k| entries.iter().any(|(e, _)| e == k)) {
                    let what = match entries.len() {
                        1 => format!("holds one tensor ({}), an SD1.x/SD2 embedding", listed()),
                        n => format!("holds {n} tensors ({})", listed()),
                    };
                    return Err(Error::model(
                        path,
                        format!(
                            "{what}; SDXL needs an embedding of two tensors: clip_l [vectors, text_encoder's width] \
                             and clip_g [vectors, text_encoder_2's width] (AUTOMATIC1111's and ComfyUI's SDXL format)"
                        ),
                    ));
                }
                let i = entries.iter().position(|(e, _)| e == key).expect("checked");
                entries.swap_remove(i)
            }
        };
        let token = match &source.token {
            Some(token) => token.clone(),
            None if A1111_KEYS.contains(&key.as_str()) || SDXL_KEYS.contains(&key.as_str()) => {
                path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| key.clone())
            }
            None => key.clone(),
        };
        let vectors = match vectors.rank() {
            1 => vectors.unsqueeze(0)?,
            2 => vectors,
            _ => {
                return Err(Error::model(
                    path,
                    format!(
                        "its tensor {key} has shape {:?}; an embedding is [width] or [vectors, width]",
                        vectors.dims()
                    ),
                ))
            }
        };
        Ok(Self { token, vectors: vectors.to_dtype(DType::F32)?, path: path.clone() })
    }

    /// The tokens this embedding adds: `token`, then `token_1` ... for each further vector.
    fn tokens(&self) -> Result<Vec<String>> {
        let n = self.vectors.dim(0)?;
        Ok(std::iter::once(self.token.clone()).chain((1..n).map(|i| format!("{}_{i}", self.token))).collect())
    }
}

impl TextualInversions {
    /// Reads every source and adds its tokens and vectors (the tensor `encoder` takes) to
    /// `tokenizer` and `text_encoder`, in order. On error nothing is added. `option` names the list
    /// in errors (`textual_inversions`).
    pub fn load(
        sources: &[TextualInversionSource],
        tokenizer: &mut ClipTokenizer,
        text_encoder: &mut ClipTextTransformer,
        encoder: Encoder,
        option: &str,
    ) -> Result<Self> {
        let width = text_encoder.token_embedding_width();
        let mut all_tokens: Vec<String> = Vec::new();
        let mut all_vectors = Vec::new();
        let mut loaded = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            let inversion = TextualInversion::read(source, encoder)?;
            let (n, w) = inversion.vectors.dims2()?;
            if w != width {
                let which = encoder.key().map(|k| format!("{k} ")).unwrap_or_default();
                return Err(Error::model(
                    &inversion.path,
                    format!(
                        "its {which}embedding is {w} wide but {}'s token embeddings are {width} wide \
                         (an embedding made for another model family)",
                        encoder.name()
                    ),
                ));
            }
            let tokens = inversion.tokens()?;
            let taken = |t: &String| tokenizer.has_token(t) || all_tokens.contains(t);
            let first_taken = taken(&tokens[0]).then(|| tokens[0].clone());
            let multi_taken = taken(&format!("{}_1", inversion.token)).then(|| format!("{}_1", inversion.token));
            if let Some(token) = first_taken.or(multi_taken) {
                return Err(expected(
                    "a token that is not already in the tokenizer's vocabulary",
                    &format!("{option}[{i}].token"),
                    format!("{token:?} (from {})", inversion.path.display()),
                ));
            }
            all_tokens.extend(tokens);
            all_vectors.push(inversion.vectors);
            loaded.push((inversion.token, n));
        }
        if all_tokens.is_empty() {
            return Ok(Self::default());
        }
        let rows = Tensor::cat(&all_vectors, 0)?;
        let ids = tokenizer.add_tokens(&all_tokens)?;
        let first = ids[0] as usize;
        if ids.iter().enumerate().any(|(k, &id)| id as usize != first + k) {
            return Err(Error::Internal(format!("the tokenizer gave textual inversion tokens the ids {ids:?}")));
        }
        text_encoder.set_token_embeddings_from(first, &rows)?;
        Ok(Self { loaded, first_id: Some(first) })
    }

    /// The tokens loaded, each with its number of vectors.
    pub fn tokens(&self) -> &[(String, usize)] {
        &self.loaded
    }

    /// The added rows of `loaded`'s token table set again in `rebuilt` (a text encoder rebuilt from
    /// the file's tensors, as LoRA rebuilds it).
    pub fn carry_rows(&self, loaded: &ClipTextTransformer, rebuilt: &mut ClipTextTransformer) -> Result<()> {
        if let Some(first) = self.first_id {
            let rows = loaded.token_embedding_rows()?;
            let added = loaded.token_embedding_table().narrow(0, first, rows - first)?;
            rebuilt.set_token_embeddings_from(first, &added)?;
        }
        Ok(())
    }

    /// diffusers' `maybe_convert_prompt`: each multi-vector token found among the prompt's tokens
    /// is replaced in the text by `token token_1 ... token_{n-1}`.
    pub fn convert_prompt(&self, tokenizer: &ClipTokenizer, prompt: &str) -> Result<String> {
        if self.loaded.iter().all(|(_, n)| *n == 1) {
            return Ok(prompt.to_string());
        }
        let mut found = tokenizer.tokenize(prompt)?;
        found.sort_unstable();
        found.dedup();
        let mut prompt = prompt.to_string();
        for (token, n) in &self.loaded {
            if *n > 1 && found.binary_search(token).is_ok() {
                let replacement: Vec<String> =
                    std::iter::once(token.clone()).chain((1..*n).map(|i| format!("{token}_{i}"))).collect();
                prompt = prompt.replace(token.as_str(), &replacement.join(" "));
            }
        }
        Ok(prompt)
    }
}

/// Pickled PyTorch files (by name or by their first bytes: a zip archive or a pickle stream).
fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
    let mut head = [0u8; 2];
    let magic = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .map(|_| head == *b"PK" || head[0] == 0x80)
        .unwrap_or(false);
    if ["pt", "bin", "ckpt", "pth", "pkl"].contains(&ext.as_str()) || magic {
        return Err(Error::model(
            path,
            "is a PyTorch pickle file, which Candlewick does not load (unpickling can run arbitrary code); \
             convert it to safetensors: python -c \"import torch, safetensors.torch as st; \
             d = torch.load('x.pt', weights_only=True); \
             st.save_file({'emb_params': d['string_to_param']['*'] if 'string_to_param' in d else next(iter(d.values()))}, 'x.safetensors')\"",
        ));
    }
    if !path.is_file() {
        return Err(Error::model(path, "file not found (a textual inversion .safetensors file)"));
    }
    Ok(())
}
