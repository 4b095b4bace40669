//! Regression tests for what fuzzing (fuzz/, `cargo +nightly fuzz run <target>`) found, one test
//! per finding, named after it. The fuzz targets need nightly Rust; these run with `cargo test`.
//! Fixtures: test/fixtures/tiny-sd, made by scripts/make_fixtures.py.

mod common;

use std::fs;

use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::models::vae::AutoencoderKLConfig;
use candlewick_core::pipeline::{LoadOptions, StableDiffusionPipeline};

/// fuzz target `config`: a VAE config with 65 or more blocks made `scale_factor()` shift past
/// the width of usize (a panic with overflow checks, a wrong factor without).
#[test]
fn config_vae_with_70_blocks_has_no_overflowing_scale_factor() {
    let json = format!("{{\"block_out_channels\": {:?}}}", vec![64; 70]);
    let cfg: AutoencoderKLConfig = serde_json::from_str(&json).expect("parses");
    assert_eq!(cfg.scale_factor(), usize::MAX);
    let four: AutoencoderKLConfig = serde_json::from_str(r#"{"block_out_channels": [1, 2, 3, 4]}"#).expect("parses");
    assert_eq!(four.scale_factor(), 8);

    // Loading such a folder is an error naming the VAE's weights, not a panic.
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("tiny-sd");
    copy(&common::fixtures().join("tiny-sd"), &root);
    let types = format!("{:?}", vec!["DownEncoderBlock2D"; 70]);
    let up = format!("{:?}", vec!["UpDecoderBlock2D"; 70]);
    let vae = format!(
        "{{\"block_out_channels\": {:?}, \"down_block_types\": {types}, \"up_block_types\": {up}, \"norm_num_groups\": 32}}",
        vec![64; 70]
    );
    fs::write(root.join("vae/config.json"), vae).expect("write");
    let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() };
    let error = StableDiffusionPipeline::load(&root, &options).err().expect("does not load");
    assert_eq!(error.code(), "ERR_CANDLEWICK_MODEL");
    assert!(error.to_string().contains("vae/diffusion_pytorch_model.safetensors: "), "{error}");
}

/// The same overflow one step later: the UNet's sample_size times the VAE's scale factor gave
/// the default image size.
#[test]
fn config_unet_sample_size_times_the_scale_factor_does_not_overflow() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("tiny-sd");
    copy(&common::fixtures().join("tiny-sd"), &root);
    let unet_path = root.join("unet/config.json");
    let mut unet: serde_json::Value = serde_json::from_str(&fs::read_to_string(&unet_path).unwrap()).unwrap();
    unet["sample_size"] = serde_json::json!(u64::MAX / 2 + 1);
    fs::write(&unet_path, unet.to_string()).unwrap();
    let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() };
    let error = StableDiffusionPipeline::load(&root, &options).err().expect("does not load");
    assert_eq!(
        error.to_string(),
        format!("{}: sample_size {} times the VAE's scale factor 2 overflows", unet_path.display(), u64::MAX / 2 + 1)
    );
}

fn copy(from: &std::path::Path, to: &std::path::Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy(&entry.path(), &target);
        } else if !entry.file_name().to_string_lossy().ends_with(".fp16.safetensors") {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}
