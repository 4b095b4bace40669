//! Textual inversion against diffusers' `load_textual_inversion`, on the tiny model.
//!
//! Fixtures and goldens: test/fixtures/textual-inversion/*.safetensors and
//! test/fixtures/goldens/textual_inversion.{json,safetensors}, made by
//! scripts/fixture_textual_inversion.py (`pipe.load_textual_inversion(learned_embeds.safetensors)`,
//! `pipe.load_textual_inversion(style-a1111.safetensors, token="style-a1111")`, then
//! `pipe.encode_prompt(prompt, "cpu", 1, False)[0]` and the ids of `maybe_convert_prompt(prompt)`).

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device};
use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::loaders::textual_inversion::{Encoder, TextualInversionSource, TextualInversions};
use candlewick_core::models::clip::ClipTextTransformer;
use candlewick_core::pipeline::weighted_embeddings::{weighted_embeddings, PlannedText};
use candlewick_core::pipeline::{GenerateOptions, LoadOptions, Observer, StableDiffusionPipeline};
use candlewick_core::tokenizer::ClipTokenizer;
use common::{assert_close, fixtures, goldens, load};

fn embedding(name: &str) -> PathBuf {
    fixtures().join("textual-inversion").join(name)
}

fn both() -> Vec<TextualInversionSource> {
    vec![
        TextualInversionSource { path: embedding("learned_embeds.safetensors"), token: None },
        // A1111's file: its token is the file's name.
        TextualInversionSource { path: embedding("style-a1111.safetensors"), token: None },
    ]
}

#[test]
fn both_formats_match_diffusers_load_textual_inversion() {
    let mut tok = ClipTokenizer::from_folder(&fixtures().join("tiny-sd/tokenizer")).unwrap();
    let (mut encoder, _) = load("text_encoder", "model", DType::F32, ClipTextTransformer::new);
    let inversions =
        TextualInversions::load(&both(), &mut tok, &mut encoder, Encoder::Single, "textual_inversions").unwrap();
    assert_eq!(inversions.tokens(), &[("<cat-toy>".to_string(), 1), ("style-a1111".to_string(), 3)]);

    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("goldens/textual_inversion.json")).unwrap())
            .unwrap();
    for (token, id) in meta["tokens"].as_object().unwrap() {
        let ids = tok.encode_fragment(token).unwrap();
        assert_eq!(ids, vec![id.as_u64().unwrap() as u32], "id of {token}");
    }
    let g = goldens("textual_inversion");
    for (i, prompt) in meta["prompts"].as_array().unwrap().iter().enumerate() {
        let prompt = inversions.convert_prompt(&tok, prompt.as_str().unwrap()).unwrap();
        let want: Vec<i64> = g[&format!("ids_{i}")].to_vec1().unwrap();
        let got: Vec<i64> = tok.encode(&prompt).unwrap().ids.iter().map(|&id| id as i64).collect();
        assert_eq!(got, want, "ids of {prompt:?}");
        let planned = [PlannedText::new(&tok, &prompt, "prompt").unwrap()];
        let embeds = weighted_embeddings(&tok, &planned, 1, &Device::Cpu, |ids| Ok(encoder.forward(ids)?)).unwrap();
        assert_close(&format!("prompt_embeds_{i}"), &embeds, &g[&format!("prompt_embeds_{i}")], 1e-4);
    }
}

fn load_pipe(textual_inversions: Vec<TextualInversionSource>) -> candlewick_core::Result<StableDiffusionPipeline> {
    let options =
        LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, textual_inversions, ..Default::default() };
    StableDiffusionPipeline::load(&fixtures().join("tiny-sd"), &options)
}

/// Loaded with the pipeline, the tokens change the image: a prompt naming them differs from one
/// naming plain words.
#[test]
fn the_pipeline_loads_them_and_prompts_use_them() {
    let pipe = load_pipe(both()).unwrap();
    let run = |prompt: &str| {
        let options = GenerateOptions {
            prompt: vec![prompt.into()],
            num_inference_steps: 2,
            width: Some(32),
            height: Some(32),
            seed: Some(3),
            output_latents: true,
            ..Default::default()
        };
        pipe.generate(&options, &Observer::new()).unwrap().latents.unwrap().data
    };
    let with = run("a (style-a1111:1.1) painting of a <cat-toy>");
    let without = run("a (style:1.1) painting of a cat");
    assert_ne!(with, without);
}

#[test]
fn bad_embeddings_are_clear_errors() {
    let message = |sources: Vec<TextualInversionSource>| load_pipe(sources).err().expect("refused").to_string();

    let e = message(vec![TextualInversionSource { path: embedding("wide.safetensors"), token: None }]);
    assert!(e.contains("wide.safetensors") && e.contains("48 wide") && e.contains("32 wide"), "{e}");

    let e = message(vec![TextualInversionSource {
        path: embedding("learned_embeds.safetensors"),
        token: Some("cat".into()),
    }]);
    assert_eq!(
        e,
        format!(
            "Expected a token that is not already in the tokenizer's vocabulary for textual_inversions[0].token but \
             received \"cat\" (from {})",
            embedding("learned_embeds.safetensors").display()
        )
    );

    // The same embedding twice: the second one's token is taken.
    let twice = vec![both()[1].clone(), both()[1].clone()];
    assert!(message(twice).contains("textual_inversions[1].token"));

    let dir = std::env::temp_dir().join(format!("candlewick-ti-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pickle = dir.join("embedding.pt");
    std::fs::write(&pickle, b"PK\x03\x04 not really a zip").unwrap();
    let e = message(vec![TextualInversionSource { path: pickle, token: Some("<x>".into()) }]);
    assert!(e.contains("embedding.pt") && e.contains("pickle") && e.contains("safetensors"), "{e}");
    let two = dir.join("two.safetensors");
    let t = candle_core::Tensor::zeros((1, 32), DType::F32, &Device::Cpu).unwrap();
    let map: std::collections::HashMap<String, candle_core::Tensor> =
        [("a".to_string(), t.clone()), ("b".to_string(), t)].into_iter().collect();
    candle_core::safetensors::save(&map, &two).unwrap();
    let e = message(vec![TextualInversionSource { path: two, token: None }]);
    assert!(e.contains("holds 2 tensors (a [1, 32], b [1, 32])"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// LoRAs rebuild the text encoder from the tensors recorded at load; the embeddings' rows added
/// after load survive that: the token still gives the image it gave before (the LoRA fixtures of
/// scripts/fixture_single_file_lora.py).
#[test]
fn embeddings_survive_loras_being_set_and_removed() {
    use candlewick_core::loaders::lora::LoraSpec;
    let mut pipe = load_pipe(both()).unwrap();
    let options = GenerateOptions {
        prompt: vec!["a painting of a <cat-toy>".into()],
        num_inference_steps: 2,
        width: Some(32),
        height: Some(32),
        seed: Some(3),
        ..Default::default()
    };
    let before = pipe.generate(&options, &Observer::new()).unwrap().images[0].data.clone();
    let lora = fixtures().join("single-file/lora_kohya.safetensors");
    pipe.set_loras(&[LoraSpec { path: lora, weight: 0.8 }]).unwrap();
    let with_lora = pipe.generate(&options, &Observer::new()).unwrap().images[0].data.clone();
    assert_ne!(with_lora, before, "the LoRA changed nothing");
    pipe.set_loras(&[]).unwrap();
    assert_eq!(pipe.generate(&options, &Observer::new()).unwrap().images[0].data, before);
}
