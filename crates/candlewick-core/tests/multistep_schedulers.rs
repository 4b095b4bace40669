//! DPMSolverMultistepScheduler and UniPCMultistepScheduler beyond the generic replay in
//! schedulers.rs: their sigmas against diffusers' (goldens from scripts/fixture_schedulers.py),
//! the presets, and the configs diffusers refuses or runs into NaN, refused with clear messages.
use std::path::Path;

use candlewick_core::schedulers::scheduling_dpmsolver_multistep::{
    DpmSolverMultistepScheduler, DpmSolverMultistepSchedulerConfig,
};
use candlewick_core::schedulers::scheduling_unipc_multistep::{UniPcMultistepScheduler, UniPcMultistepSchedulerConfig};
use candlewick_core::schedulers::{SchedulerChoice, SchedulerKind};
use serde_json::{json, Map, Value};

#[derive(serde::Deserialize)]
struct Goldens {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    class_name: String,
    config: Value,
    num_inference_steps: usize,
    sigmas: Option<Vec<f32>>,
}

fn cases(class_name: &str) -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/goldens/schedulers.json");
    let goldens: Goldens = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases: Vec<Case> = goldens.cases.into_iter().filter(|c| c.class_name == class_name).collect();
    assert!(!cases.is_empty(), "no {class_name} goldens");
    cases
}

#[test]
fn dpm_solver_sigmas_are_diffusers_sigmas() {
    for c in cases("DPMSolverMultistepScheduler") {
        let config: DpmSolverMultistepSchedulerConfig = serde_json::from_value(c.config.clone()).unwrap();
        let s = DpmSolverMultistepScheduler::new(config, c.num_inference_steps).unwrap();
        assert_sigmas(s.sigmas(), c.sigmas.as_deref().unwrap(), &c.name);
    }
}

/// Sigmas equal to diffusers' float32 values within an ulp: torch's float32 sqrt (MKL's vector
/// math on the goldens' machine) is not correctly rounded, e.g. sqrt(0.76446611) is 0.87433749
/// there and 0.87433755 here, so a few training sigmas (sqrt((1 - a) / a)) differ by one ulp.
fn assert_sigmas(got: &[f32], want: &[f32], name: &str) {
    assert_eq!(got.len(), want.len(), "{name}: sigmas {got:?} vs {want:?}");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= f32::EPSILON * w.abs(), "{name}: sigma {k} is {g}, diffusers' {w}");
    }
}

#[test]
fn unipc_sigmas_are_diffusers_sigmas() {
    for c in cases("UniPCMultistepScheduler") {
        let config: UniPcMultistepSchedulerConfig = serde_json::from_value(c.config.clone()).unwrap();
        let s = UniPcMultistepScheduler::new(config, c.num_inference_steps).unwrap();
        assert_sigmas(s.sigmas(), c.sigmas.as_deref().unwrap(), &c.name);
    }
}

/// SD1.5's scheduler folder (a PNDMScheduler config), which a call's `type` swaps from.
fn sd15() -> SchedulerChoice {
    let folder = json!({
        "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000, "steps_offset": 1, "set_alpha_to_one": false, "skip_prk_steps": true,
        "clip_sample": false, "trained_betas": null,
    });
    SchedulerChoice::from_folder(serde_json::from_value(folder).unwrap()).unwrap()
}

fn with(fields: Value) -> candlewick_core::Result<SchedulerChoice> {
    sd15().with_overrides(&serde_json::from_value(fields).unwrap())
}

fn message(fields: Value) -> String {
    let choice = with(fields.clone());
    let result = choice.and_then(|c| c.build(20).map(|_| ()));
    result.expect_err(&format!("{fields} should be refused")).to_string()
}

#[test]
fn presets_pick_the_class_and_fields() {
    let cases = [
        ("dpm++-2m", SchedulerKind::DpmSolverMultistep, "dpmsolver++", false),
        ("dpm++-2m-karras", SchedulerKind::DpmSolverMultistep, "dpmsolver++", true),
        ("dpm++-2m-sde", SchedulerKind::DpmSolverMultistep, "sde-dpmsolver++", false),
        ("dpm++-2m-sde-karras", SchedulerKind::DpmSolverMultistep, "sde-dpmsolver++", true),
    ];
    for (name, kind, algorithm, karras) in cases {
        let c = with(json!({ "type": name })).unwrap();
        assert_eq!(c.kind(), kind, "{name}");
        assert_eq!(c.config()["algorithm_type"], json!(algorithm), "{name}");
        assert_eq!(c.config()["solver_order"], json!(2), "{name}");
        assert_eq!(c.config()["use_karras_sigmas"], json!(karras), "{name}");
        // SD1.5's fields carry over, as from_config does.
        assert_eq!(c.config()["steps_offset"], json!(1), "{name}");
        assert_eq!(c.build(20).unwrap().timesteps().len(), 20, "{name}");
    }
    let unipc = with(json!({ "type": "unipc" })).unwrap();
    assert_eq!(unipc.kind(), SchedulerKind::UniPcMultistep);
    let karras = with(json!({ "type": "unipc-karras" })).unwrap();
    assert_eq!((karras.kind(), &karras.config()["use_karras_sigmas"]), (SchedulerKind::UniPcMultistep, &json!(true)));
    // A preset's field can still be changed by the call.
    let order3 = with(json!({ "type": "dpm++-2m-karras", "solver_order": 3 })).unwrap();
    assert_eq!(order3.config()["solver_order"], json!(3));
}

#[test]
fn leading_spacing_divides_by_steps_plus_one() {
    // 1000 // (10 + 1) = 90, plus SD1.5's steps_offset 1 (DDIM would use 1000 // 10 = 100).
    let s = with(json!({ "type": "dpm++-2m", "timestep_spacing": "leading" })).unwrap().build(10).unwrap();
    let want: Vec<f64> = (1..=10).rev().map(|i| (i * 90 + 1) as f64).collect();
    assert_eq!(s.timesteps(), want.as_slice());
}

#[test]
fn other_classes_solver_types_are_read_as_diffusers_reads_them() {
    // A UniPC folder switched to DPM-Solver (solver_type "bh2") runs midpoint, and back (bh2).
    let dpm = with(json!({ "type": "dpmsolver-multistep", "solver_type": "bh2" })).unwrap();
    let unipc = dpm.with_overrides(&serde_json::from_value(json!({ "type": "unipc" })).unwrap()).unwrap();
    assert!(unipc.build(10).is_ok());
    let from_dpm = with(json!({ "type": "unipc", "solver_type": "midpoint" })).unwrap();
    assert!(from_dpm.build(10).is_ok());
    assert!(with(json!({ "type": "dpmsolver-multistep", "algorithm_type": "deis" })).unwrap().build(10).is_ok());
    // A DDPM folder's fixed variance carried over changes nothing in DPM-Solver, as in diffusers.
    let ddpm = with(json!({ "type": "ddpm", "variance_type": "fixed_small_log" })).unwrap();
    let dpm = ddpm.with_overrides(&serde_json::from_value(json!({ "type": "dpm++-2m" })).unwrap()).unwrap();
    assert_eq!(dpm.config()["variance_type"], json!("fixed_small_log"));
    assert!(dpm.build(10).is_ok());
}

#[test]
fn refused_configs_say_why() {
    let cases = [
        (json!({ "type": "dpm++-2m", "solver_order": 4 }),
         "Expected 1, 2 or 3 for scheduler.solver_order but received 4"),
        (json!({ "type": "dpm++-2m", "solver_order": 0 }),
         "Expected 1, 2 or 3 for scheduler.solver_order but received 0"),
        (json!({ "type": "dpmsolver-multistep", "algorithm_type": "sde-dpmsolver", "final_sigmas_type": "sigma_min",
                 "solver_order": 3 }),
         "Expected 1 or 2 (diffusers has no third-order \"sde-dpmsolver\" step) for scheduler.solver_order but received 3"),
        (json!({ "type": "dpmsolver-multistep", "algorithm_type": "dpmsolver" }),
         "Expected \"sigma_min\" with scheduler.algorithm_type \"dpmsolver\" (as diffusers requires) for \
          scheduler.final_sigmas_type but received \"zero\""),
        (json!({ "type": "dpmsolver-multistep", "algorithm_type": "ddim" }),
         "Expected one of \"dpmsolver++\", \"sde-dpmsolver++\", \"dpmsolver\", \"sde-dpmsolver\" for scheduler.algorithm_type but received \"ddim\""),
        (json!({ "type": "dpm++-2m", "thresholding": true }),
         "Expected false (dynamic thresholding is for pixel-space models and is not supported) for scheduler.thresholding but received true"),
        (json!({ "type": "dpm++-2m", "use_beta_sigmas": true }),
         "Expected false (beta-distributed sigmas: not supported) for scheduler.use_beta_sigmas but received true"),
        (json!({ "type": "unipc", "use_flow_sigmas": true }),
         "Expected false (flow-matching sigmas are for flow models: not supported) for scheduler.use_flow_sigmas but received true"),
        (json!({ "type": "dpm++-2m", "variance_type": "learned_range" }),
         "Expected null (models that predict their variance are not supported) for scheduler.variance_type but received \"learned_range\""),
        (json!({ "type": "dpm++-2m-karras", "use_exponential_sigmas": true }),
         "Expected false when scheduler.use_karras_sigmas is true (one sigma spacing at a time) for \
          scheduler.use_exponential_sigmas but received true"),
        (json!({ "type": "dpm++-2m-karras", "beta_schedule": "squaredcos_cap_v2" }),
         "Expected false with scheduler.beta_schedule \"squaredcos_cap_v2\" (its first two timesteps coincide; diffusers \
          fails) for scheduler.use_karras_sigmas but received true"),
        (json!({ "type": "unipc-karras", "beta_schedule": "squaredcos_cap_v2" }),
         "Expected false with scheduler.beta_schedule \"squaredcos_cap_v2\" (its first two timesteps coincide; diffusers \
          fails) for scheduler.use_karras_sigmas but received true"),
        (json!({ "type": "unipc", "solver_type": "bh1" }),
         "Expected \"bh2\" with scheduler.final_sigmas_type \"zero\" (diffusers' last bh1 step is NaN; use \"sigma_min\") \
          for scheduler.solver_type but received \"bh1\""),
        (json!({ "type": "unipc", "predict_x0": false }),
         "Expected true with scheduler.final_sigmas_type \"zero\" (diffusers' last step is NaN; use \"sigma_min\") for \
          scheduler.predict_x0 but received false"),
        (json!({ "type": "unipc", "solver_order": 4 }), "Expected 1, 2 or 3 for scheduler.solver_order but received 4"),
        (
            json!({ "type": "unipc", "use_dynamic_shifting": true }),
            "Expected false (dynamic shifting is for flow models; diffusers refuses it without their mu) for \
             scheduler.use_dynamic_shifting but received true",
        ),
        (json!({ "type": "unipc", "sigma_min": 2.0, "sigma_max": 1.0 }),
         "Expected number above scheduler.sigma_min (2) for scheduler.sigma_max but received 1"),
        (json!({ "type": "unipc", "eta": 0.5 }), "scheduler.eta is not an option of the unipc scheduler"),
        (json!({ "type": "dpm++-2m", "predict_x0": true }),
         "scheduler.predict_x0 is not an option of the dpmsolver-multistep scheduler"),
        (json!({ "type": "dpm++-2m", "lambda_min_clipped": 100.0 }),
         "Expected number that leaves at least 2 training timesteps for scheduler.lambda_min_clipped but received 100"),
        // Karras sigmas end on sigma_min: with final_sigmas_type "sigma_min" the last step has h = 0, and
        // diffusers' heun / third-order forms divide 0 by 0 (NaN images, checked with diffusers 0.42.1).
        (json!({ "type": "dpm++-2m-karras", "final_sigmas_type": "sigma_min", "solver_type": "heun" }),
         "Expected \"zero\", or scheduler.euler_at_final true (the last noise level already is the final one here, and \
          diffusers' last heun step divides by zero: a NaN image) for scheduler.final_sigmas_type but received \"sigma_min\""),
        (json!({ "type": "dpm++-2m-karras", "final_sigmas_type": "sigma_min", "solver_order": 3 }),
         "Expected \"zero\", or scheduler.euler_at_final true (the last noise level already is the final one here, and \
          diffusers' last third-order step divides by zero: a NaN image) for scheduler.final_sigmas_type but received \"sigma_min\""),
        (json!({ "type": "unipc-karras", "final_sigmas_type": "sigma_min", "solver_order": 3, "lower_order_final": false }),
         "Expected \"zero\", or scheduler.lower_order_final true (the last noise level already is the final one here, and \
          diffusers' last third-order step is NaN) for scheduler.final_sigmas_type but received \"sigma_min\""),
    ];
    for (fields, want) in cases {
        let got = message(fields.clone());
        assert!(got.starts_with(want), "{fields}:\n got  {got}\n want {want}");
    }
}

#[test]
fn steps_that_repeat_a_noise_level_are_refused() {
    // Leading spacing with 1000 steps of 1000: 1000 // 1001 = 0, every timestep the same.
    let err = with(json!({ "type": "dpm++-2m", "timestep_spacing": "leading" }))
        .unwrap()
        .build(1000)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("Expected fewer steps (with timestep_spacing \"leading\", steps 1 and 2 share noise level"),
        "{err}"
    );
    assert!(err.ends_with("for num_inference_steps but received 1000"), "{err}");
    let err = with(json!({ "type": "unipc" })).unwrap().build(0).err().unwrap().to_string();
    assert_eq!(err, "Expected integer between 1 and 1000 for num_inference_steps but received 0");
}

#[test]
fn a_flat_last_step_runs_where_diffusers_runs_it() {
    // The same configurations with a midpoint second-order, an euler or a lower-order last step are finite in
    // diffusers, and run.
    for fields in [
        json!({ "type": "dpm++-2m-karras", "final_sigmas_type": "sigma_min" }),
        json!({ "type": "dpm++-2m-karras", "final_sigmas_type": "sigma_min", "solver_type": "heun", "euler_at_final": true }),
        json!({ "type": "unipc-karras", "final_sigmas_type": "sigma_min", "solver_order": 3 }),
    ] {
        assert!(with(fields.clone()).unwrap().build(20).is_ok(), "{fields}");
    }
}

/// Step noise of zeros (the SDE preset draws some).
struct Zeros;

impl candlewick_core::schedulers::StepNoise for Zeros {
    fn sample_like(&mut self, like: &candle_core::Tensor) -> candlewick_core::Result<candle_core::Tensor> {
        Ok(like.zeros_like()?)
    }
}

#[test]
fn one_training_timestep_runs() {
    for scheduler in ["dpm++-2m", "dpm++-2m-karras", "dpm++-2m-sde", "unipc", "unipc-karras"] {
        for spacing in ["leading", "trailing", "linspace"] {
            let fields =
                json!({ "type": scheduler, "num_train_timesteps": 1, "steps_offset": 0, "timestep_spacing": spacing });
            let s = with(fields.clone()).unwrap().build(1).unwrap_or_else(|e| panic!("{fields}: {e}"));
            let mut s = s;
            assert_eq!(s.timesteps(), &[0.0], "{fields}");
            let x =
                candle_core::Tensor::ones((1, 4, 2, 2), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
            let out = s.step(&(&x * 0.5).unwrap(), 0.0, &x, &mut Zeros).unwrap();
            let values = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(values.iter().all(|v| v.is_finite()), "{fields}: {values:?}");
        }
    }
}

/// A DPMSolverMultistepScheduler config as diffusers saves it (`json.dumps` writes -inf as
/// `-Infinity`) loads, and runs unclipped; the literal inside a string stays a string.
#[test]
fn saved_configs_with_python_infinity_load() {
    let text = r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
        "note": "a \"-Infinity\" in text", "use_karras_sigmas": true, "trained_betas": null}"#;
    let config: Map<String, Value> =
        candlewick_core::config::parse_json(Path::new("scheduler_config.json"), text).unwrap();
    assert_eq!(config["lambda_min_clipped"], Value::Null);
    assert_eq!(config["note"], json!("a \"-Infinity\" in text"));
    let folder = SchedulerChoice::from_folder(config).unwrap();
    let unclipped = with(json!({ "type": "dpm++-2m-karras" })).unwrap();
    assert_eq!(folder.build(10).unwrap().timesteps(), unclipped.build(10).unwrap().timesteps());
}

#[test]
fn lambda_min_clipped_null_is_no_clipping() {
    let clipped = with(json!({ "type": "dpm++-2m", "lambda_min_clipped": null })).unwrap().build(10).unwrap();
    let plain = with(json!({ "type": "dpm++-2m" })).unwrap().build(10).unwrap();
    assert_eq!(clipped.timesteps(), plain.timesteps());
}

/// The tiny model (test/fixtures/tiny-sd) with each preset: the stateful multistep schedulers run
/// end to end, and with the SDE preset (fresh noise every step, from each image's own seeded
/// stream) an image of a seeded batch is the image its seed makes alone.
#[test]
fn presets_run_in_the_pipeline_and_sde_noise_follows_each_image_seed() {
    use candlewick_core::device::{DTypeRequest, DeviceRequest};
    use candlewick_core::pipeline::{GenerateOptions, LoadOptions, Observer, StableDiffusionPipeline};

    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/tiny-sd");
    let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() };
    let pipe = StableDiffusionPipeline::load(&model, &options).expect("the tiny model loads");
    let observer = Observer::new();
    let call = |prompts: &[&str], seeds: &[u64], scheduler: &str| {
        let options = GenerateOptions {
            prompt: prompts.iter().map(|p| p.to_string()).collect(),
            num_inference_steps: 4,
            width: Some(32),
            height: Some(32),
            seeds: Some(seeds.to_vec()),
            scheduler: serde_json::from_value(json!({ "type": scheduler })).unwrap(),
            ..Default::default()
        };
        pipe.generate(&options, &observer).unwrap_or_else(|e| panic!("{scheduler}: {e}")).images
    };
    let ddim = call(&["a red apple"], &[7], "ddim");
    for preset in ["dpm++-2m", "dpm++-2m-karras", "dpm++-2m-sde", "dpm++-2m-sde-karras", "unipc", "unipc-karras"] {
        let image = call(&["a red apple"], &[7], preset);
        assert_ne!(image[0].data, ddim[0].data, "{preset} gives DDIM's image");
        assert_eq!(call(&["a red apple"], &[7], preset)[0].data, image[0].data, "{preset}: same seed, same image");
    }
    let batch = call(&["a red apple", "a blue bird"], &[7, 8], "dpm++-2m-sde-karras");
    assert_same_image(&batch[0].data, &call(&["a red apple"], &[7], "dpm++-2m-sde-karras")[0].data, "image 0 alone");
    assert_same_image(&batch[1].data, &call(&["a blue bird"], &[8], "dpm++-2m-sde-karras")[0].data, "image 1 alone");
    // The SDE's step noise changes the image: the ODE preset with the same seed gives another.
    assert_ne!(call(&["a red apple"], &[7], "dpm++-2m-karras")[0].data, batch[0].data);
}

/// Pixels of two images equal within 1/255 on >= 99.9% of bytes (a batch of several images may
/// sum in another order than a batch of one), as tests/pipeline.rs compares them.
fn assert_same_image(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: sizes differ");
    let close = a.iter().zip(b).filter(|(x, y)| x.abs_diff(**y) <= 1).count();
    assert!(close as f64 >= 0.999 * a.len() as f64, "{what}: only {close} of {} bytes within 1", a.len());
}
