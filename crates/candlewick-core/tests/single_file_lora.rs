//! Single-file checkpoints and LoRA against diffusers, on the tiny model.
//!
//! Fixtures and goldens: scripts/fixture_single_file_lora.py (diffusers 0.42.1, peft) writes
//! test/fixtures/single-file/ (tiny-sd in the original single-file layout, f16, checked by diffusers'
//! own convert_ldm_*_checkpoint and from_single_file; a kohya LoRA with LoCon layers; a PEFT LoRA from
//! save_lora_weights) and goldens/single_file_pipeline.* (a 3-step run of
//! `StableDiffusionPipeline.from_single_file(path, config=tiny-sd)`) and goldens/lora_pipeline.*
//! (`load_lora_weights` both, `set_adapters([kohya, peft], [0.8, 0.5])`, `fuse_lora()`, the same run,
//! and some fused weights).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::loaders::lora::{self, LoraSpec};
use candlewick_core::loaders::single_file::{ModelType, SingleFile};
use candlewick_core::loaders::single_file_configs;
use candlewick_core::loaders::single_file_convert::convert;
use candlewick_core::pipeline::{LoadOptions, Observer, StableDiffusionPipeline};
use candlewick_core::{weights, Error};
use common::{assert_close, fixtures, goldens};

fn dir() -> PathBuf {
    fixtures().join("single-file")
}

fn tiny_sd() -> PathBuf {
    fixtures().join("tiny-sd")
}

fn options() -> LoadOptions {
    LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, config: Some(tiny_sd()), ..Default::default() }
}

/// Every latent step within 1e-4 relative and the image within 1/255, as the pipeline goldens.
fn assert_matches_golden(pipe: &StableDiffusionPipeline, name: &str) -> Vec<u8> {
    let (options, golden) = common::golden_call(name);
    let (observer, seen) = common::step_recorder();
    let out = pipe.generate(&options, &observer).unwrap();
    let steps = options.num_inference_steps;
    common::assert_like_golden(name, &seen.lock().unwrap(), &out.images[0].data, &golden, "", steps, 1);
    out.images[0].data.clone()
}

#[test]
fn the_architecture_is_inferred_as_diffusers_does() {
    let sf = SingleFile::open(&dir().join("tiny-sd.safetensors")).unwrap();
    assert_eq!(sf.model_type, ModelType::V1);
}

/// Every tensor of tiny-sd's fp16 files, asked for by its diffusers name through the key maps,
/// is byte for byte the one in the single file (the VAE's attention 1x1 convolutions reshaped).
#[test]
fn the_single_file_reads_the_same_tensors_as_the_folder() {
    let sf = SingleFile::open(&dir().join("tiny-sd.safetensors")).unwrap();
    let parts = single_file_configs::parts(&sf, Some(&tiny_sd())).unwrap();
    for (component, stem, source) in [
        ("unet", "diffusion_pytorch_model", &parts.unet_weights),
        ("vae", "diffusion_pytorch_model", &parts.vae_weights),
        ("text_encoder", "model", &parts.text.as_ref().unwrap().weights),
    ] {
        let folder = weights::open_file(&tiny_sd().join(component).join(format!("{stem}.fp16.safetensors"))).unwrap();
        let mapped = source.backend().unwrap();
        let names = folder.names();
        assert!(names.len() > 20, "{component}");
        for name in names {
            let want = folder.tensor(&name, None, DType::F16, &Device::Cpu).unwrap();
            let got = mapped.get(want.shape().clone(), &name, candle_nn::Init::Const(0.), DType::F16, &Device::Cpu);
            let got = got.unwrap_or_else(|e| panic!("{component} {name}: {e}"));
            // f16 -> f32 is exact, so equal f32 bits are equal f16 bits.
            let bits = |t: &Tensor| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (a, b) = (bits(&got), bits(&want));
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{component} {name} differs");
        }
    }
}

/// The pipeline loaded from the single file makes diffusers' from_single_file image, and the
/// folder `convert` writes makes the same image again.
#[test]
fn a_single_file_generates_as_diffusers_from_single_file_and_converts_to_a_folder() {
    let pipe = StableDiffusionPipeline::load(&dir().join("tiny-sd.safetensors"), &options()).unwrap();
    let image = assert_matches_golden(&pipe, "single_file_pipeline");

    let out = std::env::temp_dir().join(format!("candlewick-convert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let converted = convert(&dir().join("tiny-sd.safetensors"), Some(&tiny_sd()), &out).unwrap();
    assert_eq!(converted.model_type, "v1");
    let folder_options = LoadOptions { config: None, ..options() };
    let from_folder = StableDiffusionPipeline::load(&out, &folder_options).unwrap();
    let (o, _) = common::golden_call("single_file_pipeline");
    let again = from_folder.generate(&o, &Observer::new()).unwrap();
    assert_eq!(again.images[0].data, image, "the converted folder's image differs");
    let e = convert(&dir().join("tiny-sd.safetensors"), Some(&tiny_sd()), &out).unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn pickles_and_missing_configs_are_refused_with_reasons() {
    let e = StableDiffusionPipeline::load(&dir().join("tiny-sd.ckpt"), &options()).err().unwrap();
    let m = e.to_string();
    assert!(matches!(e, Error::Model { .. }) && m.contains("arbitrary code") && m.contains("safetensors"), "{m}");
    let no_config = LoadOptions { config: None, ..options() };
    let e = StableDiffusionPipeline::load(&dir().join("tiny-sd.safetensors"), &no_config).err().unwrap();
    assert!(e.to_string().contains("`config`") && e.to_string().contains("stable-diffusion-v1-5"), "{e}");
    // A config folder of another kind: the inpainting folder's UNet takes 9 channels, this checkpoint 4.
    let other = std::env::temp_dir().join(format!("candlewick-inpaint-config-{}", std::process::id()));
    common::copy_dir(&tiny_sd().join("tokenizer"), &other.join("tokenizer"));
    common::copy_dir(&fixtures().join("tiny-sd-inpaint/unet"), &other.join("unet"));
    let inpaint_config = LoadOptions { config: Some(other.clone()), ..options() };
    let e =
        StableDiffusionPipeline::load(&dir().join("tiny-sd.safetensors"), &inpaint_config).err().unwrap().to_string();
    assert!(e.contains("has in_channels 9 but the checkpoint's UNet takes 4 (v1)"), "{e}");
    std::fs::remove_dir_all(&other).unwrap();
    let lora_as_model = StableDiffusionPipeline::load(&dir().join("lora_kohya.safetensors"), &options()).err().unwrap();
    assert!(lora_as_model.to_string().contains("looks like a LoRA"), "{lora_as_model}");
}

fn loras() -> Vec<LoraSpec> {
    vec![
        LoraSpec { path: dir().join("lora_kohya.safetensors"), weight: 0.8 },
        LoraSpec { path: dir().join("lora_peft.safetensors"), weight: 0.5 },
    ]
}

/// The fused weights equal diffusers' fuse_lora's, and the run its image.
#[test]
fn kohya_and_peft_loras_fuse_as_diffusers_does() {
    let options = LoadOptions { loras: loras(), ..options() };
    let pipe = StableDiffusionPipeline::load(&tiny_sd(), &options).unwrap();
    assert_eq!(pipe.info().loras, loras());
    assert_matches_golden(&pipe, "lora_pipeline");
}

#[test]
fn the_fused_weights_equal_diffusers() {
    let golden = goldens("lora_pipeline");
    let base = |component: &str, stem: &str| {
        weights::open_file(&tiny_sd().join(component).join(format!("{stem}.safetensors"))).unwrap()
    };
    let (unet, text) = (base("unet", "diffusion_pytorch_model"), base("text_encoder", "model"));
    let record = |file: &weights::SafetensorsFile<memmap2::Mmap>| {
        let (vb, rec) = candlewick_core::loaders::base_weights::Recorder::wrap(
            Box::new(weights::open_file(file.path()).unwrap()),
            &candlewick_core::loaders::WeightsSource::file(file.path()),
            DType::F32,
            &Device::Cpu,
        );
        for n in file.names() {
            vb.get_unchecked(&n).unwrap();
        }
        rec
    };
    let (unet_base, text_base) = (record(&unet), record(&text));
    let cfg: candlewick_core::models::unet_2d_condition::UNet2DConditionConfig =
        candlewick_core::config::read_json(&tiny_sd().join("unet/config.json")).unwrap();
    let layout = candlewick_core::loaders::single_file_keys::UnetLayout::new(&[2, 2], &cfg.up_block_types);
    let targets = lora::LoraTargets {
        unet: &unet_base,
        unet_layout: &layout,
        text_encoder: Some(&text_base),
        text_encoder_2: None,
        device: &Device::Cpu,
    };
    let deltas = lora::deltas(&loras(), &targets).unwrap();
    let mut checked = 0;
    for (key, want) in &golden {
        let (map, base, name) = if let Some(n) = key.strip_prefix("unet.") {
            (&deltas.unet, &unet_base, n.to_string())
        } else if let Some(n) = key.strip_prefix("text_encoder.") {
            let n = if text_base.get(n).is_some() { n.to_string() } else { format!("text_model.{n}") };
            (&deltas.text_encoder, &text_base, n)
        } else {
            continue;
        };
        let fused = (base.get(&name).unwrap() + &map[&name]).unwrap();
        assert_close(key, &fused, want, 1e-6);
        checked += 1;
    }
    assert!(checked >= 6, "{checked} fused weights checked");
}

/// Replacing and removing LoRAs needs no file of the base model: the weights come back exactly.
#[test]
fn loras_are_replaced_and_removed_without_the_base_files() {
    let (o, _) = common::golden_call("lora_pipeline");
    let base_pipe = StableDiffusionPipeline::load(&tiny_sd(), &options()).unwrap();
    let plain = base_pipe.generate(&o, &Observer::new()).unwrap().images[0].data.clone();

    // A copy of tiny-sd, deleted once loaded: set_loras must not need its files.
    let copy = std::env::temp_dir().join(format!("candlewick-lora-{}", std::process::id()));
    common::copy_dir(&tiny_sd(), &copy);
    let mut pipe = StableDiffusionPipeline::load(&copy, &options()).unwrap();
    std::fs::remove_dir_all(&copy).unwrap();
    pipe.set_loras(&loras()).unwrap();
    assert_matches_golden(&pipe, "lora_pipeline");
    pipe.set_loras(&[]).unwrap();
    assert_eq!(pipe.generate(&o, &Observer::new()).unwrap().images[0].data, plain, "unfused image differs");
    assert!(pipe.info().loras.is_empty());

    // A key that maps to nothing is an error naming the file and the key; the pipeline keeps its weights.
    let bad = vec![LoraSpec { path: dir().join("lora_bad_key.safetensors"), weight: 1.0 }];
    let e = pipe.set_loras(&bad).unwrap_err().to_string();
    assert!(
        e.contains("lora_bad_key.safetensors") && e.contains("lora_unet_down_blocks_5_attentions_0_proj_in"),
        "{e}"
    );
    assert_eq!(
        pipe.generate(&o, &Observer::new()).unwrap().images[0].data,
        plain,
        "a failed set_loras changed the weights"
    );
    let missing = vec![LoraSpec { path: dir().join("nope.safetensors"), weight: 1.0 }];
    assert!(pipe.set_loras(&missing).unwrap_err().to_string().contains("nope.safetensors"));
}

/// The `vae` option: an A1111-style VAE file (the original layout without `first_stage_model.`)
/// replaces the checkpoint's VAE; with the same weights the image is the same. A file that is no
/// VAE is refused by name.
#[test]
fn a_vae_file_in_the_original_layout_replaces_the_vae() {
    let all = candle_core::safetensors::load(dir().join("tiny-sd.safetensors"), &Device::Cpu).unwrap();
    let vae: HashMap<String, Tensor> =
        all.iter().filter_map(|(k, v)| Some((k.strip_prefix("first_stage_model.")?.to_string(), v.clone()))).collect();
    assert!(vae.contains_key("decoder.mid.attn_1.q.weight"));
    let path = std::env::temp_dir().join(format!("candlewick-vae-{}.safetensors", std::process::id()));
    candle_core::safetensors::save(&vae, &path).unwrap();
    let (o, _) = common::golden_call("single_file_pipeline");
    let checkpoint = dir().join("tiny-sd.safetensors");
    let plain = StableDiffusionPipeline::load(&checkpoint, &options()).unwrap();
    let with_vae =
        StableDiffusionPipeline::load(&checkpoint, &LoadOptions { vae: Some(path.clone()), ..options() }).unwrap();
    assert_eq!(
        with_vae.generate(&o, &Observer::new()).unwrap().images[0].data,
        plain.generate(&o, &Observer::new()).unwrap().images[0].data
    );
    // And it is this file that is read: a changed decoder changes the image.
    let mut changed = vae.clone();
    let bias = changed["decoder.conv_out.bias"].clone();
    changed.insert("decoder.conv_out.bias".into(), (bias + 0.5).unwrap());
    candle_core::safetensors::save(&changed, &path).unwrap();
    let with_changed =
        StableDiffusionPipeline::load(&checkpoint, &LoadOptions { vae: Some(path.clone()), ..options() }).unwrap();
    assert_ne!(
        with_changed.generate(&o, &Observer::new()).unwrap().images[0].data,
        plain.generate(&o, &Observer::new()).unwrap().images[0].data
    );
    std::fs::remove_file(&path).unwrap();
    let not_vae = LoadOptions { vae: Some(dir().join("lora_kohya.safetensors")), ..options() };
    let e = StableDiffusionPipeline::load(&checkpoint, &not_vae).err().unwrap().to_string();
    assert!(e.contains("lora_kohya.safetensors: is not a VAE"), "{e}");
}

/// diffusers' `infer_diffusers_model_type` on headers alone: 9 input channels is inpainting, a
/// 1024-wide cross-attention SD2, SDXL's OpenCLIP layer is SDXL, and a file without the UNet's first
/// convolution is no checkpoint.
#[test]
fn model_types_are_inferred_from_the_tensor_shapes() {
    let tmp = std::env::temp_dir().join(format!("candlewick-infer-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let case = |name: &str, tensors: &[(&str, &[usize])]| {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(k, shape)| (k.to_string(), Tensor::zeros(*shape, DType::F16, &Device::Cpu).unwrap()))
            .collect();
        let path = tmp.join(format!("{name}.safetensors"));
        candle_core::safetensors::save(&map, &path).unwrap();
        SingleFile::open(&path).map(|f| f.model_type)
    };
    const CONV_IN: &str = "model.diffusion_model.input_blocks.0.0.weight";
    const TO_K: &str = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";
    assert_eq!(case("v1", &[(CONV_IN, &[8, 4, 3, 3]), (TO_K, &[8, 768])]).unwrap(), ModelType::V1);
    assert_eq!(case("inpainting", &[(CONV_IN, &[8, 9, 3, 3]), (TO_K, &[8, 768])]).unwrap(), ModelType::Inpainting);
    assert_eq!(case("v2", &[(CONV_IN, &[8, 4, 3, 3]), (TO_K, &[8, 1024])]).unwrap(), ModelType::V2);
    assert_eq!(
        case("inpainting_v2", &[(CONV_IN, &[8, 9, 3, 3]), (TO_K, &[8, 1024])]).unwrap(),
        ModelType::InpaintingV2
    );
    let xl = case(
        "xl",
        &[(CONV_IN, &[8, 4, 3, 3]), ("conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias", &[8])],
    );
    assert_eq!(xl.unwrap(), ModelType::XlBase); // more in tests/single_file_sdxl.rs
    let none = case("none", &[("conv_in.weight", &[8, 4, 3, 3])]).err().unwrap().to_string();
    assert!(none.contains("not a Stable Diffusion checkpoint") && none.contains("diffusers component"), "{none}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// kohya names in the original (SGM) block numbering, as kohya's SDXL-era scripts write them,
/// resolve to the same layers as diffusers-numbered ones.
#[test]
fn kohya_names_in_the_original_numbering_resolve() {
    use candlewick_core::loaders::lora_keys::{Module, Resolver};
    use candlewick_core::loaders::single_file_keys::UnetLayout;
    let up: Vec<String> = ["UpBlock2D", "CrossAttnUpBlock2D"].iter().map(|s| s.to_string()).collect();
    let names: Vec<String> = ["down_blocks.0.attentions.1.proj_in.weight", "up_blocks.1.resnets.2.conv1.weight"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let r = Resolver::new(&names, Some(&UnetLayout::new(&[2, 2], &up)));
    for (kohya, want) in [
        ("down_blocks_0_attentions_1_proj_in", "down_blocks.0.attentions.1.proj_in.weight"),
        ("input_blocks_2_1_proj_in", "down_blocks.0.attentions.1.proj_in.weight"),
        ("output_blocks_5_0_in_layers_2", "up_blocks.1.resnets.2.conv1.weight"),
    ] {
        assert_eq!(r.weight(&Module::Kohya(kohya.into())).as_deref(), Some(want), "{kohya}");
    }
    assert_eq!(r.weight(&Module::Kohya("input_blocks_9_1_proj_in".into())), None);
}

/// SD2's OpenCLIP layout (`cond_stage_model.model.*`, q/k/v fused in `in_proj`): every tensor the
/// text encoder asks for equals diffusers' `convert_open_clip_checkpoint` of the same file
/// (goldens/open_clip_sd2.safetensors). SD2 models load on the families branch; this checks the map.
#[test]
fn open_clip_keys_read_as_diffusers_converts_them() {
    let sf = SingleFile::open(&dir().join("open_clip_sd2.safetensors")).unwrap();
    assert_eq!(sf.model_type, ModelType::V2);
    let backend = sf.text_encoder(16).backend().unwrap();
    let golden = goldens("open_clip_sd2");
    assert_eq!(golden.len(), 52);
    for (name, want) in &golden {
        let got = backend.get(want.shape().clone(), name, candle_nn::Init::Const(0.), DType::F32, &Device::Cpu);
        let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
        let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(bits(&got), bits(want), "{name}");
    }
}

/// A LoRA whose halves do not pair up, or whose change does not fit the layer's weight (another
/// architecture's), is an error naming the file and the keys; the pipeline keeps its weights.
#[test]
fn lora_shapes_that_do_not_fit_are_named() {
    let mut pipe = StableDiffusionPipeline::load(&tiny_sd(), &options()).unwrap();
    let tmp = std::env::temp_dir().join(format!("candlewick-bad-lora-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let layer = "lora_unet_down_blocks_0_attentions_0_proj_in";
    for (name, down, up, says) in [
        ("rank", &[4usize, 32, 1, 1][..], &[32usize, 2, 1, 1][..], "not a LoRA pair"),
        ("width", &[2, 16][..], &[32, 2][..], "make a [32, 16] change but the layer's weight is [32, 32, 1, 1]"),
    ] {
        let tensors: HashMap<String, Tensor> = [
            (format!("{layer}.lora_down.weight"), Tensor::ones(down, DType::F32, &Device::Cpu).unwrap()),
            (format!("{layer}.lora_up.weight"), Tensor::ones(up, DType::F32, &Device::Cpu).unwrap()),
        ]
        .into_iter()
        .collect();
        let path = tmp.join(format!("{name}.safetensors"));
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let e = pipe.set_loras(&[LoraSpec { path: path.clone(), weight: 1.0 }]).unwrap_err().to_string();
        assert!(e.contains(&format!("{name}.safetensors")) && e.contains(layer) && e.contains(says), "{e}");
    }
    assert!(pipe.info().loras.is_empty());
    std::fs::remove_dir_all(&tmp).unwrap();
}
