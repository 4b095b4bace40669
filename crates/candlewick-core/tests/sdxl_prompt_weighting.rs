//! SDXL with a long, weighted prompt with `BREAK` and a weighted negative prompt, against diffusers'
//! StableDiffusionXLPipeline given compel 2.5.1's embeddings of them.
//!
//! Goldens: test/fixtures/goldens/sdxl_prompt_weighting.{json,safetensors}, made by
//! scripts/fixture_sdxl_prompt_weighting.py: `CompelForSDXL`'s two Compels (each
//! `Compel(tokenizer, text_encoder, truncate_long_prompts=False, split_long_text_mode=BRUTAL,
//! downweight_mode=REMOVE, returned_embeddings_type=PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED)`, the
//! second `requires_pooled=True`) on the fragments A1111's parser makes of each text, passed as
//! `prompt_embeds`, `pooled_prompt_embeds` and their negatives to the pipeline (Euler, 2 steps,
//! fixed initial latents); `plain_*` the same call with `prompt=` / `negative_prompt=` (diffusers'
//! own encoding, cut at 77 tokens), which `truncate_long_prompts` keeps; and the refiner's whole
//! pipeline (StableDiffusionXLImg2ImgPipeline given latents, from denoising_start 0.5, on the
//! refiner case's embeddings: `refiner_*`). The embeddings alone, for
//! more cases: the unit tests in crates/candlewick-core/src/pipeline/sdxl_encode_prompt.rs.

mod common;

use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::pipeline::{GenerateOptions, LatentsInput, LoadOptions, Observer, StableDiffusionPipeline};
use common::{assert_like_golden, fixtures, goldens, step_recorder};
use serde_json::Value;
use std::collections::HashMap;

use candle_core::Tensor;

/// The golden call `section` of scripts/fixture_sdxl_prompt_weighting.py's goldens on the `model`
/// fixture (CPU, f32): the pipeline, the section's settings, the goldens, and the call's options
/// (its case's prompt and negative prompt, steps, guidance, size, and the latents `latents`).
fn golden_call(
    model: &str,
    section: &str,
    latents: &str,
) -> (StableDiffusionPipeline, Value, HashMap<String, Tensor>, GenerateOptions) {
    let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() };
    let pipe = StableDiffusionPipeline::load(&fixtures().join(model), &options).unwrap();
    let path = fixtures().join("goldens/sdxl_prompt_weighting.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let meta = json[section].clone();
    let case = json["cases"].as_array().unwrap().iter().find(|c| c["name"] == meta["case"]).unwrap();
    let g = goldens("sdxl_prompt_weighting");
    let initial = &g[latents];
    let options = GenerateOptions {
        prompt: vec![case["texts"]["prompt"]["text"].as_str().unwrap().into()],
        negative_prompt: Some(vec![case["texts"]["negative_prompt"]["text"].as_str().unwrap().into()]),
        num_inference_steps: meta["steps"].as_u64().unwrap() as usize,
        guidance_scale: meta["guidance_scale"].as_f64().unwrap(),
        width: Some(meta["width"].as_u64().unwrap() as usize),
        height: Some(meta["height"].as_u64().unwrap() as usize),
        latents: Some(LatentsInput {
            shape: initial.dims4().unwrap().into(),
            data: initial.flatten_all().unwrap().to_vec1().unwrap(),
        }),
        ..Default::default()
    };
    (pipe, meta, g, options)
}

#[test]
fn sdxl_pipeline_with_a_long_weighted_prompt_matches_diffusers_with_compel() {
    let (pipe, _, g, base) = golden_call("tiny-sdxl", "pipeline", "initial_latents");
    let steps = base.num_inference_steps;
    let run = |truncate: bool, prefix: &str| {
        let options = GenerateOptions { truncate_long_prompts: truncate, ..base.clone() };
        let (observer, seen) = step_recorder();
        let out = pipe.generate(&options, &observer).unwrap();
        assert_like_golden("weighted", &seen.lock().unwrap(), &out.images[0].data, &g, prefix, steps, 1);
        (out.images[0].data.clone(), out.warnings)
    };
    let (weighted, warnings) = run(false, "");
    assert!(warnings.is_empty(), "{warnings:?}");
    // truncateLongPrompts: diffusers' plain encoding, cut with its warning, another image.
    let (plain, warnings) = run(true, "plain_");
    assert!(warnings.iter().any(|w| w.contains("truncated")), "{warnings:?}");
    assert_ne!(weighted, plain);
}

/// The refiner's whole pipeline (text_encoder_2 alone) on a long weighted prompt with `BREAK` and a
/// weighted negative prompt, continuing given latents from denoising_start 0.5, against diffusers'
/// StableDiffusionXLImg2ImgPipeline given compel's embeddings (the script's `refiner_pipeline`).
#[test]
fn sdxl_refiner_with_a_long_weighted_prompt_matches_diffusers_with_compel() {
    let (pipe, meta, g, base) = golden_call("tiny-sdxl-refiner", "refiner_pipeline", "refiner_initial_latents");
    let options = GenerateOptions { denoising_start: meta["denoising_start"].as_f64(), ..base };
    let (observer, seen) = step_recorder();
    let out = pipe.generate(&options, &observer).unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let calls = meta["unet_calls"].as_u64().unwrap() as usize;
    assert_like_golden("refiner", &seen.lock().unwrap(), &out.images[0].data, &g, "refiner_", calls, 1);
    // The weighting matters: diffusers' plain encoding (cut at 77 tokens) gives another image.
    let plain = pipe.generate(&GenerateOptions { truncate_long_prompts: true, ..options }, &Observer::new()).unwrap();
    assert_ne!(plain.images[0].data, out.images[0].data);
}
