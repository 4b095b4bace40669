//! Prompt encoding, as diffusers' `encode_prompt`: CLIP token ids, the text encoder (through its
//! CUDA graph), the negative prompts for classifier-free guidance, and each prompt's embedding
//! repeated for its images.

use candle_core::Tensor;

use super::components::Components;
use crate::cuda::graph::GraphedModel;
use crate::error::Result;
use crate::models::clip::HiddenLayer;

/// The text encoder's CUDA graphs and the encoding that uses them.
pub struct PromptEncoder {
    graphs: GraphedModel,
}

impl PromptEncoder {
    pub fn new(cuda_graphs: bool) -> Self {
        Self { graphs: GraphedModel::text_encoder(cuda_graphs) }
    }

    /// Why graph capture failed, once, as a warning.
    pub fn take_graph_failure(&self) -> Option<String> {
        self.graphs.take_failure()
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
        clip_skip: Option<usize>,
        warnings: &mut Vec<String>,
    ) -> Result<Tensor> {
        let mut texts: Vec<&str> = Vec::with_capacity(2 * prompts.len());
        if do_guidance {
            match negative {
                None => texts.extend(prompts.iter().map(|_| "")),
                Some([one]) => texts.extend(prompts.iter().map(|_| one.as_str())),
                Some(n) => texts.extend(n.iter().map(String::as_str)),
            }
        }
        texts.extend(prompts.iter().map(String::as_str));
        let embeds = match clip_skip.filter(|&k| k > 0) {
            None => self.embed_texts(c, &texts, warnings)?,
            Some(k) => embed_texts_skipping(c, &texts, texts.len() - prompts.len(), k, warnings)?,
        };
        if copies == 1 {
            return Ok(embeds);
        }
        let rows: Vec<u32> = (0..texts.len() as u32).flat_map(|t| std::iter::repeat_n(t, copies)).collect();
        let rows = Tensor::new(rows.as_slice(), &c.target.device)?;
        Ok(embeds.index_select(&rows, 0)?)
    }

    fn embed_texts(&self, c: &Components, texts: &[&str], warnings: &mut Vec<String>) -> Result<Tensor> {
        let (tokenizer, encoder) = (c.tokenizer()?, c.text_encoder()?);
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
        let ids = Tensor::from_vec(ids, (texts.len(), max), &c.target.device)?;
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
    let ids = super::sdxl::token_ids(c.tokenizer()?, texts, &c.target.device, warnings)?;
    let encoder = c.text_encoder()?;
    let layer = HiddenLayer { from_end: clip_skip, final_layer_norm: true };
    let skipped = encoder.encode(&ids.narrow(0, negatives, texts.len() - negatives)?, layer, false)?.hidden;
    if negatives == 0 {
        return Ok(skipped);
    }
    let last = encoder.forward(&ids.narrow(0, 0, negatives)?)?;
    Ok(Tensor::cat(&[&last, &skipped], 0)?)
}
