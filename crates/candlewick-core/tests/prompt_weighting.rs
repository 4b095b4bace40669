//! Long and weighted prompts against compel 2.5.1, on the tiny model.
//!
//! Goldens: test/fixtures/goldens/prompt_weighting.{json,safetensors} and
//! prompt_weighting_pipeline.{json,safetensors}, made by scripts/fixture_prompt_weighting.py:
//! `Compel(tokenizer, text_encoder, truncate_long_prompts=False, split_long_text_mode=BRUTAL,
//! downweight_mode=REMOVE).build_conditioning_tensor_for_conjunction(...)` on the fragments A1111's
//! parser makes of each prompt (written out in the json), the texts of a case padded with
//! `pad_conditioning_tensors_to_same_length`; then StableDiffusionPipeline given those embeddings.

mod common;

use candle_core::{DType, Device, Tensor};
use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::models::clip::ClipTextTransformer;
use candlewick_core::pipeline::prompt_weighting::parse_prompt_attention;
use candlewick_core::pipeline::weighted_embeddings::{weighted_embeddings, PlannedText};
use candlewick_core::pipeline::{GenerateOptions, LatentsInput, LoadOptions, Observer, StableDiffusionPipeline};
use candlewick_core::tokenizer::ClipTokenizer;
use common::{assert_close, fixtures, goldens, load};
use serde_json::Value;

fn json(name: &str) -> Value {
    let path = fixtures().join("goldens").join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_folder(&fixtures().join("tiny-sd/tokenizer")).unwrap()
}

/// A1111's parse of every golden prompt: the fragments written out in the fixture script, weights
/// to the bit (Python floats survive JSON).
#[test]
fn prompts_parse_into_a1111_fragments() {
    let cases = json("prompt_weighting");
    for case in cases["cases"].as_array().unwrap() {
        for text in case["texts"].as_array().unwrap() {
            let prompt = text["text"].as_str().unwrap();
            let parsed = parse_prompt_attention(prompt, "prompt").unwrap();
            let got: Vec<Vec<(String, f64)>> =
                parsed.iter().map(|p| p.iter().map(|f| (f.text.clone(), f.weight)).collect()).collect();
            let want: Vec<Vec<(String, f64)>> = text["parts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let frags = p.as_array().unwrap().iter();
                    let frags = frags.map(|f| (f[0].as_str().unwrap().to_string(), f[1].as_f64().unwrap()));
                    // The script writes A1111's empty runs out where a part has other text.
                    let frags: Vec<_> = frags.collect();
                    let nonempty: Vec<_> = frags.iter().filter(|(t, _)| !t.is_empty()).cloned().collect();
                    if nonempty.is_empty() {
                        frags
                    } else {
                        nonempty
                    }
                })
                .collect();
            // serde_json's float parsing may be 1 ulp off Python's repr: the weights within 1e-15.
            let same = got.len() == want.len()
                && got.iter().zip(&want).all(|(g, w)| {
                    g.len() == w.len()
                        && g.iter().zip(w).all(|(a, b)| a.0 == b.0 && (a.1 - b.1).abs() <= 1e-15 * b.1.abs())
                });
            assert!(same, "{prompt:?}: parsed {got:?}, A1111 gives {want:?}");
        }
    }
}

/// Every case's embeddings (prompts and negative prompts of one call, padded to the same number
/// of chunks) within 1e-4 of compel's, and the token ids exactly.
#[test]
fn embeddings_match_compel() {
    let tok = tokenizer();
    let (encoder, _) = load("text_encoder", "model", DType::F32, ClipTextTransformer::new);
    let g = goldens("prompt_weighting");
    let cases = json("prompt_weighting");
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let texts: Vec<&str> = case["texts"].as_array().unwrap().iter().map(|t| t["text"].as_str().unwrap()).collect();
        let planned: Vec<PlannedText> = texts.iter().map(|t| PlannedText::new(&tok, t, "prompt").unwrap()).collect();
        for (i, text) in texts.iter().enumerate() {
            let want: Vec<i64> = g[&format!("ids_{name}_{i}")].to_vec1().unwrap();
            let got: Vec<i64> = planned[i].token_ids().iter().map(|&id| id as i64).collect();
            assert_eq!(got, want, "{name}: token ids of {text:?}");
        }
        let got = weighted_embeddings(&tok, &planned, 1, &Device::Cpu, |ids| Ok(encoder.forward(ids)?)).unwrap();
        assert_close(&format!("embeds_{name}"), &got, &g[&format!("embeds_{name}")], 1e-4);
    }
}

/// A prompt over 77 tokens is no longer cut: its first chunk is what diffusers' truncating
/// tokenizer gives the encoder, and a second chunk follows.
#[test]
fn a_long_prompt_starts_with_the_truncated_encoding() {
    let tok = tokenizer();
    let (encoder, _) = load("text_encoder", "model", DType::F32, ClipTextTransformer::new);
    let long = format!("{}red", "cat ".repeat(80));
    let planned = [PlannedText::new(&tok, &long, "prompt").unwrap()];
    let embeds = weighted_embeddings(&tok, &planned, 1, &Device::Cpu, |ids| Ok(encoder.forward(ids)?)).unwrap();
    assert_eq!(embeds.dims(), &[1, 154, 32]);
    let cut = tok.encode(&long).unwrap();
    assert!(cut.truncated.is_some());
    let ids = Tensor::from_vec(cut.ids, (1, 77), &Device::Cpu).unwrap();
    let first = encoder.forward(&ids).unwrap();
    assert_close("first chunk", &embeds.narrow(1, 0, 77).unwrap(), &first, 0.0);
    let ids = planned[0].token_ids();
    assert_eq!(&ids[77..84], &[49406, 2368, 2368, 2368, 2368, 2368, 736], "second chunk: bos, 5 cats, red");
}

/// The whole pipeline with a long weighted prompt and a weighted negative prompt: each step's
/// latents and the image as diffusers' StableDiffusionPipeline makes them from compel's embeddings.
#[test]
fn pipeline_with_a_long_weighted_prompt_matches_diffusers_with_compel() {
    let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() };
    let pipe = StableDiffusionPipeline::load(&fixtures().join("tiny-sd"), &options).unwrap();
    let meta = json("prompt_weighting_pipeline");
    let g = goldens("prompt_weighting_pipeline");
    let initial = &g["initial_latents"];
    let shape: [usize; 4] = initial.dims4().unwrap().into();
    let steps = meta["steps"].as_u64().unwrap() as usize;
    let run = |truncate: bool| {
        let options = GenerateOptions {
            prompt: vec![meta["prompt"].as_str().unwrap().into()],
            negative_prompt: Some(vec![meta["negative_prompt"].as_str().unwrap().into()]),
            num_inference_steps: steps,
            guidance_scale: meta["guidance_scale"].as_f64().unwrap(),
            width: Some(meta["width"].as_u64().unwrap() as usize),
            height: Some(meta["height"].as_u64().unwrap() as usize),
            latents: Some(LatentsInput { shape, data: initial.flatten_all().unwrap().to_vec1().unwrap() }),
            output_latents: true,
            truncate_long_prompts: truncate,
            ..Default::default()
        };
        pipe.generate(&options, &Observer::new()).unwrap()
    };
    let out = run(false);
    let latents = out.latents.as_ref().unwrap();
    let got = Tensor::from_vec(latents.data.clone(), latents.shape.to_vec(), &Device::Cpu).unwrap();
    assert_close("final latents", &got, &g[&format!("latents_step_{}", steps - 1)], 1e-4);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);

    // The old behaviour: cut at 77 tokens with diffusers' warning, and other latents.
    let cut = run(true);
    assert!(cut.warnings.iter().any(|w| w.contains("truncated")), "{:?}", cut.warnings);
    let l = cut.latents.as_ref().unwrap();
    let cut_latents = Tensor::from_vec(l.data.clone(), l.shape.to_vec(), &Device::Cpu).unwrap();
    let diff: f32 = (cut_latents - &got).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert!(diff > 1e-3, "truncating changed nothing ({diff})");
}

/// Bad syntax is an error naming the option, and the pipeline stays usable.
#[test]
fn a_bad_weight_is_an_error_naming_the_prompt() {
    let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() };
    let pipe = StableDiffusionPipeline::load(&fixtures().join("tiny-sd"), &options).unwrap();
    let call = |prompt: &str| GenerateOptions {
        prompt: vec!["a cat".into(), prompt.into()],
        num_inference_steps: 1,
        width: Some(32),
        height: Some(32),
        seed: Some(1),
        output_latents: true,
        ..Default::default()
    };
    let e = pipe.generate(&call("a (dog:1..2)"), &Observer::new()).unwrap_err().to_string();
    assert_eq!(
        e,
        "Expected a number as the weight at character 8 of (text:weight) for prompt[1] but received \"1..2\" in \"a (dog:1..2)\""
    );
    assert!(pipe.generate(&call("a (dog:1.2)"), &Observer::new()).is_ok());
}
