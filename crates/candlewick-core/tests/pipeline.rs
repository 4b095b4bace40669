//! The whole text-to-image pipeline against diffusers, on the tiny model.
//!
//! Goldens: test/fixtures/goldens/pipeline.{json,safetensors}, made by scripts/make_fixtures.py
//! (`make_pipeline`: StableDiffusionPipeline(...)(latents=initial_latents, output_type="pt") with
//! callback_on_step_end capturing the latents after every step).

mod common;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::pipeline::{GenerateOptions, LatentsInput, LoadOptions, Observer, StableDiffusionPipeline};
use candlewick_core::Error;
use common::{assert_close, fixtures};

fn tiny_model() -> PathBuf {
    fixtures().join("tiny-sd")
}

fn load(dtype: DTypeRequest) -> StableDiffusionPipeline {
    let options = LoadOptions { device: DeviceRequest::Cpu, dtype, ..Default::default() };
    StableDiffusionPipeline::load(&tiny_model(), &options).expect("the tiny model loads")
}

struct Golden {
    options: GenerateOptions,
    tensors: std::collections::HashMap<String, Tensor>,
}

fn golden_run() -> Golden {
    golden_named("pipeline")
}

/// goldens/<name>.{json,safetensors}: a 5-step run of diffusers' StableDiffusionPipeline on tiny-sd
/// (`scheduler`: the class and fields swapped in with `from_config`, absent for the folder's DDIM).
fn golden_named(name: &str) -> Golden {
    let (options, tensors) = common::golden_call(name);
    Golden { options, tensors }
}

/// Every scheduler's 5-step golden (scripts/fixture_schedulers.py's PIPELINE_CASES, made by
/// scripts/make_fixtures.py): each UNet call's latents within 1e-4 relative, as the DDIM golden.
#[test]
fn every_scheduler_in_the_whole_pipeline_matches_diffusers() {
    let pipe = load(DTypeRequest::F32);
    let mut names: Vec<String> = std::fs::read_dir(fixtures().join("goldens"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|f| Some(f.strip_prefix("pipeline_")?.strip_suffix(".json")?.to_string()))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no pipeline_<scheduler> goldens");
    for name in names {
        let golden = golden_named(&format!("pipeline_{name}"));
        let seen: Arc<Mutex<Vec<Tensor>>> = Arc::default();
        let sink = seen.clone();
        let observer = Observer::new().with_step_latents(move |_, l| sink.lock().unwrap().push(l.clone()));
        pipe.generate(&golden.options, &observer).unwrap_or_else(|e| panic!("{name}: {e}"));
        let seen = seen.lock().unwrap();
        let calls = golden.tensors.keys().filter(|k| k.starts_with("latents_step_")).count();
        assert_eq!(seen.len(), calls, "{name}: UNet calls");
        for (i, latents) in seen.iter().enumerate() {
            assert_close(
                &format!("{name} latents_step_{i}"),
                latents,
                &golden.tensors[&format!("latents_step_{i}")],
                1e-4,
            );
        }
        eprintln!("pipeline with {name}: {calls} UNet calls match diffusers");
    }
}

/// Every per-step latent and the final image equal diffusers' (f32, 1e-4 relative; pixels within 1/255).
#[test]
fn txt2img_matches_diffusers_step_by_step() {
    let pipe = load(DTypeRequest::F32);
    let golden = golden_run();
    let seen: Arc<Mutex<Vec<Tensor>>> = Arc::default();
    let sink = seen.clone();
    let observer = Observer::new().with_step_latents(move |_, latents| sink.lock().unwrap().push(latents.clone()));
    let output = pipe.generate(&golden.options, &observer).unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), golden.options.num_inference_steps);
    for (i, latents) in seen.iter().enumerate() {
        assert_close(&format!("latents_step_{i}"), latents, &golden.tensors[&format!("latents_step_{i}")], 1e-4);
    }

    let want = golden.tensors["image_u8"].flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let got = &output.images[0].data;
    assert_eq!(got.len(), want.len());
    let off_by_more = got.iter().zip(&want).filter(|(a, b)| a.abs_diff(**b) > 1).count();
    let pixels_off = got.chunks(3).zip(want.chunks(3)).filter(|(a, b)| a != b).count();
    assert!(
        off_by_more == 0 && (pixels_off as f64) <= 0.001 * (got.len() / 3) as f64,
        "image differs from diffusers': {off_by_more} channel values off by more than 1, {pixels_off} pixels differ"
    );
}

/// The fp16 weight variant loads when f16 is asked for, and stays close to f32.
#[test]
fn f16_uses_the_fp16_variant_and_stays_close() {
    let pipe = load(DTypeRequest::F16);
    assert_eq!(pipe.info().dtype, "f16");
    let golden = golden_run();
    let observer = Observer::new();
    let output = pipe.generate(&golden.options, &observer).unwrap();
    let want = golden.tensors["image"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let got: Vec<f32> = output.images[0].data.iter().map(|&b| b as f32 / 255.0).collect();
    let want_hwc = Tensor::from_vec(want, golden.tensors["image"].shape(), &Device::Cpu)
        .unwrap()
        .permute((0, 2, 3, 1))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let max_diff = got.iter().zip(&want_hwc).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff < 0.05, "f16 image differs from diffusers' f32 image by up to {max_diff}");
}

#[test]
fn same_seed_same_image_other_seed_other_image() {
    let pipe = load(DTypeRequest::F32);
    let observer = Observer::new();
    let a = pipe.generate(&common::quick_options(), &observer).unwrap();
    let b = pipe.generate(&common::quick_options(), &observer).unwrap();
    let c = pipe.generate(&GenerateOptions { seed: Some(8), ..common::quick_options() }, &observer).unwrap();
    assert_eq!(a.seed, 7);
    assert_eq!(a.images[0].data, b.images[0].data);
    assert_ne!(a.images[0].data, c.images[0].data);
}

/// Pixels of two images equal within 1/255 on >= 99.9% of bytes (a batch of several images may
/// sum in another order than a batch of one).
fn assert_same_image(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: sizes differ");
    let close = a.iter().zip(b).filter(|(x, y)| x.abs_diff(**y) <= 1).count();
    assert!(close as f64 >= 0.999 * a.len() as f64, "{what}: only {close} of {} bytes within 1", a.len());
}

#[test]
fn per_image_seeds_give_each_image_the_image_its_seed_makes_alone() {
    let pipe = load(DTypeRequest::F32);
    let observer = Observer::new();
    let prompts = ["a red apple", "a blue bird", "a green hill"];
    let seeds = [7u64, 123, 7];
    for eta in [0.0, 1.0] {
        let mut scheduler = common::quick_options().scheduler;
        scheduler.insert("eta".into(), serde_json::json!(eta));
        let batch = GenerateOptions {
            prompt: prompts.iter().map(|p| p.to_string()).collect(),
            negative_prompt: Some(vec!["blurry".into(), "dark".into(), "blurry".into()]),
            seed: None,
            seeds: Some(seeds.to_vec()),
            scheduler: scheduler.clone(),
            ..common::quick_options()
        };
        let out = pipe.generate(&batch, &observer).unwrap();
        assert_eq!(out.seeds, seeds.to_vec());
        assert_eq!(out.seed, 7);
        for (i, (prompt, seed)) in prompts.iter().zip(seeds).enumerate() {
            let negative = batch.negative_prompt.as_ref().unwrap()[i].clone();
            let alone = GenerateOptions {
                prompt: vec![prompt.to_string()],
                negative_prompt: Some(vec![negative]),
                seed: Some(seed),
                scheduler: scheduler.clone(),
                ..common::quick_options()
            };
            let single = pipe.generate(&alone, &observer).unwrap();
            assert_eq!(single.seeds, vec![seed]);
            assert_same_image(&out.images[i].data, &single.images[0].data, &format!("image {i} (eta {eta})"));
        }
        // Same seed, other prompt: other image (the seeds are not shared across the batch by accident).
        assert_ne!(out.images[0].data, out.images[2].data);
    }
}

#[test]
fn each_image_of_a_seeded_call_is_the_image_its_reported_seed_makes_alone() {
    let pipe = load(DTypeRequest::F32);
    let observer = Observer::new();
    let out = pipe
        .generate(&GenerateOptions { seed: Some(42), num_images_per_prompt: 2, ..common::quick_options() }, &observer)
        .unwrap();
    assert_eq!(out.seeds, vec![42, 43]);
    for (image, seed) in out.images.iter().zip([42, 43]) {
        let alone = pipe.generate(&GenerateOptions { seed: Some(seed), ..common::quick_options() }, &observer).unwrap();
        assert_same_image(&image.data, &alone.images[0].data, &format!("seed {seed}"));
    }
    // u64::MAX + 1 wraps to 0.
    let out = pipe
        .generate(
            &GenerateOptions { seed: Some(u64::MAX), num_images_per_prompt: 2, ..common::quick_options() },
            &observer,
        )
        .unwrap();
    assert_eq!(out.seeds, vec![u64::MAX, 0]);
}

#[test]
fn seeds_must_be_one_per_image_and_not_beside_seed() {
    let pipe = load(DTypeRequest::F32);
    let cases: Vec<(GenerateOptions, &str)> = vec![
        (
            GenerateOptions {
                seed: None,
                seeds: Some(vec![1, 2]),
                num_images_per_prompt: 3,
                ..common::quick_options()
            },
            "Expected 3 seeds (one per image: prompts x num_images_per_prompt) for seeds but received 2 seeds",
        ),
        (
            GenerateOptions { seeds: Some(vec![1]), ..common::quick_options() },
            "Expected seeds without seed (give one of the two) for seeds but received both",
        ),
    ];
    for (options, message) in cases {
        let err = pipe.generate(&options, &Observer::new()).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert_eq!(err.code(), "ERR_CANDLEWICK_INVALID_OPTION");
    }
    let out = pipe.generate(&common::quick_options(), &Observer::new()).unwrap();
    assert_eq!(out.seeds, vec![7]);
}

#[test]
fn several_prompts_and_images_per_prompt() {
    let pipe = load(DTypeRequest::F32);
    let options = GenerateOptions {
        prompt: vec!["one".into(), "two".into()],
        num_images_per_prompt: 2,
        negative_prompt: Some(vec!["blurry".into()]),
        width: Some(48),
        height: Some(40),
        ..common::quick_options()
    };
    let output = pipe.generate(&options, &Observer::new()).unwrap();
    assert_eq!(output.images.len(), 4);
    for image in &output.images {
        assert_eq!((image.width, image.height, image.data.len()), (48, 40, 48 * 40 * 3));
    }
}

#[test]
fn progress_is_reported_every_step_and_cancel_stops_the_loop() {
    let pipe = load(DTypeRequest::F32);
    let steps: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let sink = steps.clone();
    let observer = Observer::new().with_progress(move |p| sink.lock().unwrap().push((p.step, p.total_steps)));
    pipe.generate(&GenerateOptions { num_inference_steps: 3, ..common::quick_options() }, &observer).unwrap();
    assert_eq!(*steps.lock().unwrap(), vec![(1, 3), (2, 3), (3, 3)]);

    let observer = Observer::new();
    let flag = observer.cancel_flag();
    let observer = observer.with_progress(move |p| {
        if p.step == 1 {
            flag.store(true, Ordering::Relaxed)
        }
    });
    let err =
        pipe.generate(&GenerateOptions { num_inference_steps: 3, ..common::quick_options() }, &observer).unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    // The pipeline is still usable.
    pipe.generate(&common::quick_options(), &Observer::new()).unwrap();
}

/// A generation whose numbers overflow errors instead of returning a black image, and the
/// pipeline stays usable (first-contact issue: NaN latents, huge guidance gave black images).
#[test]
fn non_finite_results_are_errors_not_black_images() {
    let pipe = load(DTypeRequest::F32);
    let nan = LatentsInput { shape: [1, 4, 16, 16], data: vec![f32::NAN; 4 * 16 * 16] };
    let huge = GenerateOptions { guidance_scale: 3e38, ..common::quick_options() };
    for (options, start) in [
        (GenerateOptions { latents: Some(nan), ..common::quick_options() }, "the latents became NaN or infinite during denoising"),
        (huge, "the latents became NaN or infinite during denoising (guidance_scale 300000000000000000000000000000000000000"),
    ] {
        let err = pipe.generate(&options, &Observer::new()).unwrap_err();
        assert!(err.to_string().starts_with(start), "{err}");
        assert_eq!(err.code(), "ERR_CANDLEWICK_NON_FINITE");
    }
    pipe.generate(&common::quick_options(), &Observer::new()).unwrap();
}

#[test]
fn bad_options_are_errors_that_name_the_option() {
    let pipe = load(DTypeRequest::F32);
    let cases: Vec<(GenerateOptions, &str)> = vec![
        (
            GenerateOptions { width: Some(500), ..common::quick_options() },
            "Expected integer multiple of 8 for width but received 500",
        ),
        (
            GenerateOptions { height: Some(0), ..common::quick_options() },
            "Expected integer multiple of 8 for height but received 0",
        ),
        (
            GenerateOptions { num_inference_steps: 0, ..common::quick_options() },
            "Expected integer between 1 and 1000 for num_inference_steps but received 0",
        ),
        (
            GenerateOptions { guidance_scale: f64::NAN, ..common::quick_options() },
            "Expected finite number >= 0 for guidance_scale but received NaN",
        ),
        (
            GenerateOptions { guidance_scale: 1e39, ..common::quick_options() },
            "Expected number at most 3.4028235e38 (the largest f32) for guidance_scale but received 1000000000000000000000000000000000000000",
        ),
        (
            GenerateOptions { negative_prompt: Some(vec!["a".into(), "b".into()]), ..common::quick_options() },
            "Expected 1 negative prompt for negative_prompt but received 2 negative prompts",
        ),
        (
            GenerateOptions {
                latents: Some(LatentsInput { shape: [1, 4, 8, 8], data: vec![0.0; 256] }),
                ..common::quick_options()
            },
            "Expected latents of shape [1, 4, 16, 16] for latents but received shape [1, 4, 8, 8]",
        ),
    ];
    for (options, message) in cases {
        let err = pipe.generate(&options, &Observer::new()).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert_eq!(err.code(), "ERR_CANDLEWICK_INVALID_OPTION");
    }
    pipe.generate(&common::quick_options(), &Observer::new()).unwrap();
}

#[test]
fn long_prompts_warn_with_the_text_that_was_cut() {
    // With truncate_long_prompts (diffusers' plain encoding); by default nothing is cut.
    let pipe = load(DTypeRequest::F32);
    let prompt = "a very long prompt about apples ".repeat(20) + "THE END";
    let whole =
        pipe.generate(&GenerateOptions { prompt: vec![prompt.clone()], ..common::quick_options() }, &Observer::new());
    assert!(whole.unwrap().warnings.is_empty());
    let options = GenerateOptions { prompt: vec![prompt], truncate_long_prompts: true, ..common::quick_options() };
    let output = pipe.generate(&options, &Observer::new()).unwrap();
    assert_eq!(output.warnings.len(), 1, "{:?}", output.warnings);
    assert!(output.warnings[0].contains("the end"), "{}", output.warnings[0]);
}

#[test]
fn damaged_model_folders_name_the_file() {
    let dir = std::env::temp_dir().join(format!("candlewick-damaged-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    common::copy_dir(&tiny_model(), &dir);
    let options = LoadOptions { device: DeviceRequest::Cpu, ..Default::default() };

    std::fs::remove_file(dir.join("vae/config.json")).unwrap();
    let err = StableDiffusionPipeline::load(&dir, &options).err().unwrap().to_string();
    assert_eq!(err, format!("{}: file not found", dir.join("vae/config.json").display()));

    common::copy_dir(&tiny_model(), &dir);
    let weights = dir.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = StableDiffusionPipeline::load(&dir, &options).err().unwrap().to_string();
    assert!(err.starts_with(&format!("{}: ", weights.display())), "{err}");

    let missing = std::env::temp_dir().join("candlewick-no-such-model");
    let err = StableDiffusionPipeline::load(&missing, &options).err().unwrap().to_string();
    assert!(err.contains("is not a folder"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
