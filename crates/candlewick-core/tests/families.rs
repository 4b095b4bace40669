//! The model families beyond SD1.x against diffusers, on tiny models: SD 2.x (v-prediction, linear
//! projections, gelu CLIP), SD-Turbo's one trailing step without guidance, LCM (the guidance
//! embedding) and SDXL (two text encoders, added time and text conditions).
//!
//! Goldens: test/fixtures/goldens/family_<name>.{json,safetensors} and the folders tiny-sd2,
//! tiny-lcm, tiny-sdxl, made by scripts/fixture_families.py (through `scripts/make_fixtures.py
//! --families-only`): each golden is one diffusers pipeline call with generator=manual_seed(0),
//! every torch.randn draw recorded (`noise_k`, replayed here) and the latents after every UNet call.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::pipeline::{
    GenerateOptions, ImageInput, LatentsInput, LoadOptions, Observer, SizeConditions, StableDiffusionPipeline,
};
use common::{assert_close, fixtures, goldens};

struct Golden {
    name: String,
    json: serde_json::Value,
    tensors: HashMap<String, Tensor>,
}

fn golden(name: &str) -> Golden {
    let name = format!("family_{name}");
    let text = std::fs::read_to_string(fixtures().join("goldens").join(format!("{name}.json"))).unwrap();
    Golden { json: serde_json::from_str(&text).unwrap(), tensors: goldens(&name), name }
}

fn load(model: &str) -> StableDiffusionPipeline {
    let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() };
    StableDiffusionPipeline::load(&fixtures().join(model), &options).unwrap_or_else(|e| panic!("{model}: {e}"))
}

fn pair(value: &serde_json::Value) -> Option<[usize; 2]> {
    let v = value.as_array()?;
    Some([v.first()?.as_u64()? as usize, v.get(1)?.as_u64()? as usize])
}

impl Golden {
    /// The call diffusers made, as Candlewick options.
    fn options(&self) -> GenerateOptions {
        let j = &self.json;
        GenerateOptions {
            clip_skip: j["clip_skip"].as_u64().map(|k| k as usize),
            denoising_end: j["denoising_end"].as_f64(),
            size_conditions: SizeConditions {
                original_size: pair(&j["original_size"]),
                crops_coords_top_left: pair(&j["crops_coords_top_left"]).unwrap_or_default(),
                target_size: pair(&j["target_size"]),
                negative_original_size: pair(&j["negative_original_size"]),
                negative_crops_coords_top_left: pair(&j["negative_crops_coords_top_left"]).unwrap_or_default(),
                negative_target_size: pair(&j["negative_target_size"]),
                aesthetic_score: j["aesthetic_score"].as_f64().unwrap_or(6.0),
                negative_aesthetic_score: j["negative_aesthetic_score"].as_f64().unwrap_or(2.5),
            },
            denoising_start: j["denoising_start"].as_f64(),
            strength: j["strength"].as_f64(),
            image: j["image"].as_str().map(|p| ImageInput::Encoded(std::fs::read(fixtures().join(p)).unwrap())),
            latents: j["image_latents"].as_str().map(|name| {
                let t = &goldens(name)["latents"];
                LatentsInput { shape: t.dims4().unwrap().into(), data: t.flatten_all().unwrap().to_vec1().unwrap() }
            }),
            prompt: vec![j["prompt"].as_str().unwrap().into()],
            negative_prompt: j["negative_prompt"].as_str().map(|n| vec![n.into()]),
            prompt_2: j["prompt_2"].as_str().map(|n| vec![n.into()]),
            negative_prompt_2: j["negative_prompt_2"].as_str().map(|n| vec![n.into()]),
            num_inference_steps: j["num_inference_steps"].as_u64().unwrap() as usize,
            guidance_scale: j["guidance_scale"].as_f64().unwrap(),
            scheduler: j["scheduler"].as_object().cloned().unwrap_or_default(),
            seed: Some(0),
            ..Default::default()
        }
    }

    /// Run it on `pipe`: every UNet call's latents within 1e-4 relative, the image within 1/255.
    fn check(&self, pipe: &StableDiffusionPipeline, options: &GenerateOptions) {
        self.check_warned(pipe, options);
    }

    /// `check`, giving back the call's warnings.
    fn check_warned(&self, pipe: &StableDiffusionPipeline, options: &GenerateOptions) -> Vec<String> {
        common::check_call(&self.name, pipe, options, &self.json, &self.tensors).warnings
    }
}

/// SD 2.x: v-prediction with the folder's DDIM, and with Euler swapped in; gelu CLIP, linear
/// projections, per-block head counts, upcast_attention; and clip_skip 1 (the penultimate layer
/// through final_layer_norm).
#[test]
fn sd2_v_prediction_matches_diffusers() {
    let pipe = load("tiny-sd2");
    for name in ["sd2_ddim", "sd2_euler", "sd2_clip_skip"] {
        let g = golden(name);
        g.check(&pipe, &g.options());
    }
}

/// SD-Turbo: one trailing Euler step with guidance 0 runs the UNet once per image (no
/// unconditional pass) and matches diffusers.
#[test]
fn turbo_one_trailing_step_without_guidance_matches_diffusers() {
    let pipe = load("tiny-sd2");
    let g = golden("sd2_turbo");
    assert_eq!(g.json["timesteps"], serde_json::json!([999.0]), "trailing spacing starts at the last timestep");
    g.check(&pipe, &g.options());
}

/// LCM: the UNet's `time_cond_proj_dim` guidance embedding (w = guidance_scale - 1), no
/// unconditional pass, LCMScheduler's noise between steps; LatentConsistencyModelPipeline's folder.
#[test]
fn lcm_guidance_embedding_matches_diffusers() {
    let pipe = load("tiny-lcm");
    let g = golden("lcm");
    g.check(&pipe, &g.options());
    // The last step's latents are the denoised sample diffusers decodes.
    let last = g.json["unet_calls"].as_u64().unwrap() - 1;
    assert_close("denoised", &g.tensors[&format!("latents_step_{last}")], &g.tensors["denoised"], 0.0);
}

/// SDXL base: two text encoders (penultimate states concatenated, pooled text embeddings of the
/// second), `text_time` added conditions, per-block transformer depths, the VAE's force_upcast;
/// with a negative prompt and Euler, and without one (zero negative embeddings) with the size
/// conditions, clip_skip and DDIM; and stopped at `denoising_end` (3 of 5 Euler steps).
#[test]
fn sdxl_matches_diffusers() {
    let pipe = load("tiny-sdxl");
    for name in ["sdxl_euler", "sdxl_ddim_sized", "sdxl_denoising_end"] {
        let g = golden(name);
        g.check(&pipe, &g.options());
    }
}

/// SDXL's second prompts (goldens: scripts/fixture_sdxl_prompt_2.py): `prompt_2` through the second
/// text encoder and `negative_prompt_2` through it for the unconditional pass; without
/// `negative_prompt`, force_zeros_for_empty_prompt zeros the unconditional embeddings and
/// `negative_prompt_2` has no effect (with clip_skip 1, which skips both encoders' prompts alike);
/// the refiner reads `prompt` alone. Each as diffusers does it, and a warning where one is ignored.
#[test]
fn sdxl_second_prompts_match_diffusers() {
    let base = load("tiny-sdxl");
    let g = golden("sdxl_prompt_2");
    let options = g.options();
    assert!(options.prompt_2.is_some() && options.negative_prompt_2.is_some());
    assert_eq!(g.check_warned(&base, &options), Vec::<String>::new());
    // Without them the run is another one (the goldens are not those of prompt_2 = prompt).
    let without = GenerateOptions { prompt_2: None, negative_prompt_2: None, ..options.clone() };
    let mut noise = common::replay(&g.json, &g.tensors);
    let other = base.generate_with_noise(&without, &Observer::new(), &mut noise).unwrap();
    let want = g.tensors["image_u8"].flatten_all().unwrap().to_vec1::<u8>().unwrap();
    assert!(other.images[0].data.iter().zip(&want).any(|(a, b)| a.abs_diff(*b) > 1), "prompt_2 changed nothing");
    // One second prompt stands for every prompt; the same text as prompt is the run without it.
    let two = |o: &GenerateOptions| GenerateOptions {
        prompt: vec![o.prompt[0].clone(); 2],
        num_inference_steps: 1,
        seed: Some(3),
        ..o.clone()
    };
    let a = base.generate(&two(&options), &Observer::new()).unwrap();
    let per_prompt =
        GenerateOptions { prompt_2: options.prompt_2.clone().map(|p| vec![p[0].clone(); 2]), ..two(&options) };
    let b = base.generate(&per_prompt, &Observer::new()).unwrap();
    assert_eq!(a.images[0].data, b.images[0].data);
    let same = GenerateOptions { prompt_2: Some(options.prompt.clone()), negative_prompt_2: None, ..two(&options) };
    let c = base.generate(&same, &Observer::new()).unwrap();
    let d =
        base.generate(&GenerateOptions { prompt_2: None, negative_prompt_2: None, ..two(&options) }, &Observer::new());
    assert_eq!(c.images[0].data, d.unwrap().images[0].data);

    let g = golden("sdxl_prompt_2_zeros");
    let options = g.options();
    assert!(options.negative_prompt.is_none() && options.negative_prompt_2.is_some());
    let warnings = g.check_warned(&base, &options);
    assert!(
        warnings.len() == 1 && warnings[0].starts_with("negative_prompt_2 has no effect without negative_prompt"),
        "{warnings:?}"
    );

    let refiner = load("tiny-sdxl-refiner");
    let g = golden("sdxl_refiner_prompt_2");
    let warnings = g.check_warned(&refiner, &g.options());
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with("prompt_2 has no effect on this model"), "{warnings:?}");
    assert!(warnings[1].contains("its text_encoder_2 reads negative_prompt"), "{warnings:?}");
}

/// SDXL's options are refused by name on other models, and out of range everywhere.
#[test]
fn family_options_are_checked() {
    let sd2 = load("tiny-sd2");
    let error = |pipe: &StableDiffusionPipeline, o: GenerateOptions| {
        pipe.generate(&o, &Observer::new()).map(|_| ()).expect_err("refused").to_string()
    };
    let base = GenerateOptions { num_inference_steps: 1, ..Default::default() };
    let sized = SizeConditions { target_size: Some([64, 64]), ..Default::default() };
    let msg = error(&sd2, GenerateOptions { size_conditions: sized, ..base.clone() });
    assert!(msg.contains("for target_size but received a model without size conditions"), "{msg}");
    let msg = error(&sd2, GenerateOptions { denoising_end: Some(0.5), ..base.clone() });
    assert!(msg.contains("for denoising_end but received a model without it"), "{msg}");
    let msg = error(&sd2, GenerateOptions { clip_skip: Some(5), ..base.clone() });
    assert!(
        msg.contains("Expected integer between 0 and 4 (the text encoder's layers) for clip_skip but received 5"),
        "{msg}"
    );
    let msg = error(&sd2, GenerateOptions { prompt_2: Some(vec!["a cat".into()]), ..base.clone() });
    assert_eq!(
        msg,
        "Expected an SDXL model (StableDiffusionXLPipeline, with a second text encoder) for prompt_2 but received a model with one text encoder"
    );
    let msg = error(&sd2, GenerateOptions { negative_prompt_2: Some(vec!["dark".into()]), ..base.clone() });
    assert!(msg.contains("for negative_prompt_2 but received a model with one text encoder"), "{msg}");
    sd2.generate(&GenerateOptions { seed: Some(1), ..base.clone() }, &Observer::new()).expect("sd2 still generates");
    let sdxl = load("tiny-sdxl");
    let three = GenerateOptions {
        prompt: vec!["a".into(), "b".into()],
        prompt_2: Some(vec![String::new(); 3]),
        ..base.clone()
    };
    let msg = error(&sdxl, three);
    assert!(msg.contains("Expected 1 or 2 prompts (one per prompt) for prompt_2 but received 3 prompts"), "{msg}");
    let bad = SizeConditions { original_size: Some([0, 64]), ..Default::default() };
    let msg = error(&sdxl, GenerateOptions { size_conditions: bad, ..base.clone() });
    assert!(msg.contains("for original_size but received [0, 64]"), "{msg}");
    let msg = error(&sdxl, GenerateOptions { clip_skip: Some(4), ..base.clone() });
    assert!(msg.contains("between 0 and 3"), "{msg}");
    // The pipeline stays usable after an error.
    sdxl.generate(&GenerateOptions { seed: Some(1), ..base }, &Observer::new()).expect("generates");
}

/// In f16 (the GPU's dtype; f32 weights converted at load) every family runs and stays close to
/// its f32 image: the added conditions, the guidance embedding and the pooled text follow the
/// model's dtype, and SDXL's VAE decodes in f32 (`force_upcast`), loaded in f32 only.
#[test]
fn families_run_in_f16_close_to_f32() {
    for (model, name, vae) in [
        ("tiny-sd2", "sd2_euler", DType::F16),
        ("tiny-lcm", "lcm", DType::F16),
        ("tiny-sdxl", "sdxl_ddim_sized", DType::F32),
    ] {
        let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F16, ..Default::default() };
        let pipe = StableDiffusionPipeline::load(&fixtures().join(model), &options).unwrap();
        assert_eq!(pipe.vae_dtype(), vae, "{model}'s VAE in f16");
        let g = golden(name);
        let mut noise = common::replay(&g.json, &g.tensors);
        let out = pipe
            .generate_with_noise(&g.options(), &Observer::new(), &mut noise)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = g.tensors["image_u8"].flatten_all().unwrap().to_vec1::<u8>().unwrap();
        let worst = out.images[0].data.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        eprintln!("{name} in f16: worst channel difference {worst}/255");
        assert!(worst <= 12, "{name}: f16 image differs from diffusers' f32 by up to {worst}/255");
    }
}

/// The `vae` load option: another VAE folder decodes instead of the model's own (here tiny-sd2's,
/// without force_upcast); a folder that is not there is an error naming it and what the option takes.
#[test]
fn a_vae_folder_replaces_the_models_vae() {
    let options = |vae: Option<&str>| LoadOptions {
        device: DeviceRequest::Cpu,
        dtype: DTypeRequest::F32,
        vae: vae.map(|v| fixtures().join(v)),
        ..Default::default()
    };
    let call = GenerateOptions { num_inference_steps: 1, seed: Some(4), ..Default::default() };
    let own = StableDiffusionPipeline::load(&fixtures().join("tiny-sdxl"), &options(None)).unwrap();
    let other = StableDiffusionPipeline::load(&fixtures().join("tiny-sdxl"), &options(Some("tiny-sd2/vae"))).unwrap();
    let a = own.generate(&call, &Observer::new()).unwrap();
    let b = other.generate(&call, &Observer::new()).unwrap();
    assert_ne!(a.images[0].data, b.images[0].data, "the other VAE decoded the same image");
    let missing = StableDiffusionPipeline::load(&fixtures().join("tiny-sdxl"), &options(Some("no-such-vae")));
    let msg = missing.err().expect("a missing VAE folder is an error").to_string();
    assert!(msg.contains("no-such-vae") && msg.contains("VAE folder or .safetensors file"), "{msg}");
}

/// SDXL's refiner (StableDiffusionXLImg2ImgPipeline, text_encoder_2 only, aesthetic scores in the
/// size conditions): image to image from a picture, and the handoff from the base's latents at
/// denoising_end 0.6 continued from denoising_start 0.6 (no noise added).
#[test]
fn sdxl_refiner_matches_diffusers() {
    let pipe = load("tiny-sdxl-refiner");
    for name in ["sdxl_refiner_img2img", "sdxl_refiner_handoff"] {
        let g = golden(name);
        g.check(&pipe, &g.options());
    }
}
