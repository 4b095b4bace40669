//! SDXL LoRA (both text encoders and the UNet) against diffusers, on the tiny SDXL.
//!
//! Fixture and golden: scripts/fixture_sdxl_lora.py (diffusers 0.42.1, peft) writes
//! test/fixtures/single-file/lora_sdxl_kohya.safetensors (kohya's SDXL format: lora_te1_*, lora_te2_*,
//! lora_unet_* in the original block numbering) and goldens/sdxl_lora_pipeline.* (tiny-sdxl's
//! `StableDiffusionXLPipeline.load_lora_weights` of it, `fuse_lora(lora_scale=0.8)`, a 3-step run from
//! fixed latents, and some fused weights of each model); and lora_sdxl_peft.safetensors (diffusers'
//! PEFT format from `StableDiffusionXLPipeline.save_lora_weights`, scales in its metadata) with
//! goldens/sdxl_lora_peft.safetensors (every weight `fuse_lora(lora_scale=0.5)` changes).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::loaders::base_weights::{BaseWeights, Recorder};
use candlewick_core::loaders::lora::{self, LoraSpec};
use candlewick_core::loaders::single_file_keys::UnetLayout;
use candlewick_core::loaders::WeightsSource;
use candlewick_core::models::unet_2d_condition::UNet2DConditionConfig;
use candlewick_core::pipeline::{LoadOptions, Observer, StableDiffusionPipeline};
use candlewick_core::weights;
use common::{assert_close, fixtures, goldens};

const GOLDEN: &str = "sdxl_lora_pipeline";

fn tiny_sdxl() -> PathBuf {
    fixtures().join("tiny-sdxl")
}

fn options() -> LoadOptions {
    LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() }
}

fn lora() -> Vec<LoraSpec> {
    vec![LoraSpec { path: fixtures().join("single-file").join("lora_sdxl_kohya.safetensors"), weight: 0.8 }]
}

/// Every latent step within 1e-4 relative and the image within 1/255, as the other LoRA goldens.
fn assert_matches_golden(pipe: &StableDiffusionPipeline) {
    let (options, golden) = common::golden_call(GOLDEN);
    let (observer, seen) = common::step_recorder();
    let out = pipe.generate(&options, &observer).unwrap();
    let steps = options.num_inference_steps;
    common::assert_like_golden(GOLDEN, &seen.lock().unwrap(), &out.images[0].data, &golden, "", steps, 1);
}

#[test]
fn a_kohya_sdxl_lora_fuses_into_both_text_encoders_as_diffusers_does() {
    let pipe = StableDiffusionPipeline::load(&tiny_sdxl(), &LoadOptions { loras: lora(), ..options() }).unwrap();
    assert_eq!(pipe.info().loras, lora());
    assert_matches_golden(&pipe);
}

/// Every tensor of `component`'s file, recorded as a model load records it.
fn record(component: &str, stem: &str) -> BaseWeights {
    let path = tiny_sdxl().join(component).join(format!("{stem}.safetensors"));
    let file = weights::open_file(&path).unwrap();
    let source = WeightsSource::file(&path);
    let (vb, rec) = Recorder::wrap(Box::new(weights::open_file(&path).unwrap()), &source, DType::F32, &Device::Cpu);
    for n in file.names() {
        vb.get_unchecked(&n).unwrap();
    }
    rec
}

/// `lora`'s fused weights against `golden`'s (`<model>.<weight name>`), within 1e-6: the count per
/// model, and how many weights candlewick changes in all.
fn check_fused(lora: &[LoraSpec], golden: &HashMap<String, Tensor>) -> (HashMap<&'static str, usize>, usize) {
    let unet = record("unet", "diffusion_pytorch_model");
    let (text, text_2) = (record("text_encoder", "model"), record("text_encoder_2", "model"));
    let cfg: UNet2DConditionConfig = candlewick_core::config::read_json(&tiny_sdxl().join("unet/config.json")).unwrap();
    let layout = UnetLayout::new(&[2, 2], &cfg.up_block_types);
    let targets = lora::LoraTargets {
        unet: &unet,
        unet_layout: &layout,
        text_encoder: Some(&text),
        text_encoder_2: Some(&text_2),
        device: &Device::Cpu,
    };
    let deltas = lora::deltas(lora, &targets).unwrap();
    let mut checked = HashMap::new();
    for (key, want) in golden {
        let (map, base, part, name) = if let Some(n) = key.strip_prefix("unet.") {
            (&deltas.unet, &unet, "unet", n)
        } else if let Some(n) = key.strip_prefix("text_encoder.") {
            (&deltas.text_encoder, &text, "text_encoder", n)
        } else if let Some(n) = key.strip_prefix("text_encoder_2.") {
            (&deltas.text_encoder_2, &text_2, "text_encoder_2", n)
        } else {
            continue;
        };
        // transformers 5's state_dict() leaves CLIP's `text_model.` out; the files have it.
        let name = if base.get(name).is_some() { name.to_string() } else { format!("text_model.{name}") };
        let delta = map.get(&name).unwrap_or_else(|| panic!("{key}: candlewick does not change it"));
        let fused = (base.get(&name).unwrap() + delta).unwrap();
        assert_close(key, &fused, want, 1e-6);
        *checked.entry(part).or_insert(0) += 1;
    }
    (checked, deltas.unet.len() + deltas.text_encoder.len() + deltas.text_encoder_2.len())
}

#[test]
fn the_fused_weights_of_each_model_equal_diffusers() {
    let (checked, _) = check_fused(&lora(), &goldens(GOLDEN));
    assert!(checked.len() == 3 && checked.values().all(|&n| n >= 1), "{checked:?}");
}

/// The PEFT file's golden holds every weight diffusers' fuse_lora changed: candlewick changes the same
/// ones, by the same amounts.
#[test]
fn a_peft_sdxl_lora_changes_the_weights_diffusers_changes() {
    let spec = vec![LoraSpec { path: fixtures().join("single-file").join("lora_sdxl_peft.safetensors"), weight: 0.5 }];
    let golden = goldens("sdxl_lora_peft");
    let (checked, changed) = check_fused(&spec, &golden);
    assert_eq!((checked.values().sum::<usize>(), changed), (golden.len(), golden.len()));
    assert!(checked.len() == 3 && checked["text_encoder_2"] == 10, "{checked:?}");
    let mut pipe = StableDiffusionPipeline::load(&tiny_sdxl(), &options()).unwrap();
    pipe.set_loras(&spec).unwrap();
    assert_eq!(pipe.info().loras, spec);
}

/// set_loras fuses the LoRA into the loaded pipeline as at load, and [] gives the base image back bit
/// for bit.
#[test]
fn set_loras_fuses_and_removes_an_sdxl_lora() {
    let (o, _) = common::golden_call(GOLDEN);
    let mut pipe = StableDiffusionPipeline::load(&tiny_sdxl(), &options()).unwrap();
    let plain = pipe.generate(&o, &Observer::new()).unwrap().images[0].data.clone();
    pipe.set_loras(&lora()).unwrap();
    assert_matches_golden(&pipe);
    assert_ne!(pipe.generate(&o, &Observer::new()).unwrap().images[0].data, plain, "the LoRA changed nothing");
    pipe.set_loras(&[]).unwrap();
    assert_eq!(pipe.generate(&o, &Observer::new()).unwrap().images[0].data, plain, "unfused image differs");
    assert!(pipe.info().loras.is_empty());
}

/// A one-layer LoRA file with `key`'s pair (ones, rank 2, `width` wide) in `dir`.
fn one_layer(dir: &Path, name: &str, layer: &str, width: usize) -> PathBuf {
    let tensors: HashMap<String, Tensor> = [
        (format!("{layer}.lora_down.weight"), Tensor::ones((2, width), DType::F32, &Device::Cpu).unwrap()),
        (format!("{layer}.lora_up.weight"), Tensor::ones((width, 2), DType::F32, &Device::Cpu).unwrap()),
    ]
    .into_iter()
    .collect();
    let path = dir.join(format!("{name}.safetensors"));
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

/// A layer for a text encoder the model does not have is an error naming the file, the key and the
/// models it has; the pipeline keeps its weights.
#[test]
fn loras_for_a_text_encoder_the_model_lacks_are_named() {
    let tmp = std::env::temp_dir().join(format!("candlewick-sdxl-lora-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let te1 = "lora_te1_text_model_encoder_layers_0_mlp_fc1";
    let te2 = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj";
    let peft2 = "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj";
    let cases = [
        // SD1.x: no text_encoder_2.
        (fixtures().join("tiny-sd"), one_layer(&tmp, "te2", te2, 32), te2, "unet, text_encoder"),
        (fixtures().join("tiny-sd"), peft_one_layer(&tmp, peft2), peft2, "unet, text_encoder"),
        // SDXL's refiner: text_encoder_2 only.
        (fixtures().join("tiny-sdxl-refiner"), one_layer(&tmp, "te1", te1, 32), te1, "unet, text_encoder_2"),
    ];
    for (model, path, key, has) in cases {
        let mut pipe = StableDiffusionPipeline::load(&model, &options()).unwrap();
        let e = pipe.set_loras(&[LoraSpec { path: path.clone(), weight: 1.0 }]).unwrap_err().to_string();
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        assert!(e.contains(&file) && e.contains(key) && e.contains(&format!("(it has {has})")), "{e}");
        assert!(pipe.info().loras.is_empty());
        let load = LoadOptions { loras: vec![LoraSpec { path, weight: 1.0 }], ..options() };
        let e = StableDiffusionPipeline::load(&model, &load).err().unwrap().to_string();
        assert!(e.contains(&file) && e.contains(key) && e.contains("does not have"), "{e}");
    }
    // The whole SDXL LoRA on the refiner: its lora_te1_ layers are named before any other misfit.
    let mut refiner = StableDiffusionPipeline::load(&fixtures().join("tiny-sdxl-refiner"), &options()).unwrap();
    let e = refiner.set_loras(&lora()).unwrap_err().to_string();
    assert!(
        e.contains("lora_sdxl_kohya.safetensors: key lora_te1_") && e.contains("(it has unet, text_encoder_2)"),
        "{e}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// The PEFT form of one text_encoder_2 layer (lora_A / lora_B).
fn peft_one_layer(dir: &Path, module: &str) -> PathBuf {
    let tensors: HashMap<String, Tensor> = [
        (format!("{module}.lora_A.weight"), Tensor::ones((2, 32), DType::F32, &Device::Cpu).unwrap()),
        (format!("{module}.lora_B.weight"), Tensor::ones((32, 2), DType::F32, &Device::Cpu).unwrap()),
    ]
    .into_iter()
    .collect();
    let path = dir.join("peft_te2.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}
