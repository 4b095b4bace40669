//! SDXL inpainting against diffusers' `StableDiffusionXLInpaintPipeline`, on the tiny SDXL models.
//!
//! Goldens: test/fixtures/goldens/sdxl_inpaint_<case>.{json,safetensors} and the folder
//! tiny-sdxl-inpaint (a 9-channel UNet and model_index.json; its other components are
//! tiny-sdxl's), made by scripts/fixture_sdxl_inpaint.py: StableDiffusionXLInpaintPipeline(image=
//! images/input.png, mask_image=images/mask.png, **call, generator=manual_seed(0),
//! output_type="pt"), every torch.randn draw recorded (`noise_k`, replayed here) and the latents
//! after every UNet call.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::pipeline::{
    GenerateOptions, LatentsInput, LoadOptions, Observer, SizeConditions, StableDiffusionPipeline, Task,
};
use common::{fixture_image, fixtures, goldens, load_cpu, Replay};

fn pair(value: &serde_json::Value) -> Option<[usize; 2]> {
    let v = value.as_array()?;
    Some([v.first()?.as_u64()? as usize, v.get(1)?.as_u64()? as usize])
}

struct Golden {
    name: String,
    json: serde_json::Value,
    tensors: HashMap<String, Tensor>,
}

fn golden(name: &str) -> Golden {
    let name = format!("sdxl_inpaint_{name}");
    let text = std::fs::read_to_string(fixtures().join("goldens").join(format!("{name}.json"))).unwrap();
    Golden { json: serde_json::from_str(&text).unwrap(), tensors: goldens(&name), name }
}

impl Golden {
    /// The call diffusers made, as Candlewick options (no strength when diffusers ran its default).
    fn options(&self) -> GenerateOptions {
        let j = &self.json;
        GenerateOptions {
            prompt: vec![j["prompt"].as_str().unwrap().into()],
            negative_prompt: j["negative_prompt"].as_str().map(|n| vec![n.into()]),
            num_inference_steps: j["num_inference_steps"].as_u64().unwrap() as usize,
            guidance_scale: j["guidance_scale"].as_f64().unwrap(),
            width: j["width"].as_u64().map(|w| w as usize),
            height: j["height"].as_u64().map(|h| h as usize),
            scheduler: j["scheduler"].as_object().cloned().unwrap_or_default(),
            image: j["image"].as_str().map(fixture_image),
            mask_image: Some(fixture_image(j["mask_image"].as_str().unwrap())),
            strength: j["strength"].as_f64(),
            denoising_start: j["denoising_start"].as_f64(),
            denoising_end: j["denoising_end"].as_f64(),
            size_conditions: SizeConditions {
                original_size: pair(&j["original_size"]),
                crops_coords_top_left: pair(&j["crops_coords_top_left"]).unwrap_or_default(),
                target_size: pair(&j["target_size"]),
                aesthetic_score: j["aesthetic_score"].as_f64().unwrap_or(6.0),
                negative_aesthetic_score: j["negative_aesthetic_score"].as_f64().unwrap_or(2.5),
                ..Default::default()
            },
            // The caller's noise (a tensor of the golden), or the handoff's latents standing for the image.
            latents: j["latents"]
                .as_str()
                .map(|name| self.tensors[name].clone())
                .or_else(|| j["image_latents"].as_str().map(|name| goldens(name)["latents"].clone()))
                .map(|t| LatentsInput {
                    shape: t.dims4().unwrap().into(),
                    data: t.flatten_all().unwrap().to_vec1().unwrap(),
                }),
            seed: Some(0),
            ..Default::default()
        }
    }

    fn replay(&self) -> Replay {
        common::replay(&self.json, &self.tensors)
    }

    /// Run it on `pipe`: every UNet call's latents within 1e-4 relative, the image within 1/255.
    fn check(&self, pipe: &StableDiffusionPipeline) {
        let name = &self.name;
        let out = common::check_call(name, pipe, &self.options(), &self.json, &self.tensors);
        assert_eq!(out.settings.task, Task::Inpaint, "{name}");
    }
}

/// The base's 4-channel UNet (the known region put back after every step) at
/// StableDiffusionXLInpaintPipeline's default strength 0.9999 (2 of 3 steps, from the image's
/// latents noised), as a StableDiffusionXLPipeline folder given a mask.
#[test]
fn sdxl_base_inpainting_matches_diffusers() {
    let pipe = load_cpu(&fixtures().join("tiny-sdxl"));
    let g = golden("4ch");
    assert!(g.json["strength"].is_null(), "the golden ran diffusers' default strength");
    g.check(&pipe);
    let out = pipe.generate_with_noise(&g.options(), &Observer::new(), &mut g.replay()).unwrap();
    assert_eq!(out.settings.strength, Some(0.9999), "StableDiffusionXLInpaintPipeline's default strength");
}

/// The 9-channel inpainting UNet (StableDiffusionXLInpaintPipeline's folder): at strength 1 from
/// pure noise, and with DDIM at strength 0.8 stopped at denoising_end 0.7 with the size
/// conditions and no negative prompt (zero negative embeddings).
#[test]
fn sdxl_inpainting_unet_matches_diffusers() {
    let folder = common::fixture_with_unet("tiny-sdxl", "tiny-sdxl-inpaint");
    let pipe = load_cpu(folder.path());
    assert_eq!(pipe.info().pipeline_class, "StableDiffusionXLInpaintPipeline");
    for name in ["9ch", "9ch_ddim_end"] {
        golden(name).check(&pipe);
    }
    // An inpainting UNet needs a mask, as with SD1.5's.
    let text_only = GenerateOptions { num_inference_steps: 1, seed: Some(1), ..Default::default() };
    let msg = pipe.generate(&text_only, &Observer::new()).map(|_| ()).expect_err("refused").to_string();
    assert!(msg.contains("for mask_image but received none"), "{msg}");
}

/// The refiner (text_encoder_2 only, aesthetic scores in the time ids) from denoising_start 0.6:
/// from the image's latents without noise, the known region put back after every step; and the
/// handoff of diffusers' SDXL inpainting docs: the base's latents at denoising_end 0.6 (as
/// `latents`, no image) continued by the refiner from denoising_start 0.6, the known region blended
/// from those latents.
#[test]
fn sdxl_refiner_inpainting_from_denoising_start_matches_diffusers() {
    let pipe = load_cpu(&fixtures().join("tiny-sdxl-refiner"));
    golden("refiner_start").check(&pipe);
    let handoff = golden("refiner_handoff");
    assert!(handoff.json["image"].is_null());
    handoff.check(&pipe);
    // With an image too, the latents would be ambiguous; an inpainting UNet needs the masked image.
    let both = GenerateOptions { image: Some(fixture_image("images/input.png")), ..handoff.options() };
    let msg = pipe.generate(&both, &Observer::new()).map(|_| ()).expect_err("refused").to_string();
    assert!(msg.contains("Expected image or latents with mask_image and denoising_start, not both"), "{msg}");
    let folder = common::fixture_with_unet("tiny-sdxl", "tiny-sdxl-inpaint");
    let msg = load_cpu(folder.path()).generate(&handoff.options(), &Observer::new()).map(|_| ()).expect_err("refused");
    assert!(msg.to_string().contains("Expected image with an inpainting UNet"), "{msg}");
}

/// The caller's `latents` (diffusers' `latents`: the noise, in place of a draw; the run starts from
/// them scaled by init_noise_sigma, whatever the strength), with both UNets, through the `vae` load
/// option's low-variance VAE (the goldens test/sdxl-inpaint.test.ts compares the API's images with).
#[test]
fn sdxl_inpainting_from_given_latents_matches_diffusers() {
    let vae = fixtures().join("tiny-sdxl-inpaint/vae-low-variance");
    let load_with_vae = |dir: &Path| {
        let options = LoadOptions {
            device: DeviceRequest::Cpu,
            dtype: DTypeRequest::F32,
            vae: Some(vae.clone()),
            ..Default::default()
        };
        StableDiffusionPipeline::load(dir, &options).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
    };
    let folder = common::fixture_with_unet("tiny-sdxl", "tiny-sdxl-inpaint");
    golden("api_9ch").check(&load_with_vae(folder.path()));
    golden("api_4ch").check(&load_with_vae(&fixtures().join("tiny-sdxl")));
}

/// The inpainting checks SD1.5's path makes name the same options on SDXL, and the pipeline stays
/// usable after them.
#[test]
fn sdxl_inpainting_inputs_are_checked() {
    let pipe = load_cpu(&fixtures().join("tiny-sdxl"));
    let base = GenerateOptions {
        prompt: vec!["a red apple".into()],
        num_inference_steps: 2,
        image: Some(fixture_image("images/input.png")),
        mask_image: Some(fixture_image("images/mask.png")),
        seed: Some(2),
        ..Default::default()
    };
    let error = |o: GenerateOptions| pipe.generate(&o, &Observer::new()).map(|_| ()).expect_err("refused").to_string();
    let msg = error(GenerateOptions { mask_image: Some(fixture_image("images/orientation6.jpg")), ..base.clone() });
    assert!(msg.contains("mask_image") && msg.contains("mask of the image's size"), "{msg}");
    let msg = error(GenerateOptions { image: None, ..base.clone() });
    assert!(msg.contains("for image but received none"), "{msg}");
    let msg = error(GenerateOptions { strength: Some(1.5), ..base.clone() });
    assert!(msg.contains("for strength but received 1.5"), "{msg}");
    let msg = error(GenerateOptions { strength: Some(0.1), ..base.clone() });
    assert!(msg.contains("strength x num_inference_steps >= 1"), "{msg}");
    let msg = error(GenerateOptions { denoising_start: Some(0.9999), ..base.clone() });
    assert!(msg.contains("denoising_start"), "{msg}");
    let latents = LatentsInput { shape: [1, 4, 8, 8], data: vec![0.0; 256] };
    let msg = error(GenerateOptions { latents: Some(latents.clone()), ..base.clone() });
    assert!(
        msg.contains("Expected latents of shape [1, 4, 16, 16] for latents but received shape [1, 4, 8, 8]"),
        "{msg}"
    );
    let msg = error(GenerateOptions { latents: Some(latents.clone()), denoising_start: Some(0.5), ..base.clone() });
    assert!(msg.contains("image or latents with mask_image and denoising_start, not both"), "{msg}");
    // Without an image, latents of the wrong size are named (the handoff's latents are the image).
    let msg = error(GenerateOptions {
        latents: Some(latents),
        denoising_start: Some(0.5),
        image: None,
        width: Some(32),
        ..base.clone()
    });
    assert!(msg.contains("Expected latents of shape [1, 4, 8, 16] for latents"), "{msg}");
    let out = pipe.generate(&base, &Observer::new()).expect("inpaints after the errors");
    assert_eq!((out.images[0].width, out.images[0].height), (32, 32));
    assert_eq!(out.settings.strength, Some(0.9999));
}

/// In f16 (the GPU's dtype; f32 weights converted at load) SDXL inpainting stays close to
/// diffusers' f32 image: the VAE encodes and decodes in f32 (`force_upcast`), the mask channels and
/// the known region's blend follow the model's dtype.
#[test]
fn sdxl_inpainting_in_f16_stays_close_to_diffusers_f32() {
    let load_f16 = |dir: &Path| {
        let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F16, ..Default::default() };
        StableDiffusionPipeline::load(dir, &options).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
    };
    let folder = common::fixture_with_unet("tiny-sdxl", "tiny-sdxl-inpaint");
    for (name, dir) in [("4ch", fixtures().join("tiny-sdxl")), ("9ch", folder.path().to_path_buf())] {
        let g = golden(name);
        let out = load_f16(&dir).generate_with_noise(&g.options(), &Observer::new(), &mut g.replay()).unwrap();
        let want = g.tensors["image_u8"].flatten_all().unwrap().to_vec1::<u8>().unwrap();
        let worst = out.images[0].data.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        eprintln!("{} in f16: worst channel difference {worst}/255", g.name);
        assert!(worst <= 12, "{}: f16 differs from diffusers' f32 image by {worst}/255", g.name);
    }
}

/// Each image of an SDXL inpainting batch (two prompts, a seed each) is the image its seed makes
/// alone: the time ids, mask and known region are repeated per image, each image's draws are its own.
#[test]
fn sdxl_inpainting_batches_give_each_image_what_its_seed_makes_alone() {
    let folder = common::fixture_with_unet("tiny-sdxl", "tiny-sdxl-inpaint");
    for dir in [fixtures().join("tiny-sdxl"), folder.path().to_path_buf()] {
        let pipe = load_cpu(&dir);
        let call = |prompt: Vec<String>, seeds: Vec<u64>| GenerateOptions {
            prompt,
            num_inference_steps: 3,
            image: Some(fixture_image("images/input.png")),
            mask_image: Some(fixture_image("images/mask.png")),
            strength: Some(0.7),
            seeds: Some(seeds),
            ..Default::default()
        };
        let batch = pipe
            .generate(&call(vec!["a red apple".into(), "a blue bird".into()], vec![7, 9]), &Observer::new())
            .unwrap();
        assert_ne!(batch.images[0].data, batch.images[1].data);
        for (i, (prompt, seed)) in [("a red apple", 7), ("a blue bird", 9)].into_iter().enumerate() {
            let alone = pipe.generate(&call(vec![prompt.into()], vec![seed]), &Observer::new()).unwrap();
            let off =
                alone.images[0].data.iter().zip(&batch.images[i].data).filter(|(a, b)| a.abs_diff(**b) > 1).count();
            assert_eq!(off, 0, "{}: image {i} differs from its seed's image alone", dir.display());
        }
    }
}
