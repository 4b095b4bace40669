//! Long and weighted prompts to CLIP embeddings, exactly as compel 2.5.1 computes them
//! (`compel.embeddings_provider.EmbeddingsProvider`) when built as
//! `Compel(tokenizer, text_encoder, truncate_long_prompts=False,
//! split_long_text_mode=SplitLongTextMode.BRUTAL, downweight_mode=DownweightMode.REMOVE)`,
//! from the fragments and weights that A1111's syntax gives ([`super::prompt_weighting`]):
//!
//! 1. Each fragment is tokenized on its own (no start/end token, no truncation) and the ids are
//!    concatenated, each id with its fragment's weight.
//! 2. The ids are cut into chunks of `model_max_length - 2` (75), each chunk framed by the start
//!    and end tokens and padded with the pad token to 77; the chunks go through the text encoder
//!    separately and their hidden states are concatenated along the sequence.
//! 3. A chunk whose weights are not all 1 becomes `empty + (z - empty) * w` per token (1-weighted
//!    tokens kept as they are), `empty` being the encoding of the empty prompt.
//! 4. For each fragment of weight < 1, the prompt is encoded again without that fragment (weights
//!    applied as in 3), and the result is the weighted mean of these encodings and the first,
//!    with weights 1 and `tan((1 - max(w, 1e-5)) * pi / 2)` for each encoding without a fragment:
//!    at weight 0.5 the fragment is half gone. (compel fails when removing a fragment leaves fewer
//!    chunks; here the shorter encoding is padded with `empty` chunks, as in 6.)
//! 5. The parts of a prompt split at `BREAK` are encoded as separate prompts and concatenated, as
//!    compel's `("part 1", "part 2").and()` conjunction does.
//! 6. All texts of a call (prompts and negative prompts) are padded to the longest with `empty`
//!    chunks (compel's `pad_conditioning_tensors_to_same_length`), or to more chunks when asked
//!    (SDXL's two encoders are padded to the longer one, each with its own `empty`, as compel's
//!    `CompelForSDXL` does).
//!
//! `encode` gives the hidden states compel's `returned_embeddings_type` names (the caller's layer:
//! SD1.x's last, SDXL's penultimate without the final layer norm, or `clip_skip`'s). A prompt
//! without weights that fits in 77 tokens gives the ids and embedding diffusers' `encode_prompt`
//! gives.

use candle_core::{DType, Device, Tensor};

use super::prompt_weighting::{parse_prompt_attention, Fragment};
use crate::error::Result;
use crate::tokenizer::ClipTokenizer;

/// compel's floor on a fragment weight before the tangent.
const MIN_DOWNWEIGHT: f64 = 1e-5;

/// Token ids in whole chunks of `model_max_length`, and one weight per id.
#[derive(Debug, Clone, PartialEq)]
struct Tokens {
    ids: Vec<u32>,
    weights: Vec<f32>,
}

/// One part of a prompt: its tokens, and for each fragment weighted below 1 the tokens without
/// it and the weight of that encoding in the mean.
#[derive(Debug, Clone)]
struct Part {
    base: Tokens,
    without: Vec<(Tokens, f64)>,
}

/// One text of a call, planned: what to encode and how to combine it.
#[derive(Debug, Clone)]
pub struct PlannedText {
    parts: Vec<Part>,
    /// Chunks of `model_max_length` tokens.
    chunks: usize,
    /// The parse changed nothing: one part, every weight 1, and the ids diffusers' truncating
    /// tokenizer gives the text as written (nothing cut, no syntax or escape read).
    plain: bool,
}

impl PlannedText {
    /// Parses `text` (named `option` in errors) and tokenizes its fragments.
    pub fn new(tokenizer: &ClipTokenizer, text: &str, option: &str) -> Result<Self> {
        let parts = parse_prompt_attention(text, option)?;
        let parts = parts
            .iter()
            .map(|fragments| {
                let base = tokens(tokenizer, fragments)?;
                let mut without = Vec::new();
                for (i, fragment) in fragments.iter().enumerate() {
                    if fragment.weight < 1.0 {
                        let mut rest = fragments.clone();
                        rest.remove(i);
                        let lerp = ((1.0 - fragment.weight.max(MIN_DOWNWEIGHT)) * std::f64::consts::FRAC_PI_2).tan();
                        without.push((tokens(tokenizer, &rest)?, lerp));
                    }
                }
                Ok(Part { base, without })
            })
            .collect::<Result<Vec<_>>>()?;
        let length = tokenizer.max_length();
        let chunks = parts.iter().map(|p| p.base.ids.len() / length).sum();
        let plain = match parts.as_slice() {
            [part] if part.without.is_empty() && part.base.weights.iter().all(|&w| w == 1.0) => {
                let encoded = tokenizer.encode(text)?;
                encoded.truncated.is_none() && encoded.ids == part.base.ids
            }
            _ => false,
        };
        Ok(Self { parts, chunks, plain })
    }

    /// The text as diffusers' plain encoding reads it: no weight but 1, one chunk, and the same
    /// token ids (so both encodings give the same embedding).
    pub fn is_plain(&self) -> bool {
        self.plain
    }

    /// The number of `model_max_length`-token chunks its encoding takes.
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// The token ids of its parts, chunked and concatenated (compel's tokenization).
    pub fn token_ids(&self) -> Vec<u32> {
        self.parts.iter().flat_map(|p| p.base.ids.iter().copied()).collect()
    }

    fn all_tokens(&self) -> impl Iterator<Item = &Tokens> {
        self.parts.iter().flat_map(|p| std::iter::once(&p.base).chain(p.without.iter().map(|(t, _)| t)))
    }
}

/// Embeddings `[texts, chunks x model_max_length, hidden]` for `texts`, through `encode`, which
/// takes `[rows, model_max_length]` token ids and returns the text encoder's hidden states; every
/// text padded to the longest, and to at least `min_chunks` chunks. All rows go through `encode`
/// in one call.
pub fn weighted_embeddings(
    tokenizer: &ClipTokenizer,
    texts: &[PlannedText],
    min_chunks: usize,
    device: &Device,
    encode: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let length = tokenizer.max_length();
    let chunks = PlannedText::chunks;
    let most = texts.iter().map(chunks).max().unwrap_or(1).max(min_chunks);
    let weighted = texts.iter().flat_map(PlannedText::all_tokens).any(|t| t.weights.iter().any(|&w| w != 1.0));
    let shorter = texts.iter().any(|t| chunks(t) != most);
    let downweighted = texts.iter().any(|t| t.parts.iter().any(|p| !p.without.is_empty()));
    let need_empty = weighted || shorter || downweighted;

    // Every chunk of every encoding, the empty prompt last when needed.
    let mut ids: Vec<u32> =
        texts.iter().flat_map(PlannedText::all_tokens).flat_map(|t| t.ids.iter().copied()).collect();
    let special = tokenizer.special_ids();
    if need_empty {
        ids.push(special.bos);
        ids.push(special.eos);
        ids.extend(std::iter::repeat_n(special.pad, length - 2));
    }
    let rows = ids.len() / length;
    let hidden = encode(&Tensor::from_vec(ids, (rows, length), device)?)?;
    let out_dtype = hidden.dtype();
    let hidden = hidden.to_dtype(DType::F32)?;
    let empty = if need_empty { Some(hidden.narrow(0, rows - 1, 1)?) } else { None };

    let mut next_row = 0;
    let mut take = |t: &Tokens| -> Result<Tensor> {
        let n = t.ids.len() / length;
        let z = hidden.narrow(0, next_row, n)?.reshape((1, n * length, ()))?;
        next_row += n;
        apply_weights(z, &t.weights, empty.as_ref(), n)
    };
    let mut embeds = Vec::with_capacity(texts.len());
    for text in texts {
        let mut parts = Vec::with_capacity(text.parts.len());
        for part in &text.parts {
            let base = take(&part.base)?;
            if part.without.is_empty() {
                parts.push(base);
                continue;
            }
            let n = part.base.ids.len() / length;
            let mut encodings = vec![base];
            let mut lerps = vec![1f32];
            for (tokens, lerp) in &part.without {
                let z = take(tokens)?;
                encodings.push(pad_with_empty(z, empty.as_ref(), n)?);
                lerps.push(*lerp as f32);
            }
            // compel's apply_embedding_weights(normalize=True): float32 weights over their sum.
            let total: f32 = lerps.iter().sum();
            let lerps: Vec<f32> = lerps.iter().map(|w| w / total).collect();
            let m = lerps.len();
            let lerps = Tensor::from_vec(lerps, (m, 1, 1), device)?;
            let stacked = Tensor::cat(&encodings, 0)?;
            parts.push(stacked.broadcast_mul(&lerps)?.sum_keepdim(0)?);
        }
        let text = Tensor::cat(&parts, 1)?;
        embeds.push(pad_with_empty(text, empty.as_ref(), most)?);
    }
    Ok(Tensor::cat(&embeds, 0)?.to_dtype(out_dtype)?)
}

/// compel's build_weighted_embedding_tensor for `chunks` chunks: `empty + (z - empty) * w` where a
/// weight is not 1, `z` where it is.
fn apply_weights(z: Tensor, weights: &[f32], empty: Option<&Tensor>, chunks: usize) -> Result<Tensor> {
    if weights.iter().all(|&w| w == 1.0) {
        return Ok(z);
    }
    let empty = empty.expect("the empty prompt is encoded whenever a weight is not 1");
    let empty = Tensor::cat(&vec![empty.clone(); chunks], 1)?;
    let n = weights.len();
    let w = Tensor::from_slice(weights, (1, n, 1), z.device())?;
    let weighted = empty.broadcast_add(&(z.broadcast_sub(&empty)?.broadcast_mul(&w)?))?;
    let keep: Vec<u8> = weights.iter().map(|&w| u8::from(w == 1.0)).collect();
    let keep = Tensor::from_vec(keep, (1, n, 1), z.device())?.broadcast_as(z.shape())?;
    Ok(keep.where_cond(&z, &weighted)?)
}

/// `z` with `empty` chunks appended up to `chunks` chunks.
fn pad_with_empty(z: Tensor, empty: Option<&Tensor>, chunks: usize) -> Result<Tensor> {
    let (_, seq, _) = z.dims3()?;
    let Some(empty) = empty else { return Ok(z) };
    let length = empty.dim(1)?;
    let have = seq / length;
    if have >= chunks {
        return Ok(z);
    }
    let mut all = vec![z];
    all.extend(std::iter::repeat_n(empty.clone(), chunks - have));
    Ok(Tensor::cat(&all, 1)?)
}

/// compel's get_token_ids_and_expand_weights + _chunk_and_pad_token_ids (BRUTAL splitting).
fn tokens(tokenizer: &ClipTokenizer, fragments: &[Fragment]) -> Result<Tokens> {
    let mut ids = Vec::new();
    let mut weights = Vec::new();
    for fragment in fragments {
        let fragment_ids = tokenizer.encode_fragment(&fragment.text)?;
        weights.extend(std::iter::repeat_n(fragment.weight as f32, fragment_ids.len()));
        ids.extend(fragment_ids);
    }
    Ok(chunk(&ids, &weights, tokenizer.max_length(), tokenizer.special_ids()))
}

fn chunk(ids: &[u32], weights: &[f32], length: usize, special: crate::tokenizer::SpecialIds) -> Tokens {
    let content = length - 2;
    let mut out = Tokens { ids: Vec::new(), weights: Vec::new() };
    let mut start = 0;
    loop {
        let end = (start + content).min(ids.len());
        out.ids.push(special.bos);
        out.ids.extend_from_slice(&ids[start..end]);
        out.ids.push(special.eos);
        out.weights.push(1.0);
        out.weights.extend_from_slice(&weights[start..end]);
        out.weights.push(1.0);
        let pad = content - (end - start);
        out.ids.extend(std::iter::repeat_n(special.pad, pad));
        out.weights.extend(std::iter::repeat_n(1.0, pad));
        start = end;
        if start >= ids.len() {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::SpecialIds;

    const SPECIAL: SpecialIds = SpecialIds { bos: 100, eos: 101, pad: 102 };

    #[test]
    fn chunks_frame_and_pad_like_compel() {
        let t = chunk(&[], &[], 6, SPECIAL);
        assert_eq!(t.ids, vec![100, 101, 102, 102, 102, 102]);
        let t = chunk(&[1, 2, 3, 4], &[1.0, 2.0, 2.0, 0.5], 6, SPECIAL);
        assert_eq!(t.ids, vec![100, 1, 2, 3, 4, 101]);
        let t = chunk(&[1, 2, 3, 4, 5], &[1.0, 2.0, 2.0, 0.5, 3.0], 6, SPECIAL);
        assert_eq!(t.ids, vec![100, 1, 2, 3, 4, 101, 100, 5, 101, 102, 102, 102]);
        assert_eq!(t.weights, vec![1.0, 1.0, 2.0, 2.0, 0.5, 1.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0]);
    }
}
