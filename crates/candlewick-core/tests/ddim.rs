//! Goldens: test/fixtures/goldens/ddim.json, made by scripts/make_fixtures.py (scripts/fixture_ddim.py):
//! diffusers 0.42's `DDIMScheduler(**config)`, `set_timesteps(n)`, then `step(model_output, t, sample,
//! eta, variance_noise=...)` at the first, middle and last timestep of a sweep of configs.
use std::path::Path;

use candle_core::{Device, Tensor};
use candlewick_core::schedulers::scheduling_ddim::{DdimScheduler, DdimSchedulerConfig};
use candlewick_core::schedulers::{
    BetaSchedule, NoNoise, PredictionType, Scheduler, SchedulerChoice, SchedulerKind, StepNoise, TimestepSpacing,
};
use serde_json::{json, Map, Value};

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    config: serde_json::Value,
    num_inference_steps: usize,
    eta: f64,
    timesteps: Vec<usize>,
    alphas_cumprod_at_timesteps: Vec<f64>,
    final_alpha_cumprod: f64,
    init_noise_sigma: f64,
    steps: Vec<Step>,
}

#[derive(serde::Deserialize)]
struct Step {
    timestep: usize,
    sample: Vec<f32>,
    model_output: Vec<f32>,
    variance_noise: Option<Vec<f32>>,
    prev_sample: Vec<f32>,
}

fn cases() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/goldens/ddim.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("ddim.json")
}

fn case(name: &str) -> Case {
    cases().into_iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no golden case {name}"))
}

fn config(c: &Case) -> DdimSchedulerConfig {
    let mut cfg: DdimSchedulerConfig =
        serde_json::from_value(c.config.clone()).unwrap_or_else(|e| panic!("{}: config: {e}", c.name));
    cfg.eta = c.eta;
    cfg
}

/// The case's config as scheduler_config.json holds it (a DDIMScheduler folder).
fn folder(c: &Case) -> SchedulerChoice {
    let mut map: Map<String, Value> = serde_json::from_value(c.config.clone()).unwrap();
    map.insert("_class_name".into(), json!("DDIMScheduler"));
    SchedulerChoice::from_folder(map).unwrap()
}

fn object(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// One noise tensor, for a step with eta > 0.
struct Given(Option<Tensor>);

impl StepNoise for Given {
    fn sample_like(&mut self, _like: &Tensor) -> candlewick_core::Result<Tensor> {
        Ok(self.0.take().expect("the step drew noise twice"))
    }
}

fn tensor(values: &[f32]) -> Tensor {
    Tensor::from_slice(values, (1, 1, 4, 4), &Device::Cpu).unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

#[test]
fn every_golden_config_matches_diffusers() {
    let cases = cases();
    assert!(cases.len() >= 20, "ddim.json has {} configs", cases.len());
    let (mut worst_alpha, mut worst_alpha_zero_snr): (f64, f64) = (0.0, 0.0);
    let mut worst_sample: f64 = 0.0;
    for c in &cases {
        let cfg = config(c);
        // torch's float32 sqrt on the golden machine is MKL's (within 1 ulp, not correctly rounded);
        // rescale_zero_terminal_snr subtracts nearly equal square roots near t = 999, which turns that
        // ulp into a few 1e-6 of alphas_cumprod. Everywhere else the values agree to float32 rounding.
        let alpha_bound = if cfg.rescale_betas_zero_snr { 5e-6 } else { 1e-6 };
        let mut s = DdimScheduler::new(cfg, c.num_inference_steps).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let want: Vec<f64> = c.timesteps.iter().map(|&t| t as f64).collect();
        assert_eq!(s.timesteps(), want.as_slice(), "{}: timesteps", c.name);
        for (&t, &golden) in c.timesteps.iter().zip(&c.alphas_cumprod_at_timesteps) {
            let e = rel(s.alphas_cumprod()[t], golden);
            if alpha_bound > 1e-6 {
                worst_alpha_zero_snr = worst_alpha_zero_snr.max(e);
            } else {
                worst_alpha = worst_alpha.max(e);
            }
            assert!(e <= alpha_bound, "{}: alphas_cumprod[{t}] = {} vs {golden}", c.name, s.alphas_cumprod()[t]);
        }
        assert!(rel(s.final_alpha_cumprod(), c.final_alpha_cumprod) <= 1e-6, "{}: final_alpha_cumprod", c.name);
        assert_eq!(s.init_noise_sigma(), c.init_noise_sigma, "{}: init_noise_sigma", c.name);
        for st in &c.steps {
            let mut noise = Given(st.variance_noise.as_deref().map(tensor));
            let prev = s
                .step(&tensor(&st.model_output), st.timestep as f64, &tensor(&st.sample), &mut noise)
                .unwrap_or_else(|e| panic!("{} t={}: {e}", c.name, st.timestep));
            let got = prev.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = st.prev_sample.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            let diff = got.iter().zip(&st.prev_sample).fold(0f64, |m, (a, b)| m.max((a - b).abs() as f64));
            worst_sample = worst_sample.max(diff / scale);
            assert!(diff / scale <= 1e-5, "{} t={}: prev_sample off by {diff} (scale {scale})", c.name, st.timestep);
        }
    }
    eprintln!(
        "{} configs; worst relative error: alphas_cumprod {worst_alpha:e} (zero SNR {worst_alpha_zero_snr:e}), \
         prev_sample {worst_sample:e}",
        cases.len()
    );
}

#[test]
fn missing_keys_take_diffusers_defaults_and_unknown_keys_are_ignored() {
    // linear_defaults_50 is DDIMScheduler(beta_schedule="linear"): every other field at its default.
    let golden = config(&case("linear_defaults_50"));
    let parsed: DdimSchedulerConfig =
        serde_json::from_str(r#"{"_class_name": "PNDMScheduler", "skip_prk_steps": true}"#).unwrap();
    assert_eq!(parsed, golden);
    assert_eq!(DdimSchedulerConfig::default(), golden);
}

#[test]
fn overrides_are_merged_over_the_folder_config() {
    let sd15 = folder(&case("sd15_50"));
    let timesteps = |choice: &SchedulerChoice, n| choice.build(n).unwrap().timesteps().to_vec();
    let trailing = sd15.with_overrides(&object(json!({"timestep_spacing": "trailing"}))).unwrap();
    let want: Vec<f64> = case("sd15_trailing_50").timesteps.iter().map(|&t| t as f64).collect();
    assert_eq!(timesteps(&trailing, 50), want);
    let zsnr = sd15
        .with_overrides(&object(json!({
            "rescale_betas_zero_snr": true, "prediction_type": "v_prediction", "timestep_spacing": "trailing",
            "type": "ddim", "eta": 0.8
        })))
        .unwrap();
    let golden = case("zero_snr_v_trailing_7_eta0.8");
    let want: Vec<f64> = golden.timesteps.iter().map(|&t| t as f64).collect();
    assert_eq!(timesteps(&zsnr, 7), want);
    let mut merged: DdimSchedulerConfig = serde_json::from_value(Value::Object(zsnr.config().clone())).unwrap();
    merged.eta = 0.8;
    assert_eq!(merged, config(&golden));
    assert_eq!(sd15.with_overrides(&Map::new()).unwrap(), sd15);
}

#[test]
fn add_noise_uses_alphas_cumprod_at_the_timestep() {
    let c = case("sd15_50");
    let s = DdimScheduler::new(config(&c), c.num_inference_steps).unwrap();
    let st = &c.steps[0];
    let (x, n) = (tensor(&st.sample), tensor(&st.model_output));
    let a = c.alphas_cumprod_at_timesteps[0];
    let noisy = s.add_noise(&x, &n, c.timesteps[0] as f64).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for ((got, x), n) in noisy.iter().zip(&st.sample).zip(&st.model_output) {
        let want = a.sqrt() * *x as f64 + (1.0 - a).sqrt() * *n as f64;
        assert!((*got as f64 - want).abs() <= 1e-5 * want.abs().max(1.0), "{got} vs {want}");
    }
}

#[test]
fn bad_config_values_in_scheduler_config_json_name_the_field() {
    for (json, message) in [
        (
            json!({"_class_name": "DDIMScheduler", "timestep_spacing": "middle"}),
            r#"is not a valid DDIMScheduler config: Expected one of "leading", "trailing", "linspace" for scheduler.timestep_spacing but received "middle""#,
        ),
        (
            json!({"_class_name": "DDIMScheduler", "beta_schedule": "cosine"}),
            r#"is not a valid DDIMScheduler config: Expected one of "linear", "scaled_linear", "squaredcos_cap_v2" for scheduler.beta_schedule but received "cosine""#,
        ),
        (
            json!({"_class_name": "KarrasVeScheduler"}),
            r#"_class_name is "KarrasVeScheduler"; candlewick implements DDIMScheduler"#,
        ),
    ] {
        let err = SchedulerChoice::from_folder(object(json)).unwrap_err();
        assert!(err.starts_with(message), "{err}");
    }
}

#[test]
fn bad_overrides_say_what_was_expected() {
    let sd15 = folder(&case("sd15_50"));
    let sweep = [
        (json!({"eta": 1.5}), "Expected number between 0 and 1 for scheduler.eta but received 1.5"),
        (json!({"eta": -0.1}), "Expected number between 0 and 1 for scheduler.eta but received -0.1"),
        (json!({"eta": "x"}), r#"Expected number for scheduler.eta but received "x""#),
        (json!({"num_train_timesteps": 0}), "Expected integer between 1 and 100000 for scheduler.num_train_timesteps but received 0"),
        (json!({"beta_start": 0.02}),
            "Expected number above scheduler.beta_start (0.02) and below 1 for scheduler.beta_end but received 0.012"),
        (json!({"beta_start": -0.001}), "Expected number >= 0 and < 1 for scheduler.beta_start but received -0.001"),
        (json!({"beta_end": 1.0}),
            "Expected number above scheduler.beta_start (0.00085) and below 1 for scheduler.beta_end but received 1"),
        (json!({"trained_betas": vec![0.01; 10]}),
            "Expected 1000 betas (one per scheduler.num_train_timesteps) for scheduler.trained_betas but received 10 betas"),
        (json!({"num_train_timesteps": 2, "trained_betas": [0.01, 1.0]}),
            "Expected number >= 0 and < 1 for scheduler.trained_betas[1] but received 1"),
        (json!({"num_train_timesteps": 2, "trained_betas": [0.0, 0.0]}),
            "Expected betas with at least one above 0 (all zero: the noise never changes, the image is black) for scheduler.trained_betas but received all zeros"),
        (json!({"clip_sample_range": 0.0}), "Expected finite number > 0 for scheduler.clip_sample_range but received 0"),
        (json!({"steps_offset": 1000}),
            "Expected integer below scheduler.num_train_timesteps (1000) for scheduler.steps_offset but received 1000"),
        (json!({"thresholding": true}),
            "Expected false (dynamic thresholding is for pixel-space models and is not supported) for scheduler.thresholding but received true"),
        (json!({"timestep_spacing": "middle"}),
            r#"Expected one of "leading", "trailing", "linspace" for scheduler.timestep_spacing but received "middle""#),
        (json!({"skip_prk_steps": true}),
            "scheduler.skip_prk_steps is not an option of the ddim scheduler (DDIMScheduler); its options are num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, clip_sample, clip_sample_range, set_alpha_to_one, steps_offset, prediction_type, thresholding, dynamic_thresholding_ratio, sample_max_value, timestep_spacing, rescale_betas_zero_snr, eta"),
    ];
    for (overrides, message) in sweep {
        let err = sd15.with_overrides(&object(overrides.clone())).unwrap_err();
        assert_eq!(err.to_string(), message, "{overrides}");
        assert_eq!(err.code(), "ERR_CANDLEWICK_INVALID_OPTION");
    }
    // An unknown type lists every name a call accepts (the list grows with each scheduler).
    let err = sd15.with_overrides(&object(json!({"type": "euler-b"}))).unwrap_err().to_string();
    assert!(err.starts_with(r#"Expected one of "ddim", "#), "{err}");
    assert!(err.ends_with(r#"Scheduler" for scheduler.type but received "euler-b""#), "{err}");
    for name in SchedulerKind::type_names() {
        assert!(err.contains(&format!("{name:?}")), "{name} missing from {err}");
    }
}

#[test]
fn bad_enum_strings_list_the_allowed_values() {
    let sweep = [
        (
            TimestepSpacing::parse("middle", "scheduler.timestep_spacing").map(|_| ()),
            r#"Expected one of "leading", "trailing", "linspace" for scheduler.timestep_spacing but received "middle""#,
        ),
        (
            BetaSchedule::parse("cosine", "scheduler.beta_schedule").map(|_| ()),
            r#"Expected one of "linear", "scaled_linear", "squaredcos_cap_v2" for scheduler.beta_schedule but received "cosine""#,
        ),
        (
            PredictionType::parse("", "scheduler.prediction_type").map(|_| ()),
            r#"Expected one of "epsilon", "v_prediction", "sample" for scheduler.prediction_type but received """#,
        ),
    ];
    for (result, message) in sweep {
        assert_eq!(result.unwrap_err().to_string(), message);
    }
    for s in ["leading", "trailing", "linspace"] {
        assert_eq!(TimestepSpacing::parse(s, "x").unwrap().as_str(), s);
    }
}

#[test]
fn bad_step_counts_name_num_inference_steps() {
    let sd15 = config(&case("sd15_50"));
    for (n, message) in [
        (0, "Expected integer between 1 and 1000 for num_inference_steps but received 0"),
        (1001, "Expected integer between 1 and 1000 for num_inference_steps but received 1001"),
        // diffusers gives timestep 1000 here and fails with an IndexError.
        (
            1000,
            "Expected at most 999 steps with scheduler.steps_offset 1 (the first timestep would be 1000, past the last \
                training timestep 999) for num_inference_steps but received 1000",
        ),
    ] {
        assert_eq!(DdimScheduler::new(sd15.clone(), n).unwrap_err().to_string(), message);
    }
    let mut s = DdimScheduler::new(sd15, 50).unwrap();
    let x = tensor(&[0.0; 16]);
    assert!(s.step(&x, 1000.0, &x, &mut NoNoise).is_err(), "timestep past the training range");
}
