//! Goldens: test/fixtures/goldens/ddim.json, made by scripts/make_fixtures.py (scripts/fixture_ddim.py):
//! diffusers 0.42's `DDIMScheduler(**config)`, `set_timesteps(n)`, then `step(model_output, t, sample,
//! eta, variance_noise=...)` at the first, middle and last timestep of a sweep of configs.
use std::path::Path;

use candle_core::{Device, Tensor};
use candlewick_core::schedulers::ddim::{
    BetaSchedule, DdimOverrides, DdimScheduler, DdimSchedulerConfig, PredictionType, TimestepSpacing,
};

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
    serde_json::from_value(c.config.clone()).unwrap_or_else(|e| panic!("{}: config: {e}", c.name))
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
        let s = DdimScheduler::new(cfg, c.num_inference_steps).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(s.timesteps(), c.timesteps.as_slice(), "{}: timesteps", c.name);
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
            let noise = st.variance_noise.as_deref().map(tensor);
            let prev = s
                .step(&tensor(&st.model_output), st.timestep, &tensor(&st.sample), c.eta, noise.as_ref())
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
fn overrides_are_applied() {
    let sd15 = config(&case("sd15_50"));
    let o = DdimOverrides { timestep_spacing: Some(TimestepSpacing::Trailing), ..Default::default() };
    assert_eq!(sd15.with_overrides(&o).unwrap(), config(&case("sd15_trailing_50")));
    let o = DdimOverrides {
        rescale_betas_zero_snr: Some(true),
        prediction_type: Some(PredictionType::VPrediction),
        timestep_spacing: Some(TimestepSpacing::Trailing),
        eta: Some(0.8),
        ..Default::default()
    };
    assert_eq!(sd15.with_overrides(&o).unwrap(), config(&case("zero_snr_v_trailing_7_eta0.8")));
    let linear = config(&case("linear_defaults_50"));
    let o = DdimOverrides { clip_sample_range: Some(0.5), ..Default::default() };
    assert_eq!(linear.with_overrides(&o).unwrap(), config(&case("linear_clip0.5_7")));
    assert_eq!(sd15.with_overrides(&DdimOverrides::default()).unwrap(), sd15);
}

#[test]
fn add_noise_uses_alphas_cumprod_at_the_timestep() {
    let c = case("sd15_50");
    let s = DdimScheduler::new(config(&c), c.num_inference_steps).unwrap();
    let st = &c.steps[0];
    let (x, n) = (tensor(&st.sample), tensor(&st.model_output));
    let a = c.alphas_cumprod_at_timesteps[0];
    let noisy = s.add_noise(&x, &n, c.timesteps[0]).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for ((got, x), n) in noisy.iter().zip(&st.sample).zip(&st.model_output) {
        let want = a.sqrt() * *x as f64 + (1.0 - a).sqrt() * *n as f64;
        assert!((*got as f64 - want).abs() <= 1e-5 * want.abs().max(1.0), "{got} vs {want}");
    }
}

#[test]
fn bad_config_values_in_scheduler_config_json_name_the_field() {
    for (json, message) in [
        (
            r#"{"timestep_spacing": "middle"}"#,
            r#"timestep_spacing is "middle"; expected "leading", "trailing", "linspace""#,
        ),
        (
            r#"{"beta_schedule": "cosine"}"#,
            r#"beta_schedule is "cosine"; expected "linear", "scaled_linear", "squaredcos_cap_v2""#,
        ),
        (r#"{"prediction_type": "v"}"#, r#"prediction_type is "v"; expected "epsilon", "v_prediction", "sample""#),
    ] {
        let err = serde_json::from_str::<DdimSchedulerConfig>(json).unwrap_err().to_string();
        assert!(err.starts_with(message), "{json}: {err}");
    }
}

#[test]
fn bad_overrides_say_what_was_expected() {
    let sd15 = config(&case("sd15_50"));
    let o = DdimOverrides::default;
    let sweep: Vec<(DdimOverrides, &str)> = vec![
        (DdimOverrides { eta: Some(1.5), ..o() }, "Expected number between 0 and 1 for scheduler.eta but received 1.5"),
        (DdimOverrides { eta: Some(-0.1), ..o() }, "Expected number between 0 and 1 for scheduler.eta but received -0.1"),
        (DdimOverrides { eta: Some(f64::NAN), ..o() }, "Expected number between 0 and 1 for scheduler.eta but received NaN"),
        (DdimOverrides { num_train_timesteps: Some(0), ..o() },
            "Expected integer between 1 and 100000 for scheduler.numTrainTimesteps but received 0"),
        (DdimOverrides { beta_start: Some(0.02), ..o() },
            "Expected number above scheduler.betaStart (0.02) and below 1 for scheduler.betaEnd but received 0.012"),
        (DdimOverrides { beta_start: Some(-0.001), ..o() },
            "Expected number >= 0 and < 1 for scheduler.betaStart but received -0.001"),
        (DdimOverrides { beta_end: Some(1.0), ..o() },
            "Expected number above scheduler.betaStart (0.00085) and below 1 for scheduler.betaEnd but received 1"),
        (DdimOverrides { trained_betas: Some(vec![0.01; 10]), ..o() },
            "Expected 1000 betas (one per scheduler.numTrainTimesteps) for scheduler.trainedBetas but received 10 of them"),
        (DdimOverrides { num_train_timesteps: Some(2), trained_betas: Some(vec![0.01, 1.0]), ..o() },
            "Expected betas >= 0 and < 1 for scheduler.trainedBetas but received 1"),
        (DdimOverrides { clip_sample_range: Some(0.0), ..o() },
            "Expected finite number > 0 for scheduler.clipSampleRange but received 0"),
        (DdimOverrides { clip_sample_range: Some(f64::INFINITY), ..o() },
            "Expected finite number > 0 for scheduler.clipSampleRange but received inf"),
        (DdimOverrides { steps_offset: Some(1000), ..o() },
            "Expected integer below scheduler.numTrainTimesteps (1000) for scheduler.stepsOffset but received 1000"),
        (DdimOverrides { thresholding: Some(true), ..o() },
            "Expected false (dynamic thresholding is for pixel-space models and is not supported) for scheduler.thresholding but received true"),
    ];
    for (overrides, message) in sweep {
        let err = sd15.with_overrides(&overrides).unwrap_err();
        assert_eq!(err.to_string(), message, "{overrides:?}");
        assert_eq!(err.code(), "ERR_CANDLEWICK_INVALID_OPTION");
    }
}

#[test]
fn bad_enum_strings_list_the_allowed_values() {
    let sweep = [
        (
            TimestepSpacing::parse("middle").map(|_| ()),
            r#"Expected one of "leading", "trailing", "linspace" for scheduler.timestepSpacing but received "middle""#,
        ),
        (
            TimestepSpacing::parse("Leading").map(|_| ()),
            r#"Expected one of "leading", "trailing", "linspace" for scheduler.timestepSpacing but received "Leading""#,
        ),
        (
            BetaSchedule::parse("cosine").map(|_| ()),
            r#"Expected one of "linear", "scaled_linear", "squaredcos_cap_v2" for scheduler.betaSchedule but received "cosine""#,
        ),
        (
            PredictionType::parse("").map(|_| ()),
            r#"Expected one of "epsilon", "v_prediction", "sample" for scheduler.predictionType but received """#,
        ),
    ];
    for (result, message) in sweep {
        assert_eq!(result.unwrap_err().to_string(), message);
    }
    for s in ["leading", "trailing", "linspace"] {
        assert_eq!(TimestepSpacing::parse(s).unwrap().as_str(), s);
    }
}

#[test]
fn bad_step_counts_name_num_inference_steps() {
    let sd15 = config(&case("sd15_50"));
    for (n, message) in [
        (0, "Expected integer between 1 and 1000 for numInferenceSteps but received 0"),
        (1001, "Expected integer between 1 and 1000 for numInferenceSteps but received 1001"),
        // diffusers gives timestep 1000 here and fails with an IndexError.
        (
            1000,
            "Expected at most 999 steps with scheduler.stepsOffset 1 (the first timestep would be 1000, past the last \
                training timestep 999) for numInferenceSteps but received 1000",
        ),
    ] {
        assert_eq!(DdimScheduler::new(sd15.clone(), n).unwrap_err().to_string(), message);
    }
    let s = DdimScheduler::new(sd15, 50).unwrap();
    let x = tensor(&[0.0; 16]);
    assert!(s.step(&x, 1000, &x, 0.0, None).is_err(), "timestep past the training range");
    assert!(s.step(&x, 981, &x, 0.5, None).is_err(), "eta > 0 without variance_noise");
}
