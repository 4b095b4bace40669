//! SDXL base and refiner single-file checkpoints (diffusers' `StableDiffusionXLPipeline` /
//! `StableDiffusionXLImg2ImgPipeline.from_single_file`) against the diffusers folders they hold.
//!
//! Fixtures: scripts/fixture_single_file_sdxl.py (diffusers 0.42.1) writes
//! test/fixtures/single-file/tiny-sdxl.safetensors and tiny-sdxl-refiner.safetensors: the committed
//! tiny-sdxl / tiny-sdxl-refiner folders' f32 tensors in the original SDXL layout, checked there by
//! diffusers' own converters and `from_single_file(config=folder)`. The folders themselves are checked
//! against diffusers' pipelines in tests/families.rs, so equal tensors and equal images here carry
//! that over to the single files.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::loaders::single_file::{ModelType, SingleFile};
use candlewick_core::loaders::single_file_configs;
use candlewick_core::loaders::single_file_convert::convert;
use candlewick_core::pipeline::{GenerateOptions, ImageInput, LoadOptions, Observer, StableDiffusionPipeline};
use candlewick_core::{weights, Error};
use common::fixtures;

const BASE: &str = "tiny-sdxl";
const REFINER: &str = "tiny-sdxl-refiner";

fn file(model: &str) -> PathBuf {
    fixtures().join("single-file").join(format!("{model}.safetensors"))
}

fn options(config: Option<PathBuf>) -> LoadOptions {
    LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, config, ..Default::default() }
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("candlewick-sdxl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A 3-step run: text to image on the base, image to image (strength 0.6) on the refiner.
fn generate(pipe: &StableDiffusionPipeline, model: &str) -> Vec<u8> {
    let image = (model == REFINER)
        .then(|| ImageInput::Encoded(std::fs::read(fixtures().join("images").join("input.png")).unwrap()));
    let options = GenerateOptions {
        prompt: vec!["a photo of an astronaut riding a horse on mars".into()],
        negative_prompt: Some(vec!["blurry".into()]),
        num_inference_steps: 3,
        guidance_scale: 5.0,
        strength: image.as_ref().map(|_| 0.6),
        image,
        seed: Some(7),
        ..Default::default()
    };
    let out = pipe.generate(&options, &Observer::new()).unwrap_or_else(|e| panic!("{model}: {e}"));
    out.images[0].data.clone()
}

#[test]
fn sdxl_types_are_inferred_as_diffusers_does() {
    assert_eq!(SingleFile::open(&file(BASE)).unwrap().model_type, ModelType::XlBase);
    assert_eq!(SingleFile::open(&file(REFINER)).unwrap().model_type, ModelType::XlRefiner);
    // diffusers' infer_diffusers_model_type keys (a tenth OpenCLIP layer) on headers alone.
    let dir = tmp("infer");
    let case = |name: &str, tensors: &[(&str, &[usize])]| {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(k, shape)| (k.to_string(), Tensor::zeros(*shape, DType::F16, &Device::Cpu).unwrap()))
            .collect();
        let path = dir.join(format!("{name}.safetensors"));
        candle_core::safetensors::save(&map, &path).unwrap();
        SingleFile::open(&path).map(|f| f.model_type)
    };
    const CONV_IN: &str = "model.diffusion_model.input_blocks.0.0.weight";
    let base = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias";
    let refiner = "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias";
    assert_eq!(case("base", &[(CONV_IN, &[8, 4, 3, 3]), (base, &[8])]).unwrap(), ModelType::XlBase);
    assert_eq!(case("refiner", &[(CONV_IN, &[8, 4, 3, 3]), (refiner, &[8])]).unwrap(), ModelType::XlRefiner);
    assert_eq!(case("inpaint", &[(CONV_IN, &[8, 9, 3, 3]), (base, &[8])]).unwrap(), ModelType::XlInpaint);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every tensor of each folder's weights, asked for by its diffusers name through the key maps,
/// is bit for bit the one in the single file (q/k/v rows of the fused projection, the text
/// projection transposed back).
#[test]
fn the_single_files_read_the_same_tensors_as_the_folders() {
    for model in [BASE, REFINER] {
        let folder = fixtures().join(model);
        let sf = SingleFile::open(&file(model)).unwrap();
        let parts = single_file_configs::parts(&sf, Some(&folder)).unwrap();
        let mut sources = vec![
            ("unet", "diffusion_pytorch_model", &parts.unet_weights),
            ("vae", "diffusion_pytorch_model", &parts.vae_weights),
            ("text_encoder_2", "model", &parts.text_2.as_ref().unwrap().0.weights),
        ];
        match &parts.text {
            Some(text) => sources.push(("text_encoder", "model", &text.weights)),
            None => assert_eq!(model, REFINER, "only the refiner has no first text encoder"),
        }
        for (component, stem, source) in sources {
            let stored = weights::open_file(&folder.join(component).join(format!("{stem}.safetensors"))).unwrap();
            let mapped = source.backend().unwrap();
            let names = stored.names();
            assert!(names.len() > 20, "{model} {component}");
            for name in names {
                let want = stored.tensor(&name, None, DType::F32, &Device::Cpu).unwrap();
                let got = mapped.get(want.shape().clone(), &name, candle_nn::Init::Const(0.), DType::F32, &Device::Cpu);
                let got = got.unwrap_or_else(|e| panic!("{model} {component} {name}: {e}"));
                let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let (a, b) = (bits(&got), bits(&want));
                assert!(
                    a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{model} {component} {name} differs"
                );
            }
        }
    }
}

/// The pipeline loaded from each single file makes the folder's image byte for byte, and the
/// folder `candlewick convert` writes loads (as SDXL, with the refiner's layout and flags) and
/// makes it again.
#[test]
fn sdxl_single_files_generate_as_their_folders_and_convert() {
    for model in [BASE, REFINER] {
        let folder = fixtures().join(model);
        let from_folder = StableDiffusionPipeline::load(&folder, &options(None)).unwrap();
        let want = generate(&from_folder, model);
        drop(from_folder);
        let single = StableDiffusionPipeline::load(&file(model), &options(Some(folder.clone()))).unwrap();
        let class = if model == BASE { "StableDiffusionXLPipeline" } else { "StableDiffusionXLImg2ImgPipeline" };
        assert_eq!(single.info().pipeline_class, class);
        assert_eq!(generate(&single, model), want, "{model}: the single file's image differs from the folder's");
        drop(single);

        let out = tmp(&format!("convert-{model}"));
        let converted = convert(&file(model), Some(&folder), &out).unwrap();
        assert_eq!(converted.model_type, if model == BASE { "xl_base" } else { "xl_refiner" });
        let index: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("model_index.json")).unwrap()).unwrap();
        let source: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(folder.join("model_index.json")).unwrap()).unwrap();
        assert_eq!(index["_class_name"], class);
        for key in ["text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "force_zeros_for_empty_prompt"] {
            assert_eq!(index[key], source[key], "{model}: model_index.json's {key}");
        }
        assert_eq!(out.join("text_encoder").exists(), model == BASE);
        assert!(out.join("text_encoder_2/model.safetensors").is_file() && out.join("tokenizer_2/vocab.json").is_file());
        let reloaded = StableDiffusionPipeline::load(&out, &options(None)).unwrap();
        assert_eq!(generate(&reloaded, model), want, "{model}: the converted folder's image differs");
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// The refiner's aesthetic-score flag survives convert (it changes the UNet's added conditions).
#[test]
fn the_refiners_flags_come_from_the_config_folder() {
    let out = tmp("refiner-flags");
    convert(&file(REFINER), Some(&fixtures().join(REFINER)), &out.join("m")).unwrap();
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("m/model_index.json")).unwrap()).unwrap();
    assert_eq!(index["requires_aesthetics_score"], true);
    assert_eq!(index["force_zeros_for_empty_prompt"], false);
    std::fs::remove_dir_all(&out).unwrap();
}

fn load_error(checkpoint: &Path, config: Option<PathBuf>) -> String {
    let e = StableDiffusionPipeline::load(checkpoint, &options(config)).err().expect("refused");
    assert!(matches!(e, Error::Model { .. }), "{e:?}");
    e.to_string()
}

/// A damaged file and a file without one of its tensors are errors naming the file (and the
/// tensor, by both its names); the config folder must be of the checkpoint's family, SD1.x for
/// an SD1.x file and base or refiner for SDXL, and is required.
#[test]
fn damaged_files_missing_keys_and_other_families_are_named() {
    let dir = tmp("errors");
    let bytes = std::fs::read(file(BASE)).unwrap();
    let damaged = dir.join("damaged.safetensors");
    std::fs::write(&damaged, &bytes[..bytes.len() - 1000]).unwrap();
    let e = load_error(&damaged, Some(fixtures().join(BASE)));
    assert!(e.contains("damaged.safetensors"), "{e}");

    let mut tensors = candle_core::safetensors::load(file(BASE), &Device::Cpu).unwrap();
    tensors.remove("model.diffusion_model.label_emb.0.0.weight").unwrap();
    let missing = dir.join("missing.safetensors");
    candle_core::safetensors::save(&tensors, &missing).unwrap();
    let e = load_error(&missing, Some(fixtures().join(BASE)));
    assert!(
        e.contains("missing.safetensors")
            && e.contains("add_embedding.linear_1.weight")
            && e.contains("model.diffusion_model.label_emb.0.0.weight"),
        "{e}"
    );
    let mut tensors = candle_core::safetensors::load(file(REFINER), &Device::Cpu).unwrap();
    tensors.remove("conditioner.embedders.0.model.transformer.resblocks.2.attn.in_proj_weight").unwrap();
    let missing = dir.join("missing_refiner.safetensors");
    candle_core::safetensors::save(&tensors, &missing).unwrap();
    let e = load_error(&missing, Some(fixtures().join(REFINER)));
    assert!(
        e.contains("missing_refiner.safetensors")
            && e.contains("encoder.layers.2.self_attn.q_proj.weight")
            && e.contains("resblocks.2.attn.in_proj_weight"),
        "{e}"
    );

    // Families: an SDXL file with SD1.5's folder and the reverse; base and refiner swapped.
    let e = load_error(&file(BASE), Some(fixtures().join("tiny-sd")));
    assert!(e.contains("tiny-sd/unet/config.json") && e.contains("an SDXL checkpoint (xl_base)"), "{e}");
    let sd1 = fixtures().join("single-file").join("tiny-sd.safetensors");
    let e = load_error(&sd1, Some(fixtures().join(BASE)));
    assert!(e.contains("tiny-sdxl/unet/config.json") && e.contains("an SDXL UNet config") && e.contains("(v1)"), "{e}");
    let e = load_error(&file(REFINER), Some(fixtures().join(BASE)));
    assert!(e.contains("tiny-sdxl/text_encoder") && e.contains("refiner folder"), "{e}");
    let e = load_error(&file(BASE), Some(fixtures().join(REFINER)));
    assert!(e.contains("tiny-sdxl-refiner/tokenizer/vocab.json") && e.contains("xl_base"), "{e}");
    let e = load_error(&file(BASE), None);
    assert!(e.contains("`config`") && e.contains("stabilityai/stable-diffusion-xl-base-1.0"), "{e}");
    let e = load_error(&file(REFINER), None);
    assert!(e.contains("tokenizer_2") && e.contains("stable-diffusion-xl-refiner-1.0"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// tiny-sdxl with tiny-sdxl-inpaint's 9-channel UNet and model_index.json, as tests/sdxl_inpaint.rs composes it.
fn inpainting_folder() -> PathBuf {
    let dir = tmp("inpaint-folder");
    for component in ["tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2", "vae", "scheduler"] {
        common::copy_dir(&fixtures().join(BASE).join(component), &dir.join(component));
    }
    common::copy_dir(&fixtures().join("tiny-sdxl-inpaint/unet"), &dir.join("unet"));
    std::fs::copy(fixtures().join("tiny-sdxl-inpaint/model_index.json"), dir.join("model_index.json")).unwrap();
    dir
}

/// An SDXL inpainting single file (xl_inpaint; scripts/fixture_sdxl_inpaint.py writes
/// single-file/tiny-sdxl-inpaint.safetensors and checks it with diffusers' converters and
/// `StableDiffusionXLInpaintPipeline.from_single_file`) with an inpainting folder as `config`
/// inpaints the folder's image byte for byte and converts to that class; a base folder's 4-channel
/// UNet config is refused by name, and without `config` the message names the inpainting repository.
#[test]
fn an_sdxl_inpainting_single_file_inpaints_as_its_folder() {
    let checkpoint = fixtures().join("single-file/tiny-sdxl-inpaint.safetensors");
    assert_eq!(SingleFile::open(&checkpoint).unwrap().model_type, ModelType::XlInpaint);
    let folder = inpainting_folder();
    let read = |p: &str| ImageInput::Encoded(std::fs::read(fixtures().join(p)).unwrap());
    let call = GenerateOptions {
        prompt: vec!["a red apple".into()],
        num_inference_steps: 2,
        image: Some(read("images/input.png")),
        mask_image: Some(read("images/mask.png")),
        seed: Some(3),
        ..Default::default()
    };
    let image = |pipe: &StableDiffusionPipeline| pipe.generate(&call, &Observer::new()).unwrap().images[0].data.clone();
    let want = image(&StableDiffusionPipeline::load(&folder, &options(None)).unwrap());
    let single = StableDiffusionPipeline::load(&checkpoint, &options(Some(folder.clone()))).unwrap();
    assert_eq!(single.info().pipeline_class, "StableDiffusionXLInpaintPipeline");
    assert_eq!(image(&single), want, "the single file's image differs from the folder's");
    drop(single);

    let out = tmp("convert-inpaint");
    assert_eq!(convert(&checkpoint, Some(&folder), &out.join("m")).unwrap().model_type, "xl_inpaint");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("m/model_index.json")).unwrap()).unwrap();
    assert_eq!(index["_class_name"], "StableDiffusionXLInpaintPipeline");
    assert_eq!(index["requires_aesthetics_score"], false);
    assert_eq!(image(&StableDiffusionPipeline::load(&out.join("m"), &options(None)).unwrap()), want);

    let e = load_error(&checkpoint, Some(fixtures().join(BASE)));
    assert!(e.contains("has in_channels 4 but the checkpoint's UNet takes 9 (xl_inpaint)"), "{e}");
    let e = load_error(&checkpoint, None);
    assert!(e.contains("xl_inpaint") && e.contains("diffusers/stable-diffusion-xl-1.0-inpainting-0.1"), "{e}");
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_dir_all(&folder).unwrap();
}
