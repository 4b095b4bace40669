//! SDXL textual inversion (`clip_l` and `clip_g` in one file) against diffusers, on the tiny SDXL.
//!
//! Fixtures and goldens: test/fixtures/textual-inversion/sdxl-{toy,style,wide}.safetensors and
//! test/fixtures/goldens/sdxl_textual_inversion.{json,safetensors}, made by
//! scripts/fixture_sdxl_textual_inversion.py: each file loaded as diffusers documents for SDXL,
//! `pipe.load_textual_inversion(sd["clip_g"], token, text_encoder=pipe.text_encoder_2,
//! tokenizer=pipe.tokenizer_2)` and the same with `clip_l` and the first pair, then a 2-step
//! `StableDiffusionXLPipeline` run from fixed latents of a prompt naming both tokens. The embeddings
//! alone (both tokenizers' ids, plain, weighted and refiner prompts): the unit test in
//! crates/candlewick-core/src/pipeline/sdxl_encode_prompt.rs.

mod common;

use std::path::PathBuf;

use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::loaders::lora::LoraSpec;
use candlewick_core::loaders::textual_inversion::TextualInversionSource;
use candlewick_core::pipeline::{GenerateOptions, LatentsInput, LoadOptions, Observer, StableDiffusionPipeline};
use common::{assert_like_golden, fixtures, goldens, step_recorder};
use serde_json::Value;

fn embedding(name: &str) -> PathBuf {
    fixtures().join("textual-inversion").join(name)
}

/// As the script loads them: `<sdxl-toy>` given its token, `sdxl-style` named after its file.
fn both() -> Vec<TextualInversionSource> {
    vec![
        TextualInversionSource { path: embedding("sdxl-toy.safetensors"), token: Some("<sdxl-toy>".into()) },
        TextualInversionSource { path: embedding("sdxl-style.safetensors"), token: None },
    ]
}

fn load_pipe(
    model: &str,
    textual_inversions: Vec<TextualInversionSource>,
) -> candlewick_core::Result<StableDiffusionPipeline> {
    let options =
        LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, textual_inversions, ..Default::default() };
    StableDiffusionPipeline::load(&fixtures().join(model), &options)
}

/// The golden run's options (the prompt and negative prompt both name the embeddings' tokens).
fn golden_options() -> (GenerateOptions, usize) {
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("goldens/sdxl_textual_inversion.json")).unwrap())
            .unwrap();
    let meta = &json["pipeline"];
    let case = json["cases"].as_array().unwrap().iter().find(|c| c["name"] == meta["case"]).unwrap();
    let initial = &goldens("sdxl_textual_inversion")["initial_latents"];
    let steps = meta["steps"].as_u64().unwrap() as usize;
    let options = GenerateOptions {
        prompt: vec![case["prompt"].as_str().unwrap().into()],
        negative_prompt: Some(vec![case["negative_prompt"].as_str().unwrap().into()]),
        num_inference_steps: steps,
        guidance_scale: meta["guidance_scale"].as_f64().unwrap(),
        width: Some(meta["width"].as_u64().unwrap() as usize),
        height: Some(meta["height"].as_u64().unwrap() as usize),
        latents: Some(LatentsInput {
            shape: initial.dims4().unwrap().into(),
            data: initial.flatten_all().unwrap().to_vec1().unwrap(),
        }),
        ..Default::default()
    };
    (options, steps)
}

/// The pipeline with both embeddings: each step's latents within 1e-4 relative and the image
/// within 1/255 of diffusers'.
#[test]
fn sdxl_pipeline_with_embeddings_matches_diffusers() {
    let pipe = load_pipe("tiny-sdxl", both()).unwrap();
    let (options, steps) = golden_options();
    let g = goldens("sdxl_textual_inversion");
    let (observer, seen) = step_recorder();
    let out = pipe.generate(&options, &observer).unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_like_golden("embeddings", &seen.lock().unwrap(), &out.images[0].data, &g, "", steps, 1);
}

#[test]
fn bad_embeddings_are_clear_errors() {
    let message = |model: &str, sources: Vec<TextualInversionSource>| {
        load_pipe(model, sources).err().expect("refused").to_string()
    };
    let sd1 = embedding("learned_embeds.safetensors");

    // An SD1.x embedding given to SDXL (base and refiner).
    for model in ["tiny-sdxl", "tiny-sdxl-refiner"] {
        let e = message(model, vec![TextualInversionSource { path: sd1.clone(), token: None }]);
        assert!(e.contains(&sd1.display().to_string()), "{e}");
        assert!(e.contains("holds one tensor (<cat-toy> [1, 32]), an SD1.x/SD2 embedding"), "{e}");
        assert!(e.contains("SDXL needs an embedding of two tensors: clip_l") && e.contains("clip_g"), "{e}");
    }
    // An SDXL embedding given to SD1.x.
    let e = message("tiny-sd", vec![both()[0].clone()]);
    assert!(e.contains("sdxl-toy.safetensors") && e.contains("is an SDXL textual inversion"), "{e}");
    assert!(e.contains("clip_g [1, 32], clip_l [1, 32]") && e.contains("SD1.x/SD2 embedding"), "{e}");
    // clip_g of the wrong width.
    let wide = vec![TextualInversionSource { path: embedding("sdxl-wide.safetensors"), token: None }];
    let e = message("tiny-sdxl", wide);
    assert!(
        e.contains("sdxl-wide.safetensors")
            && e.contains("its clip_g embedding is 48 wide but text_encoder_2's token embeddings are 32 wide"),
        "{e}"
    );
    // A token already there, in either tokenizer; the same embedding twice.
    let taken = vec![TextualInversionSource { path: embedding("sdxl-toy.safetensors"), token: Some("a".into()) }];
    assert!(message("tiny-sdxl", taken).contains("textual_inversions[0].token but received \"a\""));
    assert!(message("tiny-sdxl-refiner", vec![both()[1].clone(), both()[1].clone()])
        .contains("textual_inversions[1].token"));
    // The refiner (text_encoder_2 alone) takes clip_g.
    assert!(load_pipe("tiny-sdxl-refiner", both()).is_ok());
}

/// LoRAs rebuild both text encoders from the tensors recorded at load; the rows the embeddings
/// added to each survive: with the LoRA the image changes, without it again it is the one before
/// (SDXL's kohya LoRA of scripts/fixture_sdxl_lora.py, which changes both text encoders).
#[test]
fn embeddings_survive_loras_being_set_and_removed() {
    let mut pipe = load_pipe("tiny-sdxl", both()).unwrap();
    let (mut options, _) = golden_options();
    options.output_latents = true;
    let run = |pipe: &StableDiffusionPipeline| pipe.generate(&options, &Observer::new()).unwrap().latents.unwrap().data;
    let before = run(&pipe);
    let lora = fixtures().join("single-file/lora_sdxl_kohya.safetensors");
    pipe.set_loras(&[LoraSpec { path: lora, weight: 0.8 }]).unwrap();
    assert_ne!(run(&pipe), before, "the LoRA changed nothing");
    pipe.set_loras(&[]).unwrap();
    assert_eq!(run(&pipe), before);
}
