//! What `StableDiffusionXLPipeline` adds to the text-to-image steps: the prompt through two
//! tokenizers and text encoders (`prompt` through the first, `prompt_2` or else `prompt` through
//! the second; the penultimate hidden states of both concatenated, the pooled and projected output
//! of the second), zero negative embeddings without a negative prompt
//! (`force_zeros_for_empty_prompt`), and the size conditions (`add_time_ids`) the UNet's
//! `text_time` embedding reads. Prompts are encoded plainly, as diffusers' `encode_prompt` does
//! (cut at 77 tokens with a warning; no weighting syntax).

use std::path::Path;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::components::{Components, SecondTextEncoder};
use super::options::MAX_SIDE;
use super::prompt::token_ids;
use crate::cuda::graph::GraphedModel;
use crate::error::{expected, Error, Result};
use crate::models::clip::HiddenLayer;
use crate::models::unet_2d_condition::AddedConditions;

/// The largest size condition (pixels): SDXL was trained on sizes up to 4096; a little room.
const MAX_CONDITION: usize = 16 * MAX_SIDE;

/// SDXL's micro-conditioning (diffusers' `StableDiffusionXLPipeline.__call__` arguments of the same
/// names), each `[height, width]` or `[top, left]` in pixels. Unset sizes are the output's size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SizeConditions {
    /// The size the image is presented as having been before any resize (default: the output size).
    pub original_size: Option<[usize; 2]>,
    /// Where the image is presented as cropped from (default [0, 0]: centred, uncropped).
    pub crops_coords_top_left: [usize; 2],
    /// The size the image is presented as having (default: the output size).
    pub target_size: Option<[usize; 2]>,
    /// The same for the unconditional pass; used when both negative sizes are given (else the
    /// unconditional pass reads the positive ones), as diffusers does.
    pub negative_original_size: Option<[usize; 2]>,
    pub negative_crops_coords_top_left: [usize; 2],
    pub negative_target_size: Option<[usize; 2]>,
    /// The refiner's (`requires_aesthetics_score`) score of the wanted image (diffusers' default 6).
    pub aesthetic_score: f64,
    /// The refiner's score for the unconditional pass (default 2.5).
    pub negative_aesthetic_score: f64,
}

impl Default for SizeConditions {
    fn default() -> Self {
        Self {
            original_size: None,
            crops_coords_top_left: [0, 0],
            target_size: None,
            negative_original_size: None,
            negative_crops_coords_top_left: [0, 0],
            negative_target_size: None,
            aesthetic_score: 6.0,
            negative_aesthetic_score: 2.5,
        }
    }
}

/// Which of diffusers' `_get_add_time_ids` a call follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeIds {
    /// `StableDiffusionXLPipeline`: the negatives only when both negative sizes are given.
    TextToImage,
    /// `StableDiffusionXLImg2ImgPipeline`: each negative size defaults to its positive; with
    /// `aesthetic`, the target size is replaced by the aesthetic score (5 conditions).
    ImageToImage { aesthetic: bool },
}

impl SizeConditions {
    /// Each value in range; messages name the option.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("original_size", self.original_size),
            ("target_size", self.target_size),
            ("negative_original_size", self.negative_original_size),
            ("negative_target_size", self.negative_target_size),
        ];
        for (name, size) in sizes {
            if let Some([h, w]) = size {
                if !(1..=MAX_CONDITION).contains(&h) || !(1..=MAX_CONDITION).contains(&w) {
                    let what = format!("[height, width] of integers between 1 and {MAX_CONDITION}");
                    return Err(expected(&what, name, format!("[{h}, {w}]")));
                }
            }
        }
        for (name, score) in
            [("aesthetic_score", self.aesthetic_score), ("negative_aesthetic_score", self.negative_aesthetic_score)]
        {
            if !score.is_finite() || score.abs() > 1e6 {
                return Err(expected("finite number between -1e6 and 1e6", name, score));
            }
        }
        for (name, [top, left]) in [
            ("crops_coords_top_left", self.crops_coords_top_left),
            ("negative_crops_coords_top_left", self.negative_crops_coords_top_left),
        ] {
            if top > MAX_CONDITION || left > MAX_CONDITION {
                let what = format!("[top, left] of integers between 0 and {MAX_CONDITION}");
                return Err(expected(&what, name, format!("[{top}, {left}]")));
            }
        }
        Ok(())
    }

    /// The first option set, for an error on a model without size conditions.
    pub fn first_set(&self) -> Option<&'static str> {
        let d = Self::default();
        [
            ("original_size", self.original_size != d.original_size),
            ("crops_coords_top_left", self.crops_coords_top_left != d.crops_coords_top_left),
            ("target_size", self.target_size != d.target_size),
            ("negative_original_size", self.negative_original_size != d.negative_original_size),
            ("negative_crops_coords_top_left", self.negative_crops_coords_top_left != d.negative_crops_coords_top_left),
            ("negative_target_size", self.negative_target_size != d.negative_target_size),
            ("aesthetic_score", self.aesthetic_score != d.aesthetic_score),
            ("negative_aesthetic_score", self.negative_aesthetic_score != d.negative_aesthetic_score),
        ]
        .into_iter()
        .find(|(_, set)| *set)
        .map(|(name, _)| name)
    }

    /// The conditions as a call with an output of `height` x `width` runs them (unset sizes filled
    /// in; the negatives only when both are given, as they are used).
    pub fn resolved(&self, height: usize, width: usize) -> SizeConditions {
        let output = Some([height, width]);
        let negatives = self.negative_original_size.is_some() && self.negative_target_size.is_some();
        SizeConditions {
            original_size: self.original_size.or(output),
            target_size: self.target_size.or(output),
            negative_original_size: self.negative_original_size.filter(|_| negatives),
            negative_target_size: self.negative_target_size.filter(|_| negatives),
            negative_crops_coords_top_left: if negatives { self.negative_crops_coords_top_left } else { [0, 0] },
            ..self.clone()
        }
    }

    /// diffusers' `_get_add_time_ids` for the conditional and the unconditional rows.
    fn time_ids(&self, height: usize, width: usize, mode: TimeIds) -> (Vec<f32>, Vec<f32>) {
        let f = |v: &[usize]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let output = [height, width];
        let (original, target) = (self.original_size.unwrap_or(output), self.target_size.unwrap_or(output));
        let crop = self.crops_coords_top_left;
        let positive = f(&[original[0], original[1], crop[0], crop[1], target[0], target[1]]);
        match mode {
            TimeIds::TextToImage => {
                let negative = match (self.negative_original_size, self.negative_target_size) {
                    (Some(o), Some(t)) => {
                        let c = self.negative_crops_coords_top_left;
                        f(&[o[0], o[1], c[0], c[1], t[0], t[1]])
                    }
                    _ => positive.clone(),
                };
                (positive, negative)
            }
            TimeIds::ImageToImage { aesthetic } => {
                let n_original = self.negative_original_size.unwrap_or(original);
                let n_target = self.negative_target_size.unwrap_or(target);
                if aesthetic {
                    let n_crop = self.negative_crops_coords_top_left;
                    let mut p = f(&[original[0], original[1], crop[0], crop[1]]);
                    p.push(self.aesthetic_score as f32);
                    let mut n = f(&[n_original[0], n_original[1], n_crop[0], n_crop[1]]);
                    n.push(self.negative_aesthetic_score as f32);
                    (p, n)
                } else {
                    (positive, f(&[n_original[0], n_original[1], crop[0], crop[1], n_target[0], n_target[1]]))
                }
            }
        }
    }
}

/// One prompt call's SDXL inputs, rows as the latents' (unconditional rows first when guiding).
pub(super) struct Encoded {
    pub prompt_embeds: Tensor,
    pub added: AddedConditions,
}

/// The texts of one call, as `encode_prompt` takes them (each list of texts after the first: one
/// for all prompts or one per prompt, counted in `check_inputs`).
pub(super) struct Prompts<'a> {
    pub prompts: &'a [String],
    pub negative: Option<&'a [String]>,
    /// The second text encoder's (`prompt_2`, `negative_prompt_2`).
    pub prompts_2: Option<&'a [String]>,
    pub negative_2: Option<&'a [String]>,
    /// Images per prompt.
    pub copies: usize,
    pub do_guidance: bool,
    pub clip_skip: Option<usize>,
    pub width: usize,
    pub height: usize,
    pub time_ids: TimeIds,
}

/// The largest `clip_skip` the text encoders allow (SDXL starts at the penultimate layer).
pub(super) fn max_clip_skip(c: &Components) -> usize {
    let first = c.text_encoder.as_ref().map(|e| e.model.num_layers());
    match (&c.text_encoder_2, first) {
        (Some(second), first) => {
            let n = second.text_encoder.model.text_model.num_layers();
            first.unwrap_or(n).min(n).saturating_sub(2)
        }
        (None, Some(n)) => n.saturating_sub(1),
        (None, None) => 0,
    }
}

/// `texts` for each of `n` prompts: one text stands for all.
fn per_prompt(texts: Option<&[String]>, n: usize) -> Option<Vec<&str>> {
    match texts? {
        [one] => Some(vec![one.as_str(); n]),
        all => Some(all.iter().map(String::as_str).collect()),
    }
}

/// diffusers' `StableDiffusionXLPipeline.encode_prompt` and step 7's added conditions.
pub(super) fn encode_prompt(
    c: &Components,
    second: &SecondTextEncoder,
    graphs: [&GraphedModel; 2],
    p: &Prompts,
    conditions: &SizeConditions,
    warnings: &mut Vec<String>,
) -> Result<Encoded> {
    let device = &c.target.device;
    let n = p.prompts.len();
    if c.text_encoder.is_none() {
        // The refiner zips [prompt, prompt_2] with [tokenizer_2]: prompt_2 is never read.
        for (name, set) in [("prompt_2", p.prompts_2.is_some()), ("negative_prompt_2", p.negative_2.is_some())] {
            if set {
                warnings.push(format!(
                    "{name} has no effect on this model: it has no first text encoder, and its text_encoder_2 reads {} (as diffusers' StableDiffusionXLImg2ImgPipeline does)",
                    name.trim_end_matches("_2")
                ));
            }
        }
    }
    let texts = per_prompt(Some(p.prompts), n).unwrap_or_default();
    // diffusers' `prompt_2 or prompt`.
    let texts_2 = per_prompt(p.prompts_2, n).unwrap_or_else(|| texts.clone());
    // hidden_states[-(clip_skip + 2)], without the final layer norm.
    let layer = HiddenLayer { from_end: 1 + p.clip_skip.unwrap_or(0), final_layer_norm: false };
    let (mut embeds, mut pooled) = encode_texts(c, second, graphs, &texts, &texts_2, layer, warnings)?;
    if p.do_guidance {
        let (negative_embeds, negative_pooled) = match p.negative {
            // diffusers looks at negative_prompt alone here: negative_prompt_2 is not read.
            None if second.force_zeros_for_empty_prompt => {
                if p.negative_2.is_some() && c.text_encoder.is_some() {
                    warnings.push(
                        "negative_prompt_2 has no effect without negative_prompt: this model's force_zeros_for_empty_prompt makes the unconditional embeddings zeros (as diffusers does); give negative_prompt too (\"\" for an empty one)"
                            .into(),
                    );
                }
                (embeds.zeros_like()?, pooled.zeros_like()?)
            }
            negative => {
                let uncond = per_prompt(negative, n).unwrap_or_else(|| vec![""; n]);
                let uncond_2 = per_prompt(p.negative_2, n).unwrap_or_else(|| uncond.clone());
                // diffusers takes the negative prompts' penultimate states whatever clip_skip is.
                encode_texts(c, second, graphs, &uncond, &uncond_2, PENULTIMATE, warnings)?
            }
        };
        embeds = Tensor::cat(&[&negative_embeds, &embeds], 0)?;
        pooled = Tensor::cat(&[&negative_pooled, &pooled], 0)?;
    }
    let rows = embeds.dim(0)?;
    let index: Vec<u32> = (0..rows as u32).flat_map(|t| std::iter::repeat_n(t, p.copies)).collect();
    let index = Tensor::new(index.as_slice(), device)?;
    let (positive, negative) = conditions.time_ids(p.height, p.width, p.time_ids);
    let (images, k) = (n * p.copies, positive.len());
    let mut time_ids: Vec<f32> = Vec::with_capacity(rows * p.copies * k);
    if p.do_guidance {
        (0..images).for_each(|_| time_ids.extend(&negative));
    }
    (0..images).for_each(|_| time_ids.extend(&positive));
    let time_ids = Tensor::from_vec(time_ids, (rows * p.copies, k), device)?;
    Ok(Encoded {
        prompt_embeds: embeds.index_select(&index, 0)?,
        added: AddedConditions { text_embeds: pooled.index_select(&index, 0)?, time_ids },
    })
}

/// `texts` through the first encoder and `texts_2` through the second: their hidden states at
/// `layer`, concatenated, [n, 77, h1 + h2], and the second's `text_embeds` [n, projection_dim].
/// Without a first encoder (the refiner) the second reads `texts`, as diffusers' zip of the two
/// prompts with the one tokenizer does.
/// Through CUDA graphs (one per shape, each encoder's) at the default layer, diffusers'
/// penultimate hidden states; eagerly at another (`clip_skip`: a graph replays the layer it was
/// captured with).
fn encode_texts(
    c: &Components,
    second: &SecondTextEncoder,
    [graphs, graphs_2]: [&GraphedModel; 2],
    texts: &[&str],
    texts_2: &[&str],
    layer: HiddenLayer,
    warnings: &mut Vec<String>,
) -> Result<(Tensor, Tensor)> {
    let device = &c.target.device;
    let graphed = layer == PENULTIMATE;
    let first = match (&c.tokenizer, &c.text_encoder) {
        (Some(tokenizer), Some(encoder)) => {
            let ids = token_ids(tokenizer, texts, device, warnings)?;
            let forward = |ids: &[&Tensor]| Ok(encoder.model.encode(ids[0], layer, false)?.hidden);
            Some(if graphed { graphs.run(&[&ids], forward)? } else { forward(&[&ids])? })
        }
        _ => None,
    };
    let texts_2 = if first.is_some() { texts_2 } else { texts };
    // The same texts cut at the same place: the second tokenizer's warnings would repeat the first's.
    let mut quiet = Vec::new();
    let second_warnings = if first.is_some() && texts_2 == texts { &mut quiet } else { warnings };
    let ids_2 = token_ids(&second.tokenizer, texts_2, device, second_warnings)?;
    // One graph output: the hidden states [n, 77, h] flattened, then the pooled projection [n, p].
    let forward_2 = |ids: &[&Tensor]| -> candle_core::Result<Tensor> {
        let (hidden, pooled) = second.text_encoder.model.encode(ids[0], layer)?;
        Tensor::cat(&[&hidden.flatten_from(1)?, &pooled.to_dtype(hidden.dtype())?], 1)
    };
    let packed = if graphed { graphs_2.run(&[&ids_2], forward_2)? } else { forward_2(&[&ids_2])? };
    let (n, tokens) = ids_2.dims2()?;
    let width = (packed.dim(1)? - second.text_encoder.model.projection_dim()) / tokens;
    let hidden_2 = packed.narrow(1, 0, tokens * width)?.reshape((n, tokens, width))?;
    let text_embeds = packed.narrow(1, tokens * width, packed.dim(1)? - tokens * width)?.contiguous()?;
    match first {
        Some(first) => Ok((Tensor::cat(&[&first, &hidden_2.to_dtype(first.dtype())?], 2)?, text_embeds)),
        None => Ok((hidden_2, text_embeds)),
    }
}

/// diffusers' `hidden_states[-2]` without the final layer norm: SDXL's layer without `clip_skip`.
const PENULTIMATE: HiddenLayer = HiddenLayer { from_end: 1, final_layer_norm: false };

/// diffusers' `get_timesteps` with `denoising_start` (`StableDiffusionXLImg2ImgPipeline`): the index
/// the run starts at, the timesteps below round(num_train_timesteps * (1 - denoising_start)) (one
/// more for a second-order scheduler when even).
pub(super) fn denoising_start_index(
    timesteps: &[f64],
    denoising_start: f64,
    num_train_timesteps: usize,
    order: usize,
) -> usize {
    let n = num_train_timesteps as f64;
    let cutoff = (n - denoising_start * n).round_ties_even();
    let mut steps = timesteps.iter().filter(|&&t| t < cutoff).count();
    if order == 2 && steps % 2 == 0 {
        steps += 1;
    }
    timesteps.len().saturating_sub(steps)
}

/// How many of `timesteps` run under `denoising_end` (diffusers' `StableDiffusionXLPipeline`: those
/// at or above round(num_train_timesteps * (1 - denoising_end))).
pub(super) fn denoising_end_index(timesteps: &[f64], denoising_end: f64, num_train_timesteps: usize) -> usize {
    let n = num_train_timesteps as f64;
    let cutoff = (n - denoising_end * n).round_ties_even();
    timesteps.iter().filter(|&&t| t >= cutoff).count()
}

/// The UNet and the folder agree: an SDXL UNet (`text_time`) needs both text encoders, and two
/// text encoders need an SDXL UNet.
pub(super) fn check_layout(c: &Components, model_index: &Path, class_name: &str) -> Result<()> {
    let message = match (c.unet.model.takes_text_time(), c.text_encoder_2.is_some()) {
        (true, false) => {
            "the UNet takes SDXL's added conditions (addition_embed_type \"text_time\") but there is no text_encoder_2"
        }
        (false, true) => "there is a text_encoder_2 but the UNet has no addition_embed_type \"text_time\"",
        _ => return Ok(()),
    };
    Err(Error::model(model_index, format!("_class_name is {class_name:?} and {message}")))
}

/// The VAE decodes in f32 when the model is f16 and the VAE's config says `force_upcast` (SDXL's
/// VAE overflows in f16), as `StableDiffusionXLPipeline` does.
pub(super) fn vae_needs_upcasting(c: &Components) -> bool {
    c.text_encoder_2.is_some() && c.dtype() == DType::F16 && c.vae.config.force_upcast
}

#[cfg(test)]
mod tests {
    //! `encode_prompt`'s embeddings against diffusers' (goldens from scripts/fixture_sdxl_prompt_2.py:
    //! `prompt_embeds` and `add_text_embeds` as the denoising loop's callback saw them, unconditional
    //! rows first). The whole runs are crates/candlewick-core/tests/families.rs.

    use std::path::PathBuf;

    use super::*;
    use crate::device::{DTypeRequest, DeviceRequest};
    use crate::pipeline::{LoadOptions, StableDiffusionPipeline};

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures")
    }

    fn max_relative(got: &Tensor, want: &Tensor) -> f32 {
        let diff = (got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        let scale = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn second_prompts_give_diffusers_embeddings() {
        let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() };
        let pipe = StableDiffusionPipeline::load(&fixtures().join("tiny-sdxl"), &options).unwrap();
        let c = &pipe.components;
        let second = c.text_encoder_2.as_ref().unwrap();
        for name in ["family_sdxl_prompt_2", "family_sdxl_prompt_2_zeros"] {
            let goldens = fixtures().join("goldens");
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(goldens.join(format!("{name}.json"))).unwrap()).unwrap();
            let want =
                candle_core::safetensors::load(goldens.join(format!("{name}.safetensors")), &c.target.device).unwrap();
            let text = |key: &str| json[key].as_str().map(|t| vec![t.to_string()]);
            let (prompt, negative, prompt_2, negative_2) =
                (text("prompt").unwrap(), text("negative_prompt"), text("prompt_2"), text("negative_prompt_2"));
            let p = Prompts {
                prompts: &prompt,
                negative: negative.as_deref(),
                prompts_2: prompt_2.as_deref(),
                negative_2: negative_2.as_deref(),
                copies: 1,
                do_guidance: true,
                clip_skip: json["clip_skip"].as_u64().map(|k| k as usize),
                width: 64,
                height: 64,
                time_ids: TimeIds::TextToImage,
            };
            let mut warnings = Vec::new();
            let graphs = super::super::prompt::PromptEncoder::new(false);
            let got =
                encode_prompt(c, second, graphs.sdxl_graphs(), &p, &SizeConditions::default(), &mut warnings).unwrap();
            let embeds = max_relative(&got.prompt_embeds, &want["prompt_embeds"]);
            let pooled = max_relative(&got.added.text_embeds, &want["add_text_embeds"]);
            assert!(embeds < 1e-5 && pooled < 1e-5, "{name}: prompt_embeds {embeds}, add_text_embeds {pooled}");
        }
    }
}
