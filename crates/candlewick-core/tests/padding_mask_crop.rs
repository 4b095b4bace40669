//! Inpainting with `padding_mask_crop` against diffusers, on the tiny models (SD 1.5 with 4- and
//! 9-channel UNets, and SDXL's StableDiffusionXLInpaintPipeline on tiny-sdxl).
//!
//! Goldens: test/fixtures/goldens/mask_crop_<case>.{json,safetensors}, made by
//! scripts/fixture_padding_mask_crop.py: StableDiffusionInpaintPipeline(image=images/input.png,
//! mask_image, padding_mask_crop, width, height, strength, generator=manual_seed(0)) with every
//! torch.randn draw recorded (`noise_k`, replayed here), the latents after every UNet call, the crop
//! box, the processed image and mask, the image handed to `apply_overlay` and the output.
//!
//! What is exact: the crop box (integer arithmetic), the processed image and mask (PIL's crop,
//! Lanczos resize and edge fill, reproduced to the byte) and the overlay (PIL's paste, resize and
//! alpha composite, to the byte, from diffusers' own decoded image). The run's own image is within
//! 1/255 of diffusers' (as every pipeline golden); the overlay's Lanczos resize of it can carry
//! that to at most 2/255 in the pasted region, the bound checked on the output.

mod common;

use std::collections::HashMap;

use candle_core::Tensor;
use candlewick_core::pipeline::{overlay, preprocess_mask_crop, CropRegion, GenerateOptions, ImageInput, RgbImage};
use common::{assert_close, fixture_image, fixtures, goldens, load_cpu};

struct Golden {
    json: serde_json::Value,
    tensors: HashMap<String, Tensor>,
}

const CASES: [&str; 4] =
    ["mask_crop_ddim_4ch_wide", "mask_crop_ddim_4ch_narrow", "mask_crop_euler_9ch_tall", "mask_crop_sdxl_4ch_wide"];

fn golden(name: &str) -> Golden {
    let text = std::fs::read_to_string(fixtures().join("goldens").join(format!("{name}.json"))).unwrap();
    Golden { json: serde_json::from_str(&text).unwrap(), tensors: goldens(name) }
}

impl Golden {
    fn str(&self, key: &str) -> &str {
        self.json[key].as_str().unwrap()
    }
    fn usize(&self, key: &str) -> usize {
        self.json[key].as_u64().unwrap() as usize
    }
    fn options(&self) -> GenerateOptions {
        let j = &self.json;
        GenerateOptions {
            prompt: vec![self.str("prompt").into()],
            negative_prompt: Some(vec![self.str("negative_prompt").into()]),
            num_inference_steps: self.usize("steps"),
            guidance_scale: j["guidance_scale"].as_f64().unwrap(),
            width: Some(self.usize("width")),
            height: Some(self.usize("height")),
            scheduler: j["scheduler"].as_object().cloned().unwrap_or_default(),
            image: Some(fixture_image(self.str("image"))),
            mask_image: Some(fixture_image(self.str("mask_image"))),
            strength: j["strength"].as_f64(),
            padding_mask_crop: Some(self.usize("padding_mask_crop")),
            seed: Some(0),
            ..Default::default()
        }
    }
    fn crop(&self) -> CropRegion {
        let c: Vec<usize> =
            self.json["crops_coords"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        CropRegion { x1: c[0], y1: c[1], x2: c[2], y2: c[3] }
    }
    fn rgb(&self, key: &str) -> RgbImage {
        let t = &self.tensors[key];
        let (height, width, _) = t.dims3().unwrap();
        RgbImage { width, height, data: t.flatten_all().unwrap().to_vec1::<u8>().unwrap() }
    }
}

/// get_crop_region and preprocess(crops_coords, resize_mode="fill") of the image and the mask.
#[test]
fn crop_box_and_processed_inputs_match_diffusers() {
    for name in CASES {
        let g = golden(name);
        let (crop, image, mask) = preprocess_mask_crop(
            &fixture_image(g.str("image")),
            &fixture_image(g.str("mask_image")),
            g.usize("width"),
            g.usize("height"),
            g.usize("padding_mask_crop"),
        )
        .unwrap();
        assert_eq!(crop, g.crop(), "{name}: crops_coords");
        assert_close(&format!("{name} init_image"), &image, &g.tensors["init_image"], 1e-6);
        assert_close(&format!("{name} mask_condition"), &mask, &g.tensors["mask_condition"], 0.0);
    }
}

/// apply_overlay of diffusers' own decoded image gives diffusers' output, to the byte.
#[test]
fn overlay_matches_diffusers_to_the_byte() {
    for name in CASES {
        let g = golden(name);
        let out = overlay(
            &fixture_image(g.str("image")),
            &fixture_image(g.str("mask_image")),
            &g.rgb("generated_u8"),
            g.crop(),
        )
        .unwrap();
        let want = g.rgb("image_u8");
        assert_eq!((out.width, out.height), (want.width, want.height), "{name}: size");
        let off = out.data.iter().zip(&want.data).filter(|(a, b)| a != b).count();
        assert_eq!(off, 0, "{name}: {off} channel values differ from diffusers' output");
    }
}

/// The whole call: every draw, every UNet call's latents (1e-4 relative), and the output within
/// 2/255 of diffusers', at the original image's size.
#[test]
fn inpainting_with_padding_mask_crop_matches_diffusers() {
    let tiny = load_cpu(&fixtures().join("tiny-sd"));
    let folder = common::fixture_with_unet("tiny-sd", "tiny-sd-inpaint");
    let inpainting = load_cpu(folder.path());
    let sdxl = load_cpu(&fixtures().join("tiny-sdxl"));
    for name in CASES {
        let g = golden(name);
        let pipe = match g.str("model") {
            "tiny-sd-inpaint" => &inpainting,
            "tiny-sdxl" => &sdxl,
            _ => &tiny,
        };
        let out = common::check_call_within(name, pipe, &g.options(), &g.json, &g.tensors, 2);
        let want = g.rgb("image_u8");
        assert_eq!((out.images[0].width, out.images[0].height), (want.width, want.height), "{name}: size");
        let worst = out.images[0].data.iter().zip(&want.data).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        eprintln!("{name}: output within {worst}/255 of diffusers'");
        assert!(worst <= 2, "{name}: the output is {worst}/255 from diffusers'");
        assert_eq!(out.settings.padding_mask_crop, Some(g.usize("padding_mask_crop")));
        assert_eq!((out.settings.width, out.settings.height), (g.usize("width"), g.usize("height")));
    }
}

/// Errors name the option, the value and what is allowed; the pipeline stays usable after them.
#[test]
fn bad_padding_mask_crop_calls_are_refused_and_the_pipeline_stays_usable() {
    let pipe = load_cpu(&fixtures().join("tiny-sd"));
    let base = || GenerateOptions {
        prompt: vec!["a cat".into()],
        num_inference_steps: 2,
        image: Some(fixture_image("images/input.png")),
        mask_image: Some(fixture_image("images/mask.png")),
        padding_mask_crop: Some(4),
        seed: Some(1),
        ..Default::default()
    };
    let error = |o: GenerateOptions| pipe.generate(&o, &Default::default()).expect_err("refused").to_string();
    let e = error(GenerateOptions { mask_image: None, ..base() });
    assert!(e.contains("padding_mask_crop 4") && e.contains("mask_image") && e.contains("none"), "{e}");
    let e = error(GenerateOptions { image: None, mask_image: None, ..base() });
    assert!(e.contains("padding_mask_crop 4"), "{e}");
    let e = error(GenerateOptions { output_latents: true, ..base() });
    assert!(e.contains("latents are the output") && e.ends_with("for padding_mask_crop but received 4"), "{e}");
    let black = ImageInput::Raw { width: 32, height: 32, channels: 1, data: vec![0; 32 * 32] };
    let e = error(GenerateOptions { mask_image: Some(black), ..base() });
    assert!(e.contains("mask_image") && e.contains("nonzero pixel") && e.contains("padding_mask_crop"), "{e}");
    let small = ImageInput::Raw { width: 16, height: 16, channels: 1, data: vec![255; 16 * 16] };
    let e = error(GenerateOptions { mask_image: Some(small), ..base() });
    assert!(e.contains("mask_image") && e.contains("32x32") && e.contains("16x16"), "{e}");
    // Still usable: the same call with good inputs runs and comes out at the image's size.
    let out = pipe.generate(&base(), &Default::default()).unwrap();
    assert_eq!((out.images[0].width, out.images[0].height), (32, 32));
}
