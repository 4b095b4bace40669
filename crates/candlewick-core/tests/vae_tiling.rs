//! The VAE's tiled and sliced decode against diffusers' `AutoencoderKL.enable_tiling()` /
//! `enable_slicing()` on tiny-sd's VAE.
//!
//! Goldens: test/fixtures/goldens/vae_tiling.{json,safetensors}, made by
//! scripts/fixture_vae_tiling.py (scripts/make_fixtures.py --vae-tiling-only): tiles of 8 latent
//! cells (16 pixels), a quarter overlapping, so that 20x20 latents take nine tiles.

mod common;

use candle_core::DType;
use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::models::vae::AutoencoderKL;
use candlewick_core::models::vae_tiling::VaeTiling;
use candlewick_core::pipeline::{GenerateOptions, LoadOptions, Observer, StableDiffusionPipeline};
use common::{assert_close, fixtures, goldens, load};

fn golden_tiling() -> VaeTiling {
    let text = std::fs::read_to_string(fixtures().join("goldens/vae_tiling.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    VaeTiling {
        tile_latent_min_size: json["tile_latent_min_size"].as_u64().unwrap() as usize,
        tile_sample_min_size: json["tile_sample_min_size"].as_u64().unwrap() as usize,
        tile_overlap_factor: json["tile_overlap_factor"].as_f64().unwrap(),
    }
}

#[test]
fn tiled_and_sliced_decodes_match_diffusers() {
    let (vae, _) = load("vae", "diffusion_pytorch_model", DType::F32, AutoencoderKL::new);
    let g = goldens("vae_tiling");
    let tiling = golden_tiling();
    let tiled = vae.decode_with(&g["tiled_in"], Some(&tiling), false).unwrap();
    assert_close("tiled_out", &tiled, &g["tiled_out"], 1e-5);
    let sliced = vae.decode_with(&g["sliced_in"], Some(&tiling), true).unwrap();
    assert_close("sliced_out", &sliced, &g["sliced_out"], 1e-5);
    // The tiles matter: an untiled decode of the same latents is another image.
    let whole = vae.decode(&g["tiled_in"]).unwrap();
    let (rel, _, _) = common::rel_error(&whole, &g["tiled_out"]);
    assert!(rel > 1e-3, "the untiled decode equals the tiled one ({rel})");
}

/// A call with tiling and slicing decodes large latents in tiles (tiny-sd's tiles: 64 pixels).
#[test]
fn a_call_can_ask_for_tiles_and_slices() {
    let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() };
    let pipe = StableDiffusionPipeline::load(&fixtures().join("tiny-sd"), &options).unwrap();
    let call = |vae_tiling| GenerateOptions {
        prompt: vec!["a red apple".into()],
        num_inference_steps: 1,
        width: Some(96),
        height: Some(80),
        num_images_per_prompt: 2,
        seed: Some(2),
        vae_tiling,
        vae_slicing: vae_tiling,
        ..Default::default()
    };
    let tiled = pipe.generate(&call(true), &Observer::new()).unwrap();
    let whole = pipe.generate(&call(false), &Observer::new()).unwrap();
    assert_eq!((tiled.images[1].width, tiled.images[1].height), (96, 80));
    assert_ne!(tiled.images[0].data, whole.images[0].data, "96x80 is larger than a tile: the tiles show");
}

/// The untiled decode's largest activation, which decides when a call is sliced or tiled
/// without being asked: SD1.5's VAE (128, 256, 512, 512 channels) holds 256 channels at full
/// size, so 2048x2048 (2^30 elements) decodes whole and 4096x4096 (2^32) only in tiles; two
/// 2048x2048 images (2^31) are decoded one at a time.
#[test]
fn the_largest_decoder_activation_decides_slices_and_tiles() {
    use candlewick_core::models::vae::AutoencoderKLConfig;
    use candlewick_core::models::vae_tiling::MAX_DECODE_ELEMENTS;
    let sd15 = AutoencoderKLConfig { block_out_channels: vec![128, 256, 512, 512], ..Default::default() };
    assert_eq!(sd15.largest_decoder_activation(1, 256, 256), 256 << 22);
    assert_eq!(sd15.largest_decoder_activation(1, 512, 512), 256 << 24);
    assert_eq!(sd15.largest_decoder_activation(2, 256, 256), 512 << 22);
    assert!(sd15.largest_decoder_activation(1, 256, 256) <= MAX_DECODE_ELEMENTS);
    assert!(sd15.largest_decoder_activation(2, 256, 256) > MAX_DECODE_ELEMENTS);
    assert!(sd15.largest_decoder_activation(1, 512, 512) > MAX_DECODE_ELEMENTS);
    // The full-size level is the largest at every size; no overflow at any size.
    assert_eq!(sd15.largest_decoder_activation(1, 8, 8), 256 * 64 * 64);
    assert_eq!(sd15.largest_decoder_activation(1, 1, 1), 256 * 8 * 8);
    assert_eq!(sd15.largest_decoder_activation(usize::MAX, 1 << 20, 1 << 20), usize::MAX);
}

/// A batch of large images decodes one image at a time unasked (SDXL's 1024x1024: 2^28 elements an
/// image), a batch of small ones whole (SD1.5's 512x512: 2^26), and `vae_slicing` slices any batch.
#[test]
fn large_images_decode_one_at_a_time() {
    use candlewick_core::models::vae::AutoencoderKLConfig;
    let vae = AutoencoderKLConfig { block_out_channels: vec![128, 256, 512, 512], ..Default::default() };
    let (auto, asked) = (true, true);
    assert!(vae.decodes_one_at_a_time(4, 128, 128, !asked, auto), "SDXL 1024x1024, batch 4");
    assert!(!vae.decodes_one_at_a_time(4, 128, 128, !asked, !auto), "the A/B switch off");
    assert!(!vae.decodes_one_at_a_time(1, 128, 128, !asked, auto), "one image is one image");
    assert!(!vae.decodes_one_at_a_time(8, 64, 64, !asked, auto), "SD1.5 512x512, batch 8");
    assert!(vae.decodes_one_at_a_time(8, 64, 64, asked, auto), "asked");
    // 0.5 megapixels: 2^27 elements at 256 channels.
    assert!(vae.decodes_one_at_a_time(2, 91, 91, !asked, auto), "728x728");
    assert!(!vae.decodes_one_at_a_time(2, 91, 90, !asked, auto), "720x728");
    // Two 2048x2048 images pass the kernels' index limit together: one at a time, switch or not.
    assert!(vae.decodes_one_at_a_time(2, 256, 256, !asked, !auto));
}
