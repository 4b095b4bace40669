//! Prompt encoding, as diffusers' `encode_prompt`: CLIP token ids, the text encoder (through its
//! CUDA graph), the negative prompts for classifier-free guidance, and each prompt's embedding
//! repeated for its images. Prompts are read with A1111's weighting syntax and may be longer than
//! 77 tokens ([`super::weighted_embeddings`]), unless `truncate_long_prompts` asks for diffusers'
//! plain encoding (cut at 77 tokens, with a warning). `clip_skip` is diffusers' where the texts
//! are plain (no weights, one chunk each: negative prompts not skipped) and compel's otherwise
//! (every text skipped alike).

use candle_core::{Device, Tensor};

use super::components::Components;
use super::weighted_embeddings::{weighted_embeddings, PlannedText};
use crate::cuda::graph::GraphedModel;
use crate::error::Result;
use crate::models::clip::HiddenLayer;
use crate::tokenizer::ClipTokenizer;

/// The text encoders' CUDA graphs and the encoding that uses them (SDXL's in [`super::sdxl`]).
pub struct PromptEncoder {
    graphs: GraphedModel,
    /// SDXL's second text encoder's.
    graphs_2: GraphedModel,
}

impl PromptEncoder {
    pub fn new(cuda_graphs: bool) -> Self {
        Self { graphs: GraphedModel::text_encoder(cuda_graphs), graphs_2: GraphedModel::text_encoder_2(cuda_graphs) }
    }

    /// Drop the captured graphs: the text encoders' weights changed (LoRA), and a graph reads the
    /// memory of the weights it was captured with.
    pub fn reset_graphs(&self) {
        self.graphs.reset();
        self.graphs_2.reset();
    }

    /// Why graph capture failed, once, as a warning.
    pub fn take_graph_failure(&self) -> Option<String> {
        let failures: Vec<String> =
            [self.graphs.take_failure(), self.graphs_2.take_failure()].into_iter().flatten().collect();
        (!failures.is_empty()).then(|| failures.join("; "))
    }

    /// The first and the second text encoder's graphs, for SDXL's encoding.
    pub(super) fn sdxl_graphs(&self) -> [&GraphedModel; 2] {
        [&self.graphs, &self.graphs_2]
    }

    /// CLIP embeddings for every image of the batch, unconditional ones first when guiding.
    /// Each text goes through the encoder once (negative and positive prompts in one batch), and
    /// its embedding is repeated for its `copies` images.
    pub fn encode(
        &self,
        c: &Components,
        prompts: &[String],
        negative: Option<&[String]>,
        copies: usize,
        do_guidance: bool,
        truncate_long_prompts: bool,
        clip_skip: Option<usize>,
        warnings: &mut Vec<String>,
    ) -> Result<Tensor> {
        // Each text with the option it came from, for parse errors.
        let name =
            |option: &str, i: usize, of: usize| if of == 1 { option.to_string() } else { format!("{option}[{i}]") };
        let mut texts: Vec<(&str, String)> = Vec::with_capacity(2 * prompts.len());
        if do_guidance {
            match negative {
                None => texts.extend(prompts.iter().map(|_| ("", String::new()))),
                Some([one]) => texts.extend(prompts.iter().map(|_| (one.as_str(), "negative_prompt".to_string()))),
                Some(n) => {
                    texts.extend(n.iter().enumerate().map(|(i, t)| (t.as_str(), name("negative_prompt", i, n.len()))))
                }
            }
        }
        texts.extend(prompts.iter().enumerate().map(|(i, t)| (t.as_str(), name("prompt", i, prompts.len()))));
        let negatives = texts.len() - prompts.len();
        let tokenizer = c.tokenizer()?;
        // Multi-vector textual inversion tokens spelled out (diffusers' maybe_convert_prompt).
        let converted = texts
            .iter()
            .map(|(t, _)| c.textual_inversions.convert_prompt(tokenizer, t))
            .collect::<Result<Vec<String>>>()?;
        let texts: Vec<(&str, String)> =
            converted.iter().zip(texts).map(|(t, (_, option))| (t.as_str(), option)).collect();
        let plain: Vec<&str> = texts.iter().map(|(t, _)| *t).collect();
        let skip = clip_skip.filter(|&k| k > 0);
        let embeds = if truncate_long_prompts {
            match skip {
                None => self.embed_texts(c, &plain, warnings)?,
                Some(k) => embed_texts_skipping(c, &plain, negatives, k, warnings)?,
            }
        } else {
            let planned = texts
                .iter()
                .map(|(text, option)| PlannedText::new(tokenizer, text, option))
                .collect::<Result<Vec<_>>>()?;
            match skip {
                Some(k) if planned.iter().all(PlannedText::is_plain) => {
                    embed_texts_skipping(c, &plain, negatives, k, warnings)?
                }
                _ => {
                    let encoder = c.text_encoder()?;
                    weighted_embeddings(tokenizer, &planned, 1, &c.target.device, |ids| match skip {
                        None => Ok(self.graphs.run(&[ids], |ids| encoder.forward(ids[0]))?),
                        Some(k) => {
                            let layer = HiddenLayer { from_end: k, final_layer_norm: true };
                            Ok(encoder.encode(ids, layer, false)?.hidden)
                        }
                    })?
                }
            }
        };
        if copies == 1 {
            return Ok(embeds);
        }
        let rows: Vec<u32> = (0..texts.len() as u32).flat_map(|t| std::iter::repeat_n(t, copies)).collect();
        let rows = Tensor::new(rows.as_slice(), &c.target.device)?;
        Ok(embeds.index_select(&rows, 0)?)
    }

    fn embed_texts(&self, c: &Components, texts: &[&str], warnings: &mut Vec<String>) -> Result<Tensor> {
        let ids = token_ids(c.tokenizer()?, texts, &c.target.device, warnings)?;
        let encoder = c.text_encoder()?;
        Ok(self.graphs.run(&[&ids], |ids| encoder.forward(ids[0]))?)
    }
}

/// diffusers' `clip_skip`: the prompts' hidden states `clip_skip` layers before the last, final
/// layer norm applied; the first `negatives` texts (negative prompts) as `last_hidden_state`.
/// Eager: the two kinds of rows do not fit one CUDA graph per batch shape.
fn embed_texts_skipping(
    c: &Components,
    texts: &[&str],
    negatives: usize,
    clip_skip: usize,
    warnings: &mut Vec<String>,
) -> Result<Tensor> {
    let ids = token_ids(c.tokenizer()?, texts, &c.target.device, warnings)?;
    let encoder = c.text_encoder()?;
    let layer = HiddenLayer { from_end: clip_skip, final_layer_norm: true };
    let skipped = encoder.encode(&ids.narrow(0, negatives, texts.len() - negatives)?, layer, false)?.hidden;
    if negatives == 0 {
        return Ok(skipped);
    }
    let last = encoder.forward(&ids.narrow(0, 0, negatives)?)?;
    Ok(Tensor::cat(&[&last, &skipped], 0)?)
}

/// Token ids [n, max_length], with diffusers' truncation warning.
pub(super) fn token_ids(
    tokenizer: &ClipTokenizer,
    texts: &[&str],
    device: &Device,
    warnings: &mut Vec<String>,
) -> Result<Tensor> {
    let max = tokenizer.max_length();
    let mut ids = Vec::with_capacity(texts.len() * max);
    for text in texts {
        let encoded = tokenizer.encode(text)?;
        if let Some(cut) = encoded.truncated {
            warnings.push(format!(
                "The following part of your input was truncated because CLIP can only handle sequences up to {max} tokens: {cut:?}"
            ));
        }
        ids.extend_from_slice(&encoded.ids);
    }
    Ok(Tensor::from_vec(ids, (texts.len(), max), device)?)
}
