//! Image to image and inpainting against diffusers, on the tiny models.
//!
//! Goldens: test/fixtures/goldens/{img2img,inpaint}_<case>.{json,safetensors} and
//! image_inputs.safetensors, made by scripts/fixture_images.py (scripts/make_fixtures.py
//! --images-only): StableDiffusionImg2ImgPipeline / StableDiffusionInpaintPipeline(image=
//! test/fixtures/images/input.png, mask_image=images/mask.png, strength, generator=manual_seed(0),
//! output_type="pt") with callback_on_step_end capturing the latents after every UNet call, and
//! every torch.randn draw recorded in order (`noise_k`), replayed here through the pipeline's
//! noise source.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::Tensor;
use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::pipeline::{GenerateOptions, LoadOptions, Observer, StableDiffusionPipeline, Task};
use common::{assert_close, fixture_image, fixtures, goldens, load_cpu, Replay};

struct Golden {
    json: serde_json::Value,
    tensors: HashMap<String, Tensor>,
}

fn golden(name: &str) -> Golden {
    let text = std::fs::read_to_string(fixtures().join("goldens").join(format!("{name}.json"))).unwrap();
    Golden { json: serde_json::from_str(&text).unwrap(), tensors: goldens(name) }
}

impl Golden {
    fn options(&self) -> GenerateOptions {
        let j = &self.json;
        GenerateOptions {
            prompt: vec![j["prompt"].as_str().unwrap().into()],
            negative_prompt: Some(vec![j["negative_prompt"].as_str().unwrap().into()]),
            num_inference_steps: j["steps"].as_u64().unwrap() as usize,
            guidance_scale: j["guidance_scale"].as_f64().unwrap(),
            width: j["width"].as_u64().map(|w| w as usize),
            height: j["height"].as_u64().map(|h| h as usize),
            scheduler: j["scheduler"].as_object().cloned().unwrap_or_default(),
            image: Some(fixture_image(j["image"].as_str().unwrap())),
            mask_image: j["mask_image"].as_str().map(fixture_image),
            strength: j["strength"].as_f64(),
            seed: Some(0),
            ..Default::default()
        }
    }

    fn replay(&self) -> Replay {
        common::replay(&self.json, &self.tensors)
    }

    /// Run it, compare every UNet call's latents (1e-4 relative) and the image (within 1/255).
    fn check(&self, name: &str, pipe: &StableDiffusionPipeline) {
        let out = common::check_call(name, pipe, &self.options(), &self.json, &self.tensors);
        assert_eq!(out.settings.strength, self.json["strength"].as_f64());
    }
}

fn cases(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures().join("goldens"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.starts_with(prefix) && f.ends_with(".json"))
        .map(|f| f.trim_end_matches(".json").to_string())
        .collect();
    names.sort();
    assert!(names.len() >= 2, "fewer than two {prefix}* goldens");
    names
}

/// VaeImageProcessor's preprocessing of the PNG, and the mask processor's of the mask, as diffusers'.
#[test]
fn decoded_inputs_match_diffusers_preprocessing() {
    let inputs = goldens("image_inputs");
    let image = candlewick_core::pipeline::preprocess_image(&fixture_image("images/input.png"), 32, 32).unwrap();
    assert_close("init_image", &image, &inputs["init_image"], 1e-6);
    let mask = candlewick_core::pipeline::preprocess_mask(&fixture_image("images/mask.png"), 32, 32).unwrap();
    assert_close("mask_condition", &mask, &inputs["mask_condition"], 0.0);
}

#[test]
fn img2img_matches_diffusers_with_every_golden_scheduler() {
    let pipe = load_cpu(&fixtures().join("tiny-sd"));
    for name in cases("img2img_") {
        golden(&name).check(&name, &pipe);
        eprintln!("{name}: matches diffusers");
    }
}

#[test]
fn inpainting_matches_diffusers_with_4_and_9_channel_unets() {
    let tiny = load_cpu(&fixtures().join("tiny-sd"));
    let folder = common::fixture_with_unet("tiny-sd", "tiny-sd-inpaint");
    let inpainting = load_cpu(folder.path());
    for name in cases("inpaint_") {
        let g = golden(&name);
        let pipe = if g.json["unet_in_channels"] == 9 { &inpainting } else { &tiny };
        g.check(&name, pipe);
        assert_eq!(name.ends_with("9ch"), g.json["unet_in_channels"] == 9);
        eprintln!("{name}: matches diffusers");
    }
}

/// The seeds' own streams: the same seed gives the same picture, and the settings say what ran.
#[test]
fn img2img_with_seeds_is_reproducible_and_reports_its_task() {
    let pipe = load_cpu(&fixtures().join("tiny-sd"));
    let options = GenerateOptions {
        prompt: vec!["a red apple".into()],
        num_inference_steps: 4,
        image: Some(fixture_image("images/input.png")),
        seed: Some(3),
        ..Default::default()
    };
    let a = pipe.generate(&options, &Observer::new()).unwrap();
    let b = pipe.generate(&options, &Observer::new()).unwrap();
    assert_eq!(a.images[0].data, b.images[0].data);
    assert_eq!((a.images[0].width, a.images[0].height), (32, 32), "the image's size");
    assert_eq!(a.settings.task, Task::Img2Img);
    assert_eq!(a.settings.strength, Some(0.8), "diffusers' default strength");
    let steps: Arc<Mutex<Vec<usize>>> = Arc::default();
    let sink = steps.clone();
    let observer = Observer::new().with_progress(move |p| sink.lock().unwrap().push(p.total_steps));
    pipe.generate(&GenerateOptions { strength: Some(0.5), ..options }, &observer).unwrap();
    assert_eq!(*steps.lock().unwrap(), vec![2, 2], "strength 0.5 of 4 steps runs 2");
}

/// f16 (the fp16 weights; the 9-channel UNet's f32 file converted) stays close to diffusers' f32
/// images, through the VAE encode, the mask channels and the known-region blend.
#[test]
fn f16_img2img_and_inpainting_stay_close_to_diffusers_f32() {
    let load_f16 = |dir: &Path| {
        let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F16, ..Default::default() };
        StableDiffusionPipeline::load(dir, &options).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
    };
    let tiny = load_f16(&fixtures().join("tiny-sd"));
    let folder = common::fixture_with_unet("tiny-sd", "tiny-sd-inpaint");
    let inpainting = load_f16(folder.path());
    for name in ["img2img_ddim", "inpaint_euler_4ch", "inpaint_ddim_9ch"] {
        let g = golden(name);
        let pipe = if g.json["unet_in_channels"] == 9 { &inpainting } else { &tiny };
        let out = pipe.generate_with_noise(&g.options(), &Observer::new(), &mut g.replay()).unwrap();
        let want = g.tensors["image_u8"].flatten_all().unwrap().to_vec1::<u8>().unwrap();
        let worst = out.images[0].data.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        eprintln!("{name} in f16: worst pixel {worst}/255 from diffusers' f32");
        assert!(worst <= 6, "{name}: f16 differs from diffusers' f32 image by {worst}/255");
    }
}

/// Each image of an img2img or inpainting batch is the image its seed makes alone (each image's
/// VAE sample and noise come from its own stream), and `width`/`height` resize the input.
#[test]
fn image_tasks_in_a_batch_give_each_image_what_its_seed_makes_alone() {
    let pipe = load_cpu(&fixtures().join("tiny-sd"));
    for mask in [None, Some(fixture_image("images/mask.png"))] {
        let call = |prompt: Vec<String>, seeds: Vec<u64>| GenerateOptions {
            prompt,
            num_inference_steps: 3,
            image: Some(fixture_image("images/input.png")),
            mask_image: mask.clone(),
            strength: Some(0.7),
            width: Some(48),
            height: Some(40),
            seeds: Some(seeds),
            ..Default::default()
        };
        let batch = pipe
            .generate(&call(vec!["a red apple".into(), "a blue bird".into()], vec![7, 9]), &Observer::new())
            .unwrap();
        assert_eq!((batch.images[0].width, batch.images[0].height), (48, 40), "width and height resize the image");
        for (i, (prompt, seed)) in [("a red apple", 7), ("a blue bird", 9)].into_iter().enumerate() {
            let alone = pipe.generate(&call(vec![prompt.into()], vec![seed]), &Observer::new()).unwrap();
            let close =
                alone.images[0].data.iter().zip(&batch.images[i].data).filter(|(a, b)| a.abs_diff(**b) <= 1).count();
            assert_eq!(close, alone.images[0].data.len(), "image {i} (mask: {})", mask.is_some());
        }
    }
}

/// Every scheduler runs image to image and inpainting from a strength's start (the begin index,
/// Heun's two calls a step, PNDM's warm-up), with the number of UNet calls diffusers makes.
#[test]
fn every_scheduler_runs_the_image_tasks() {
    let pipe = load_cpu(&fixtures().join("tiny-sd"));
    // (type, extra fields, UNet calls of 4 steps at strength 0.5: diffusers 0.42.1's
    // len(scheduler.timesteps[t_start * scheduler.order:]) after set_timesteps(4), t_start = 2,
    // for Class.from_config(tiny-sd's scheduler_config.json, **fields))
    let schedulers: [(&str, serde_json::Value, usize); 10] = [
        ("ddim", serde_json::json!({}), 2),
        ("pndm", serde_json::json!({"skip_prk_steps": true}), 3),
        ("pndm", serde_json::json!({"skip_prk_steps": false}), 11),
        ("ddpm", serde_json::json!({}), 2),
        ("lcm", serde_json::json!({}), 2),
        ("euler", serde_json::json!({"use_karras_sigmas": true}), 2),
        ("euler-ancestral", serde_json::json!({}), 2),
        ("heun", serde_json::json!({}), 3),
        ("dpm++-2m-sde-karras", serde_json::json!({}), 2),
        ("unipc", serde_json::json!({}), 2),
    ];
    for (kind, fields, calls) in schedulers {
        let mut scheduler = fields.as_object().cloned().unwrap();
        scheduler.insert("type".into(), kind.into());
        for mask in [None, Some(fixture_image("images/mask.png"))] {
            let options = GenerateOptions {
                prompt: vec!["a red apple".into()],
                num_inference_steps: 4,
                image: Some(fixture_image("images/input.png")),
                mask_image: mask.clone(),
                strength: Some(0.5),
                scheduler: scheduler.clone(),
                seed: Some(4),
                ..Default::default()
            };
            let seen: Arc<Mutex<usize>> = Arc::default();
            let sink = seen.clone();
            let observer = Observer::new().with_progress(move |_| *sink.lock().unwrap() += 1);
            let out = pipe.generate(&options, &observer).unwrap_or_else(|e| panic!("{kind} {fields}: {e}"));
            assert_eq!(out.images.len(), 1);
            assert_eq!(*seen.lock().unwrap(), calls, "{kind} {fields} (mask: {}): UNet calls", mask.is_some());
        }
    }
}
