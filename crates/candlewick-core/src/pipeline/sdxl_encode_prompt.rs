//! SDXL's `encode_prompt` (diffusers' `StableDiffusionXLPipeline.encode_prompt`): the prompt
//! through two tokenizers and text encoders (`prompt` through the first, `prompt_2` or else
//! `prompt` through the second; the hidden states of both concatenated, the pooled and projected
//! output of the second), zero negative embeddings without a negative prompt
//! (`force_zeros_for_empty_prompt`), and the added conditions' rows. Texts with weighting syntax
//! or past 77 tokens are encoded as compel 2.5.1's `CompelForSDXL` encodes them
//! ([`encode_weighted`]); plain texts, or any with `truncate_long_prompts`, as diffusers'
//! `encode_prompt` does (cut at 77 tokens with a warning).

use candle_core::Tensor;

use super::components::{Components, SecondTextEncoder};
use super::options::SizeConditions;
use super::prompt::token_ids;
use super::sdxl::TimeIds;
use super::weighted_embeddings::{weighted_embeddings, PlannedText};
use crate::cuda::graph::GraphedModel;
use crate::error::Result;
use crate::loaders::textual_inversion::TextualInversions;
use crate::models::clip::HiddenLayer;
use crate::models::unet_2d_condition::AddedConditions;
use crate::tokenizer::ClipTokenizer;

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
    /// diffusers' plain encoding whatever the texts (no syntax read, cut at 77 tokens).
    pub truncate_long_prompts: bool,
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

/// The texts alone.
fn strs<'a>(texts: &[(&'a str, String)]) -> Vec<&'a str> {
    texts.iter().map(|(t, _)| *t).collect()
}

/// The option each of `n` texts comes from, for parse errors (`option[i]` when there are several).
fn option_names(option: &str, texts: Option<&[String]>, n: usize) -> Vec<String> {
    match texts {
        Some(all) if all.len() > 1 => (0..n).map(|i| format!("{option}[{i}]")).collect(),
        _ => vec![option.to_string(); n],
    }
}

/// diffusers' `StableDiffusionXLPipeline.encode_prompt` and step 7's added conditions.
/// Unless `truncate_long_prompts`, every text of the call (both encoders') is parsed for A1111's
/// syntax; when one is not plain (weights, `BREAK`, escapes, past 77 tokens), all of them go
/// through compel's rule ([`encode_weighted`]); else through diffusers' (CUDA graphs).
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
    // diffusers looks at negative_prompt alone here: negative_prompt_2 is not read.
    let zeros = p.do_guidance && p.negative.is_none() && second.force_zeros_for_empty_prompt;
    if zeros && p.negative_2.is_some() && c.text_encoder.is_some() {
        warnings.push(
            "negative_prompt_2 has no effect without negative_prompt: this model's force_zeros_for_empty_prompt makes the unconditional embeddings zeros (as diffusers does); give negative_prompt too (\"\" for an empty one)"
                .into(),
        );
    }
    // Each encoder's texts with the option they come from, negative prompts first when encoded:
    // `prompt` through the first, diffusers' `prompt_2 or prompt` through the second (the
    // refiner's only encoder reads `prompt`).
    let first = c.text_encoder.is_some();
    let mut texts: Vec<(&str, String)> = Vec::with_capacity(2 * n);
    let mut texts_2: Vec<(&str, String)> = Vec::with_capacity(2 * n);
    let negatives = p.do_guidance && !zeros;
    if negatives {
        let uncond = per_prompt(p.negative, n).unwrap_or_else(|| vec![""; n]);
        let names = option_names("negative_prompt", p.negative, n);
        let (uncond_2, names_2) = match p.negative_2.filter(|_| first) {
            Some(n2) => (per_prompt(Some(n2), n).unwrap_or_default(), option_names("negative_prompt_2", Some(n2), n)),
            None => (uncond.clone(), names.clone()),
        };
        texts.extend(uncond.into_iter().zip(names));
        texts_2.extend(uncond_2.into_iter().zip(names_2));
    }
    let prompts = per_prompt(Some(p.prompts), n).unwrap_or_default();
    let names = option_names("prompt", Some(p.prompts), n);
    let (prompts_2, names_2) = match p.prompts_2.filter(|_| first) {
        Some(p2) => (per_prompt(Some(p2), n).unwrap_or_default(), option_names("prompt_2", Some(p2), n)),
        None => (prompts.clone(), names.clone()),
    };
    texts.extend(prompts.into_iter().zip(names));
    texts_2.extend(prompts_2.into_iter().zip(names_2));
    // Multi-vector textual inversion tokens spelled out for each tokenizer, by the tokens it holds
    // (diffusers' maybe_convert_prompt(prompt, tokenizer) in encode_prompt's loop over the two;
    // the refiner's texts go through tokenizer_2).
    let spelled = |texts: Vec<(&str, String)>, tokenizer: &ClipTokenizer, loaded: &TextualInversions| {
        texts
            .into_iter()
            .map(|(t, option)| Ok((loaded.convert_prompt(tokenizer, t)?, option)))
            .collect::<Result<Vec<(String, String)>>>()
    };
    let converted = match &c.tokenizer {
        Some(tokenizer) if first => spelled(texts, tokenizer, &c.textual_inversions)?,
        _ => spelled(texts, &second.tokenizer, &second.textual_inversions)?,
    };
    let converted_2 = spelled(texts_2, &second.tokenizer, &second.textual_inversions)?;
    let texts: Vec<(&str, String)> = converted.iter().map(|(t, option)| (t.as_str(), option.clone())).collect();
    let texts_2: Vec<(&str, String)> = converted_2.iter().map(|(t, option)| (t.as_str(), option.clone())).collect();

    // hidden_states[-(clip_skip + 2)], without the final layer norm.
    let layer = HiddenLayer { from_end: 1 + p.clip_skip.unwrap_or(0), final_layer_norm: false };
    let planned = if p.truncate_long_prompts { None } else { plan(c, second, &texts, &texts_2)? };
    let (embeds, pooled) = match planned {
        Some((planned, planned_2)) => {
            let (embeds, pooled) = encode_weighted(c, second, planned.as_deref(), &planned_2, &strs(&texts_2), layer)?;
            if zeros {
                let negative = (embeds.zeros_like()?, pooled.zeros_like()?);
                (Tensor::cat(&[&negative.0, &embeds], 0)?, Tensor::cat(&[&negative.1, &pooled], 0)?)
            } else {
                (embeds, pooled)
            }
        }
        None => {
            let (negative, positive) = texts.split_at(texts.len() - n);
            let (negative_2, positive_2) = texts_2.split_at(texts_2.len() - n);
            let (embeds, pooled) =
                encode_texts(c, second, graphs, &strs(positive), &strs(positive_2), layer, warnings)?;
            if !p.do_guidance {
                (embeds, pooled)
            } else {
                let (negative_embeds, negative_pooled) = if zeros {
                    (embeds.zeros_like()?, pooled.zeros_like()?)
                } else {
                    // diffusers takes the negative prompts' penultimate states whatever clip_skip is.
                    encode_texts(c, second, graphs, &strs(negative), &strs(negative_2), PENULTIMATE, warnings)?
                };
                (Tensor::cat(&[&negative_embeds, &embeds], 0)?, Tensor::cat(&[&negative_pooled, &pooled], 0)?)
            }
        }
    };
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

/// Every text parsed (errors name its option), each encoder's with its own tokenizer; `None` when
/// all of them are plain (diffusers' encoding gives what compel's would).
#[allow(clippy::type_complexity)]
fn plan(
    c: &Components,
    second: &SecondTextEncoder,
    texts: &[(&str, String)],
    texts_2: &[(&str, String)],
) -> Result<Option<(Option<Vec<PlannedText>>, Vec<PlannedText>)>> {
    let planned = match &c.tokenizer {
        Some(tokenizer) if c.text_encoder.is_some() => {
            Some(texts.iter().map(|(t, option)| PlannedText::new(tokenizer, t, option)).collect::<Result<Vec<_>>>()?)
        }
        _ => None,
    };
    let planned_2 =
        texts_2.iter().map(|(t, option)| PlannedText::new(&second.tokenizer, t, option)).collect::<Result<Vec<_>>>()?;
    let plain = planned.iter().flatten().chain(&planned_2).all(PlannedText::is_plain);
    Ok((!plain).then_some((planned, planned_2)))
}

/// compel 2.5.1's `CompelForSDXL` (each of its two Compels built as SD1.x's, see
/// [`super::weighted_embeddings`], with `PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED`): each
/// encoder's texts weighted and chunked at `layer`, every text of both encoders padded to the same
/// number of chunks with its encoder's empty prompt, the two concatenated along the channels; the
/// pooled output the second encoder's `text_embeds` of `raw_2` as written (multi-vector textual
/// inversion tokens spelled out, as compel's textual inversion manager does), cut at 77 tokens and
/// unweighted (compel's `get_pooled_embeddings`). Without a first encoder (the refiner) the
/// second's alone, as compel's single `Compel(tokenizer_2, text_encoder_2, requires_pooled=True)`.
/// Eager: chunk counts vary from call to call.
fn encode_weighted(
    c: &Components,
    second: &SecondTextEncoder,
    planned: Option<&[PlannedText]>,
    planned_2: &[PlannedText],
    raw_2: &[&str],
    layer: HiddenLayer,
) -> Result<(Tensor, Tensor)> {
    let device = &c.target.device;
    let chunks = planned.into_iter().flatten().chain(planned_2).map(PlannedText::chunks).max().unwrap_or(1);
    let model_2 = &second.text_encoder.model;
    let hidden_2 = weighted_embeddings(&second.tokenizer, planned_2, chunks, device, |ids| {
        Ok(model_2.text_model.encode(ids, layer, false)?.hidden)
    })?;
    let ids_2 = token_ids(&second.tokenizer, raw_2, device, &mut Vec::new())?;
    let (_, pooled) = model_2.encode(&ids_2, PENULTIMATE)?;
    let embeds = match (planned, &c.tokenizer, &c.text_encoder) {
        (Some(planned), Some(tokenizer), Some(encoder)) => {
            let hidden = weighted_embeddings(tokenizer, planned, chunks, device, |ids| {
                Ok(encoder.model.encode(ids, layer, false)?.hidden)
            })?;
            Tensor::cat(&[&hidden, &hidden_2.to_dtype(hidden.dtype())?], 2)?
        }
        _ => hidden_2,
    };
    Ok((embeds, pooled))
}

/// `texts` through the first encoder and `texts_2` through the second: their hidden states at
/// `layer`, concatenated, [n, 77, h1 + h2], and the second's `text_embeds` [n, projection_dim].
/// Without a first encoder (the refiner) the second reads `texts`, as diffusers' zip of the two
/// prompts with the one tokenizer does.
///
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
    // The pooled rows found on the host, outside the graph (a graph cannot read the ids back); one
    // graph output: the hidden states [n, 77, h] flattened, then the pooled projection [n, p].
    let model_2 = &second.text_encoder.model;
    let end_rows = model_2.text_model.end_rows(&ids_2)?;
    let forward_2 = |inputs: &[&Tensor]| -> candle_core::Result<Tensor> {
        let (hidden, pooled) = model_2.encode_pooling_at(inputs[0], inputs[1], layer)?;
        Tensor::cat(&[&hidden.flatten_from(1)?, &pooled.to_dtype(hidden.dtype())?], 1)
    };
    let inputs = [&ids_2, &end_rows];
    let packed = if graphed { graphs_2.run(&inputs, forward_2)? } else { forward_2(&inputs)? };
    let (n, tokens) = ids_2.dims2()?;
    let width = (packed.dim(1)? - model_2.projection_dim()) / tokens;
    let hidden_2 = packed.narrow(1, 0, tokens * width)?.reshape((n, tokens, width))?;
    let text_embeds = packed.narrow(1, tokens * width, packed.dim(1)? - tokens * width)?.contiguous()?;
    match first {
        Some(first) => Ok((Tensor::cat(&[&first, &hidden_2.to_dtype(first.dtype())?], 2)?, text_embeds)),
        None => Ok((hidden_2, text_embeds)),
    }
}

/// diffusers' `hidden_states[-2]` without the final layer norm: SDXL's layer without `clip_skip`.
const PENULTIMATE: HiddenLayer = HiddenLayer { from_end: 1, final_layer_norm: false };

#[cfg(test)]
mod tests {
    //! `encode_prompt`'s embeddings against diffusers' (goldens from scripts/fixture_sdxl_prompt_2.py:
    //! `prompt_embeds` and `add_text_embeds` as the denoising loop's callback saw them, unconditional
    //! rows first) and compel's (scripts/fixture_sdxl_prompt_weighting.py). The whole runs are
    //! crates/candlewick-core/tests/families.rs and sdxl_prompt_weighting.rs.

    use std::path::PathBuf;

    use super::*;
    use crate::device::{DTypeRequest, DeviceRequest};
    use crate::loaders::textual_inversion::TextualInversionSource;
    use crate::pipeline::{LoadOptions, StableDiffusionPipeline};

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures")
    }

    fn max_relative(got: &Tensor, want: &Tensor) -> f32 {
        let diff = (got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        let scale = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap()
    }

    fn load(model: &str) -> StableDiffusionPipeline {
        let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() };
        StableDiffusionPipeline::load(&fixtures().join(model), &options).unwrap()
    }

    /// One call's `encode_prompt` on `pipe` (guided, one image per prompt).
    fn encode(
        pipe: &StableDiffusionPipeline,
        texts: [Option<&str>; 4],
        clip_skip: Option<usize>,
        truncate: bool,
    ) -> Result<(Encoded, Vec<String>)> {
        let c = &pipe.components;
        let second = c.text_encoder_2.as_ref().unwrap();
        let [prompt, negative, prompt_2, negative_2] = texts.map(|t| t.map(|t| vec![t.to_string()]));
        let p = Prompts {
            prompts: prompt.as_deref().unwrap(),
            negative: negative.as_deref(),
            prompts_2: prompt_2.as_deref(),
            negative_2: negative_2.as_deref(),
            copies: 1,
            do_guidance: true,
            clip_skip,
            truncate_long_prompts: truncate,
            width: 64,
            height: 64,
            time_ids: TimeIds::ImageToImage { aesthetic: second.requires_aesthetics_score },
        };
        let mut warnings = Vec::new();
        let graphs = super::super::prompt::PromptEncoder::new(false);
        let encoded = encode_prompt(c, second, graphs.sdxl_graphs(), &p, &SizeConditions::default(), &mut warnings)?;
        Ok((encoded, warnings))
    }

    /// Weighted, long and `BREAK` prompts, second prompts of another length, zeros without a
    /// negative prompt, `clip_skip` and the refiner: `prompt_embeds` and the pooled `text_embeds`
    /// of both rows within 1e-4 relative of compel's (goldens from
    /// scripts/fixture_sdxl_prompt_weighting.py: compel 2.5.1's `CompelForSDXL` on A1111's
    /// fragments of each text).
    #[test]
    fn weighted_and_long_prompts_give_compels_embeddings() {
        let goldens = fixtures().join("goldens");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(goldens.join("sdxl_prompt_weighting.json")).unwrap())
                .unwrap();
        let want = candle_core::safetensors::load(
            goldens.join("sdxl_prompt_weighting.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let pipes = [("tiny-sdxl", load("tiny-sdxl")), ("tiny-sdxl-refiner", load("tiny-sdxl-refiner"))];
        for case in json["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let pipe = &pipes.iter().find(|(m, _)| *m == case["model"].as_str().unwrap()).unwrap().1;
            let text = |key: &str| case["texts"][key]["text"].as_str();
            let texts = [text("prompt"), text("negative_prompt"), text("prompt_2"), text("negative_prompt_2")];
            let clip_skip = case["clip_skip"].as_u64().map(|k| k as usize);
            let (got, warnings) = encode(pipe, texts, clip_skip, false).unwrap();
            assert!(warnings.is_empty(), "{name}: {warnings:?}");
            let (embeds, pooled) = (&got.prompt_embeds, &got.added.text_embeds);
            let rows = |t: &Tensor, i: usize| t.narrow(0, i, 1).unwrap();
            let pairs = [
                ("prompt_embeds", rows(embeds, 1), format!("prompt_embeds_{name}")),
                ("pooled", rows(pooled, 1), format!("pooled_{name}")),
                ("negative_prompt_embeds", rows(embeds, 0), format!("negative_prompt_embeds_{name}")),
                ("negative_pooled", rows(pooled, 0), format!("negative_pooled_{name}")),
            ];
            for (what, got, key) in pairs {
                match want.get(&key) {
                    Some(want) => {
                        assert_eq!(got.dims(), want.dims(), "{name}: {what}");
                        let r = max_relative(&got, want);
                        assert!(r < 1e-4, "{name}: {what} off by {r} relative");
                    }
                    // force_zeros_for_empty_prompt: no negative prompt, zeros of the prompt's shape.
                    None => {
                        let max: f32 = got.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
                        assert_eq!(max, 0.0, "{name}: {what} not zeros");
                    }
                }
            }
        }
    }

    /// `truncate_long_prompts` keeps diffusers' plain encoding: 77 tokens, the syntax not read, the
    /// cut warned about; without it the same texts are weighted and chunked.
    #[test]
    fn truncate_long_prompts_keeps_diffusers_encoding() {
        let pipe = load("tiny-sdxl");
        let long = format!("{}(red:1.3) fox", "cat ".repeat(80));
        let texts = [Some(long.as_str()), Some("blurry"), None, None];
        let (cut, warnings) = encode(&pipe, texts, None, true).unwrap();
        assert_eq!(cut.prompt_embeds.dims(), &[2, 77, 64]);
        assert!(warnings.iter().any(|w| w.contains("truncated")), "{warnings:?}");
        let (chunked, warnings) = encode(&pipe, texts, None, false).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let (rows, tokens, _) = chunked.prompt_embeds.dims3().unwrap();
        assert!(rows == 2 && tokens > 77 && tokens % 77 == 0, "{:?}", chunked.prompt_embeds.dims());
        // The first chunk's unweighted tokens and the pooled output (cut at 77 either way) agree.
        let first = |e: &Encoded| e.prompt_embeds.narrow(1, 0, 60).unwrap();
        assert!(max_relative(&first(&chunked), &first(&cut)) < 1e-5);
        assert!(max_relative(&chunked.added.text_embeds, &cut.added.text_embeds) < 1e-5);
    }

    /// A batch pads every text to the longest and keeps the rows' order (negative prompts first),
    /// each prompt's row repeated for its images: each row is its text's encoding alone, padded.
    #[test]
    fn a_batch_is_each_text_alone_padded() {
        let pipe = load("tiny-sdxl");
        let (c, second) = (&pipe.components, pipe.components.text_encoder_2.as_ref().unwrap());
        let long = format!("{}(red:1.3) fox", "cat ".repeat(40));
        let prompts = vec!["a (red:1.3) cat".to_string(), long.clone()];
        let negative = vec!["[blurry]".to_string()];
        let p = Prompts {
            prompts: &prompts,
            negative: Some(&negative),
            prompts_2: None,
            negative_2: None,
            copies: 2,
            do_guidance: true,
            clip_skip: None,
            truncate_long_prompts: false,
            width: 64,
            height: 64,
            time_ids: TimeIds::TextToImage,
        };
        let graphs = super::super::prompt::PromptEncoder::new(false);
        let batch =
            encode_prompt(c, second, graphs.sdxl_graphs(), &p, &SizeConditions::default(), &mut Vec::new()).unwrap();
        let tokens = batch.prompt_embeds.dim(1).unwrap();
        assert_eq!(batch.prompt_embeds.dims()[0], 8);
        let alone = |text: &str, negative: &str| {
            encode(&pipe, [Some(text), Some(negative), None, None], None, false).unwrap().0
        };
        for (rows, text) in [(4..6, prompts[0].as_str()), (6..8, long.as_str())] {
            let one = alone(text, &negative[0]);
            let n = one.prompt_embeds.dim(1).unwrap();
            for row in rows.clone().chain(rows.start - 4..rows.end - 4) {
                let got = batch.prompt_embeds.narrow(0, row, 1).unwrap().narrow(1, 0, n.min(tokens)).unwrap();
                let i = usize::from(row >= 4);
                assert!(max_relative(&got, &one.prompt_embeds.narrow(0, i, 1).unwrap()) < 1e-5, "row {row}");
                let pooled = batch.added.text_embeds.narrow(0, row, 1).unwrap();
                assert!(max_relative(&pooled, &one.added.text_embeds.narrow(0, i, 1).unwrap()) < 1e-5, "row {row}");
            }
        }
    }

    /// Bad syntax gets SD1.x's message, naming the option the text came from.
    #[test]
    fn bad_syntax_names_the_option_as_sd1_does() {
        let pipe = load("tiny-sdxl");
        let tokenizer = pipe.components.tokenizer.as_ref().unwrap();
        let sd1 = |text: &str, option: &str| PlannedText::new(tokenizer, text, option).unwrap_err().to_string();
        let bad = "a (cat:1.2.3)";
        for (texts, option) in [
            ([Some(bad), Some("x"), None, None], "prompt"),
            ([Some("a"), Some(bad), None, None], "negative_prompt"),
            ([Some("a"), None, Some(bad), None], "prompt_2"),
            ([Some("a"), Some("x"), None, Some("(x BREAK y)")], "negative_prompt_2"),
        ] {
            let text = texts.iter().flatten().find(|t| t.contains('(')).unwrap();
            let got = encode(&pipe, texts, None, false).err().expect("an error").to_string();
            assert_eq!(got, sd1(text, option));
        }
        // truncate_long_prompts reads no syntax: no error.
        assert!(encode(&pipe, [Some(bad), None, None, None], None, true).is_ok());
    }

    /// The SDXL embeddings of test/fixtures/textual-inversion as the fixture script loads them
    /// (`<sdxl-toy>` given its token, `sdxl-style` named after its file).
    fn sdxl_textual_inversions(json: &serde_json::Value) -> Vec<TextualInversionSource> {
        let dir = fixtures().join("textual-inversion");
        let sources = json["embeddings"].as_array().unwrap().iter().map(|e| {
            let (file, token) = (e["file"].as_str().unwrap(), e["token"].as_str().unwrap());
            let named = file.strip_suffix(".safetensors") == Some(token);
            TextualInversionSource { path: dir.join(file), token: (!named).then(|| token.to_string()) }
        });
        sources.collect()
    }

    /// SDXL textual inversion: the `clip_l` vectors in the first tokenizer and encoder, the `clip_g`
    /// ones in the second (the refiner's only), multi-vector tokens spelled out by each tokenizer.
    /// The tokens' ids and `prompt_embeds`, pooled and negative embeddings within 1e-4 relative of
    /// diffusers' `encode_prompt` after its two `load_textual_inversion` calls per file, and of
    /// compel's `CompelForSDXL` for a weighted prompt (goldens from
    /// scripts/fixture_sdxl_textual_inversion.py).
    #[test]
    fn sdxl_textual_inversions_give_diffusers_embeddings() {
        let goldens = fixtures().join("goldens");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(goldens.join("sdxl_textual_inversion.json")).unwrap())
                .unwrap();
        let want = candle_core::safetensors::load(
            goldens.join("sdxl_textual_inversion.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let load = |model: &str| {
            let options = LoadOptions {
                device: DeviceRequest::Cpu,
                dtype: DTypeRequest::F32,
                textual_inversions: sdxl_textual_inversions(&json),
                ..Default::default()
            };
            StableDiffusionPipeline::load(&fixtures().join(model), &options).unwrap()
        };
        let pipes = [("tiny-sdxl", load("tiny-sdxl")), ("tiny-sdxl-refiner", load("tiny-sdxl-refiner"))];
        let base = &pipes[0].1.components;
        let second = base.text_encoder_2.as_ref().unwrap();
        for (key, tokenizer) in [("tokenizer", base.tokenizer().unwrap()), ("tokenizer_2", &second.tokenizer)] {
            for (token, id) in json["tokens"][key].as_object().unwrap() {
                assert_eq!(tokenizer.encode_fragment(token).unwrap(), vec![id.as_u64().unwrap() as u32], "{key}");
            }
        }
        let counts = [("<sdxl-toy>".to_string(), 1), ("sdxl-style".to_string(), 3)];
        assert_eq!(base.textual_inversions.tokens(), &counts);
        assert_eq!(second.textual_inversions.tokens(), &counts);
        for case in json["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let pipe = &pipes.iter().find(|(m, _)| *m == case["model"].as_str().unwrap()).unwrap().1;
            let texts = [case["prompt"].as_str(), case["negative_prompt"].as_str(), None, None];
            let (got, warnings) = encode(pipe, texts, None, false).unwrap();
            assert!(warnings.is_empty(), "{name}: {warnings:?}");
            let (embeds, pooled) = (&got.prompt_embeds, &got.added.text_embeds);
            let rows = |t: &Tensor, i: usize| t.narrow(0, i, 1).unwrap();
            let pairs = [
                ("prompt_embeds", rows(embeds, 1)),
                ("pooled", rows(pooled, 1)),
                ("negative_prompt_embeds", rows(embeds, 0)),
                ("negative_pooled", rows(pooled, 0)),
            ];
            for (what, got) in pairs {
                let want = &want[&format!("{what}_{name}")];
                assert_eq!(got.dims(), want.dims(), "{name}: {what}");
                let scale: f32 = want.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
                if scale == 0.0 {
                    // force_zeros_for_empty_prompt: no negative prompt, zeros.
                    let max: f32 = got.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
                    assert_eq!(max, 0.0, "{name}: {what} not zeros");
                } else {
                    let r = max_relative(&got, want);
                    assert!(r < 1e-4, "{name}: {what} off by {r} relative");
                }
            }
        }
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
                truncate_long_prompts: false,
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
