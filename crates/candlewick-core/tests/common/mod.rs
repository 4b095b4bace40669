//! Shared helpers for the model tests: fixture paths, golden loading, tensor comparison.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candlewick_core::{config, weights};

/// test/fixtures/ at the repository root (made by scripts/make_fixtures.py).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures")
}

/// The tensors of test/fixtures/goldens/<name>.safetensors, on the CPU.
pub fn goldens(name: &str) -> HashMap<String, Tensor> {
    let path = fixtures().join("goldens").join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One golden tensor by name.
pub fn golden(map: &HashMap<String, Tensor>, name: &str) -> Tensor {
    map.get(name).unwrap_or_else(|| panic!("golden tensor {name} is missing")).clone()
}

/// Build a tiny-sd component as the pipeline does: config.json, the weights file for `dtype`
/// (the fp16 variant for f16), memory-mapped.
pub fn load<T, C: serde::de::DeserializeOwned>(
    component: &str,
    stem: &str,
    dtype: DType,
    build: impl FnOnce(candle_nn::VarBuilder<'static>, &C) -> candle_core::Result<T>,
) -> (T, C) {
    let dir = fixtures().join("tiny-sd").join(component);
    let cfg: C = config::read_json(&dir.join("config.json")).unwrap_or_else(|e| panic!("{e}"));
    let path = weights::find_weights(&dir, stem, dtype).unwrap_or_else(|e| panic!("{e}"));
    if dtype == DType::F16 {
        assert!(
            path.to_string_lossy().ends_with(".fp16.safetensors"),
            "expected the fp16 variant, got {}",
            path.display()
        );
    }
    let vb = weights::open(&path, dtype, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    let model = weights::with_file(&path, || build(vb, &cfg)).unwrap_or_else(|e| panic!("{e}"));
    (model, cfg)
}

/// Relative error max|got - want| / max|want|, computed in f32.
pub fn rel_error(got: &Tensor, want: &Tensor) -> (f32, f32, f32) {
    let got = got.to_dtype(DType::F32).and_then(|t| t.flatten_all()).expect("got to f32");
    let want = want.to_dtype(DType::F32).and_then(|t| t.flatten_all()).expect("want to f32");
    let diff = (&got - &want).and_then(|d| d.abs()).and_then(|d| d.max(0)).and_then(|d| d.to_scalar::<f32>());
    let scale = want.abs().and_then(|w| w.max(0)).and_then(|w| w.to_scalar::<f32>());
    let (diff, scale) = (diff.expect("max diff"), scale.expect("max golden"));
    (diff / scale, diff, scale)
}

/// Assert max|got - want| / max|want| <= tol, after checking shapes; reports the max abs diff
/// and the scale either way.
pub fn assert_close(name: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.dims(), want.dims(), "{name}: shape {:?} but the golden is {:?}", got.dims(), want.dims());
    let (rel, diff, scale) = rel_error(got, want);
    eprintln!("{name}: max|a-b| = {diff:.3e}, max|golden| = {scale:.3e}, relative {rel:.3e} (tol {tol:.0e})");
    assert!(!rel.is_nan(), "{name}: NaN in the output");
    assert!(rel <= tol, "{name}: relative error {rel:.3e} > {tol:.0e} (max|a-b| {diff:.3e}, max|golden| {scale:.3e})");
}

/// diffusers' randn draws of one pipeline call (a golden's `noise_k`), handed out in order.
pub struct Replay(pub std::collections::VecDeque<Tensor>);

impl candlewick_core::schedulers::StepNoise for Replay {
    fn sample_like(&mut self, like: &Tensor) -> candlewick_core::Result<Tensor> {
        let next = self.0.pop_front().expect("diffusers made no more draws");
        assert_eq!(next.dims(), like.dims(), "a draw of another shape than diffusers'");
        Ok(next)
    }
}

/// The `noise_draws` draws of a golden of one pipeline call.
pub fn replay(json: &serde_json::Value, tensors: &HashMap<String, Tensor>) -> Replay {
    let draws = json["noise_draws"].as_u64().unwrap() as usize;
    Replay((0..draws).map(|k| tensors[&format!("noise_{k}")].clone()).collect())
}

/// `options` on `pipe` with the golden's draws replayed, against the golden of diffusers' call
/// (scripts/fixture_*.py): every draw used, as many UNet calls, each one's latents within 1e-4
/// relative, the image within 1/255. The output, for the caller's own checks.
pub fn check_call(
    name: &str,
    pipe: &candlewick_core::pipeline::StableDiffusionPipeline,
    options: &candlewick_core::pipeline::GenerateOptions,
    json: &serde_json::Value,
    tensors: &HashMap<String, Tensor>,
) -> candlewick_core::pipeline::GenerateOutput {
    check_call_within(name, pipe, options, json, tensors, 1)
}

/// [`check_call`] with the image within `max_diff`/255 (an output that goes through more 8-bit
/// steps after the decode, such as padding_mask_crop's resize and overlay).
pub fn check_call_within(
    name: &str,
    pipe: &candlewick_core::pipeline::StableDiffusionPipeline,
    options: &candlewick_core::pipeline::GenerateOptions,
    json: &serde_json::Value,
    tensors: &HashMap<String, Tensor>,
    max_diff: u8,
) -> candlewick_core::pipeline::GenerateOutput {
    let (observer, seen) = step_recorder();
    let mut noise = replay(json, tensors);
    let out = pipe.generate_with_noise(options, &observer, &mut noise).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(noise.0.is_empty(), "{name}: {} of diffusers' draws were not used", noise.0.len());
    let calls = json["unet_calls"].as_u64().unwrap() as usize;
    assert_like_golden(name, &seen.lock().unwrap(), &out.images[0].data, tensors, "", calls, max_diff);
    out
}

/// An observer that keeps each step's latents, and the list it fills.
pub fn step_recorder() -> (candlewick_core::pipeline::Observer, std::sync::Arc<std::sync::Mutex<Vec<Tensor>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let observer =
        candlewick_core::pipeline::Observer::new().with_step_latents(move |_, l| sink.lock().unwrap().push(l.clone()));
    (observer, seen)
}

/// A run against a golden of diffusers' (scripts/fixture_*.py): `calls` steps, step i's latents
/// within 1e-4 relative of `{prefix}latents_step_{i}`, the image within `max_diff`/255 of
/// `{prefix}image_u8`.
pub fn assert_like_golden(
    name: &str,
    seen: &[Tensor],
    image: &[u8],
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
    calls: usize,
    max_diff: u8,
) {
    assert_eq!(seen.len(), calls, "{name}: UNet calls");
    for (i, latents) in seen.iter().enumerate() {
        let key = format!("{prefix}latents_step_{i}");
        assert_close(&format!("{name} {key}"), latents, &tensors[&key], 1e-4);
    }
    let want = tensors[&format!("{prefix}image_u8")].flatten_all().unwrap().to_vec1::<u8>().unwrap();
    assert_eq!(image.len(), want.len(), "{name}: image size");
    let off = image.iter().zip(&want).filter(|(a, b)| a.abs_diff(**b) > max_diff).count();
    assert_eq!(off, 0, "{name}: {off} channel values differ from diffusers' by more than {max_diff}");
}

/// Copies the folder `from` into `to` (created), subfolders too.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The fixture folder `base` with the UNet and model_index.json of the fixture `unet_from` (which
/// keeps only what differs: tiny-sd-inpaint, tiny-sdxl-inpaint), in a temporary folder.
pub fn fixture_with_unet(base: &str, unet_from: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(base)).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if entry.path().is_dir() && name != "unet" {
            copy_dir(&entry.path(), &dir.path().join(&name));
        }
    }
    let unet = fixtures().join(unet_from);
    copy_dir(&unet.join("unet"), &dir.path().join("unet"));
    std::fs::copy(unet.join("model_index.json"), dir.path().join("model_index.json")).unwrap();
    dir
}

/// A model folder on the CPU in f32.
pub fn load_cpu(dir: &std::path::Path) -> candlewick_core::pipeline::StableDiffusionPipeline {
    use candlewick_core::device::{DTypeRequest, DeviceRequest};
    let options = candlewick_core::pipeline::LoadOptions {
        device: DeviceRequest::Cpu,
        dtype: DTypeRequest::F32,
        ..Default::default()
    };
    candlewick_core::pipeline::StableDiffusionPipeline::load(dir, &options)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// A file of test/fixtures as an encoded image input.
pub fn fixture_image(path: &str) -> candlewick_core::pipeline::ImageInput {
    candlewick_core::pipeline::ImageInput::Encoded(std::fs::read(fixtures().join(path)).unwrap())
}

/// goldens/<name>.{json,safetensors} of a diffusers pipeline run from fixed initial latents
/// (scripts/make_fixtures.py's `pipeline*`, the LoRA and single-file goldens): the call as
/// Candlewick options (the scheduler overrides when the golden names some), and its tensors.
pub fn golden_call(name: &str) -> (candlewick_core::pipeline::GenerateOptions, HashMap<String, Tensor>) {
    let path = fixtures().join("goldens").join(format!("{name}.json"));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let tensors = goldens(name);
    let initial = &tensors["initial_latents"];
    let options = candlewick_core::pipeline::GenerateOptions {
        prompt: vec![json["prompt"].as_str().unwrap().into()],
        negative_prompt: Some(vec![json["negative_prompt"].as_str().unwrap().into()]),
        num_inference_steps: json["steps"].as_u64().unwrap() as usize,
        guidance_scale: json["guidance_scale"].as_f64().unwrap(),
        width: Some(json["width"].as_u64().unwrap() as usize),
        height: Some(json["height"].as_u64().unwrap() as usize),
        latents: Some(candlewick_core::pipeline::LatentsInput {
            shape: initial.dims4().unwrap().into(),
            data: initial.flatten_all().unwrap().to_vec1().unwrap(),
        }),
        scheduler: json["scheduler"].as_object().cloned().unwrap_or_default(),
        ..Default::default()
    };
    (options, tensors)
}

/// A 2-step 32x32 call of one prompt, seed 7: for tests that compare two runs of a tiny model.
pub fn quick_options() -> candlewick_core::pipeline::GenerateOptions {
    candlewick_core::pipeline::GenerateOptions {
        prompt: vec!["a red apple".into()],
        num_inference_steps: 2,
        width: Some(32),
        height: Some(32),
        seed: Some(7),
        ..Default::default()
    }
}
