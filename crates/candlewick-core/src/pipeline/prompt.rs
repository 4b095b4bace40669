//! Prompt encoding, as diffusers' `encode_prompt`: CLIP token ids, the text encoder (through its
//! CUDA graph), the negative prompts for classifier-free guidance, and each prompt's embedding
//! repeated for its images.

use candle_core::Tensor;

use super::components::Components;
use crate::cuda::graph::GraphedModel;
use crate::error::Result;

/// The text encoder's CUDA graphs and the encoding that uses them.
pub struct PromptEncoder {
    graphs: GraphedModel,
}

impl PromptEncoder {
    pub fn new(cuda_graphs: bool) -> Self {
        Self { graphs: GraphedModel::text_encoder(cuda_graphs) }
    }

    /// Drop the captured graphs: the text encoder's weights changed (LoRA), and a graph reads the
    /// memory of the weights it was captured with.
    pub fn reset_graphs(&self) {
        self.graphs.reset();
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
        let embeds = self.embed_texts(c, &texts, warnings)?;
        if copies == 1 {
            return Ok(embeds);
        }
        let rows: Vec<u32> = (0..texts.len() as u32).flat_map(|t| std::iter::repeat_n(t, copies)).collect();
        let rows = Tensor::new(rows.as_slice(), &c.target.device)?;
        Ok(embeds.index_select(&rows, 0)?)
    }

    fn embed_texts(&self, c: &Components, texts: &[&str], warnings: &mut Vec<String>) -> Result<Tensor> {
        let max = c.tokenizer.max_length();
        let mut ids = Vec::with_capacity(texts.len() * max);
        for text in texts {
            let encoded = c.tokenizer.encode(text)?;
            if let Some(cut) = encoded.truncated {
                warnings.push(format!(
                    "The following part of your input was truncated because CLIP can only handle sequences up to {max} tokens: {cut:?}"
                ));
            }
            ids.extend_from_slice(&encoded.ids);
        }
        let ids = Tensor::from_vec(ids, (texts.len(), max), &c.target.device)?;
        Ok(self.graphs.run(&[&ids], |ids| c.text_encoder.model.forward(ids[0]))?)
    }
}
