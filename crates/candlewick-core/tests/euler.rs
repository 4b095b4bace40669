//! Euler, Euler ancestral and Heun beyond the step-by-step replay of tests/schedulers.rs: their
//! defaults against diffusers' resolved configs, the names users pick them by, and the messages
//! for configs diffusers refuses or Candlewick does not support.
//! Goldens: test/fixtures/goldens/schedulers.json (scripts/fixture_schedulers.py).
use std::path::Path;

use candle_core::{Device, Tensor};
use candlewick_core::schedulers::scheduling_euler_ancestral_discrete::{
    EulerAncestralDiscreteScheduler, EulerAncestralDiscreteSchedulerConfig,
};
use candlewick_core::schedulers::scheduling_euler_discrete::{EulerDiscreteScheduler, EulerDiscreteSchedulerConfig};
use candlewick_core::schedulers::scheduling_heun_discrete::{HeunDiscreteScheduler, HeunDiscreteSchedulerConfig};
use candlewick_core::schedulers::{NoNoise, Scheduler, SchedulerChoice, SchedulerKind};
use serde_json::{json, Map, Value};

#[derive(serde::Deserialize)]
struct Goldens {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    config: Map<String, Value>,
    timesteps: Vec<f64>,
}

fn case(name: &str) -> Case {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/goldens/schedulers.json");
    let goldens: Goldens = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    goldens.cases.into_iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no golden case {name}"))
}

fn object(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// SD1.5's scheduler folder as diffusers saves a DDIM swap of it (tiny-sd's config).
fn sd15_ddim_folder() -> SchedulerChoice {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/tiny-sd/scheduler/scheduler_config.json");
    SchedulerChoice::from_folder(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()).unwrap()
}

#[test]
fn defaults_are_diffusers_defaults() {
    // The goldens' `*_defaults_*` cases are `Class()` with no arguments: diffusers' resolved config.
    let parse = |name: &str| Value::Object(case(name).config);
    let euler: EulerDiscreteSchedulerConfig = serde_json::from_value(parse("euler_defaults_10")).unwrap();
    assert_eq!(euler, EulerDiscreteSchedulerConfig::default());
    let ancestral: EulerAncestralDiscreteSchedulerConfig =
        serde_json::from_value(parse("euler_a_defaults_10")).unwrap();
    assert_eq!(ancestral, EulerAncestralDiscreteSchedulerConfig::default());
    let heun: HeunDiscreteSchedulerConfig = serde_json::from_value(parse("heun_defaults_8")).unwrap();
    assert_eq!(heun, HeunDiscreteSchedulerConfig::default());
    // And an empty config takes them.
    assert_eq!(serde_json::from_value::<EulerDiscreteSchedulerConfig>(json!({})).unwrap(), euler);
}

#[test]
fn names_users_know_pick_the_class_and_its_fields() {
    let folder = sd15_ddim_folder();
    let choose = |t: &str| folder.with_overrides(&object(json!({ "type": t }))).unwrap();
    for (name, kind, karras) in [
        ("euler", SchedulerKind::EulerDiscrete, None),
        ("EulerDiscreteScheduler", SchedulerKind::EulerDiscrete, None),
        ("euler-karras", SchedulerKind::EulerDiscrete, Some(true)),
        ("euler-a", SchedulerKind::EulerAncestralDiscrete, None),
        ("euler-ancestral", SchedulerKind::EulerAncestralDiscrete, None),
        ("EulerAncestralDiscreteScheduler", SchedulerKind::EulerAncestralDiscrete, None),
        ("heun", SchedulerKind::HeunDiscrete, None),
        ("heun-karras", SchedulerKind::HeunDiscrete, Some(true)),
    ] {
        let choice = choose(name);
        assert_eq!(choice.kind(), kind, "{name}");
        assert_eq!(choice.config().get("use_karras_sigmas").and_then(Value::as_bool), karras, "{name}");
        // The folder's noise schedule and spacing carry over; DDIM-only fields are dropped.
        assert_eq!(choice.config().get("steps_offset"), Some(&json!(1)), "{name}");
        assert_eq!(choice.config().get("timestep_spacing"), Some(&json!("leading")), "{name}");
        assert!(choice.config().get("set_alpha_to_one").is_none(), "{name}");
    }
    // "heun-karras" over SD1.5's (leading) config runs diffusers' HeunDiscreteScheduler with Karras sigmas.
    let golden = case("heun_sd15_leading_karras_5");
    let heun = choose("heun-karras").build(5).unwrap();
    let f32s = |t: &[f64]| t.iter().map(|&t| t as f32).collect::<Vec<f32>>();
    assert_eq!(f32s(heun.timesteps()), f32s(&golden.timesteps));
    assert_eq!(heun.order(), 2);
}

#[test]
fn bad_configs_name_the_option() {
    let folder = sd15_ddim_folder();
    let sweep = [
        (json!({"type": "euler", "use_beta_sigmas": true}),
            "Expected false (beta sigmas are not supported; use_karras_sigmas or use_exponential_sigmas are) for scheduler.use_beta_sigmas but received true"),
        (json!({"type": "euler", "use_karras_sigmas": true, "use_exponential_sigmas": true}),
            "Expected false when scheduler.use_karras_sigmas is true (only one sigma schedule can be used) for scheduler.use_exponential_sigmas but received true"),
        (json!({"type": "heun-karras", "use_exponential_sigmas": true}),
            "Expected false when scheduler.use_karras_sigmas is true (only one sigma schedule can be used) for scheduler.use_exponential_sigmas but received true"),
        (json!({"type": "euler", "sigma_min": -1.0}), "Expected finite number > 0 or null for scheduler.sigma_min but received -1"),
        (json!({"type": "euler", "sigma_min": 1.0, "sigma_max": 0.5}),
            "Expected number above scheduler.sigma_min (1) for scheduler.sigma_max but received 0.5"),
        (json!({"type": "euler", "interpolation_type": "cubic"}),
            r#"Expected one of "linear", "log_linear" for scheduler.interpolation_type but received "cubic""#),
        (json!({"type": "euler", "timestep_type": "edm"}),
            r#"Expected one of "discrete", "continuous" for scheduler.timestep_type but received "edm""#),
        (json!({"type": "euler", "final_sigmas_type": "denoise_to_zero"}),
            r#"Expected one of "zero", "sigma_min" for scheduler.final_sigmas_type but received "denoise_to_zero""#),
        (json!({"type": "euler-a", "prediction_type": "sample"}),
            r#"Expected "epsilon" or "v_prediction" (diffusers' EulerAncestralDiscreteScheduler does not implement "sample") for scheduler.prediction_type but received "sample""#),
        (json!({"type": "heun", "clip_sample_range": 0.0}), "Expected finite number > 0 for scheduler.clip_sample_range but received 0"),
        (json!({"type": "heun", "beta_schedule": "exp"}),
            r#"Expected one of "linear", "scaled_linear", "squaredcos_cap_v2" for scheduler.beta_schedule but received "exp""#),
        (json!({"type": "euler", "use_karras_sigmas": null}), "Expected boolean for scheduler.use_karras_sigmas but received null"),
        (json!({"type": "euler", "eta": 0.5}),
            "scheduler.eta is not an option of the euler scheduler (EulerDiscreteScheduler); its options are num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, prediction_type, interpolation_type, use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas, sigma_min, sigma_max, timestep_spacing, timestep_type, steps_offset, rescale_betas_zero_snr, final_sigmas_type"),
        (json!({"type": "heun", "final_sigmas_type": "zero"}),
            "scheduler.final_sigmas_type is not an option of the heun scheduler (HeunDiscreteScheduler); its options are num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, prediction_type, use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas, clip_sample, clip_sample_range, timestep_spacing, steps_offset"),
        (json!({"type": "euler-a", "use_karras_sigmas": true}),
            "scheduler.use_karras_sigmas is not an option of the euler-ancestral scheduler (EulerAncestralDiscreteScheduler); its options are num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, prediction_type, timestep_spacing, steps_offset, rescale_betas_zero_snr"),
    ];
    for (overrides, message) in sweep {
        let err = folder.with_overrides(&object(overrides.clone())).unwrap_err();
        assert_eq!(err.to_string(), message, "{overrides}");
        assert_eq!(err.code(), "ERR_CANDLEWICK_INVALID_OPTION");
    }
}

#[test]
fn bad_step_counts_name_num_inference_steps() {
    for n in [0, 1001] {
        let message = format!("Expected integer between 1 and 1000 for num_inference_steps but received {n}");
        let euler = EulerDiscreteScheduler::new(Default::default(), n).unwrap_err();
        assert_eq!(euler.to_string(), message);
        let ancestral = EulerAncestralDiscreteScheduler::new(Default::default(), n).unwrap_err();
        assert_eq!(ancestral.to_string(), message);
        assert_eq!(HeunDiscreteScheduler::new(Default::default(), n).unwrap_err().to_string(), message);
    }
}

#[test]
fn a_step_past_the_last_timestep_is_an_error_not_a_panic() {
    let x = Tensor::zeros((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut euler = EulerDiscreteScheduler::new(Default::default(), 2).unwrap();
    let mut heun = HeunDiscreteScheduler::new(Default::default(), 2).unwrap();
    for s in [&mut euler as &mut dyn Scheduler, &mut heun] {
        let timesteps = s.timesteps().to_vec();
        for &t in &timesteps {
            s.step(&x, t, &x, &mut NoNoise).unwrap();
        }
        assert!(s.step(&x, timesteps[0], &x, &mut NoNoise).is_err());
    }
    let fresh = EulerDiscreteScheduler::new(Default::default(), 2).unwrap();
    assert!(fresh.scale_model_input(&x, 12.5).is_err(), "a timestep not in the schedule");
}

#[test]
fn euler_ancestral_draws_fresh_noise_every_step() {
    struct Count(usize);
    impl candlewick_core::schedulers::StepNoise for Count {
        fn sample_like(&mut self, like: &Tensor) -> candlewick_core::Result<Tensor> {
            self.0 += 1;
            Ok(like.ones_like()?)
        }
    }
    let x = Tensor::ones((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut s = EulerAncestralDiscreteScheduler::new(Default::default(), 4).unwrap();
    let mut noise = Count(0);
    for t in s.timesteps().to_vec() {
        s.step(&x, t, &x, &mut noise).unwrap();
    }
    assert_eq!(noise.0, 4);
}

/// A folder config without `timestep_spacing` (SD1.5's own scheduler_config.json) swapped to Euler
/// runs Euler's default spacing, linspace, not the folder class's default, leading: diffusers'
/// `from_config(pipe.scheduler.config)` drops the values the folder's class defaulted
/// (`_use_default_values`). That is the golden `euler_sd15_20` (`from_config` of the raw config).
#[test]
fn a_swap_inherits_the_folders_keys_not_its_class_defaults() {
    let raw = json!({
        "_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000, "steps_offset": 1, "set_alpha_to_one": false, "clip_sample": false,
        "skip_prk_steps": true, "trained_betas": null
    });
    let folder = SchedulerChoice::from_folder(object(raw)).unwrap();
    let euler = folder.with_overrides(&object(json!({"type": "euler"}))).unwrap().build(20).unwrap();
    let golden = case("euler_sd15_20");
    let f32s = |t: &[f64]| t.iter().map(|&t| t as f32).collect::<Vec<f32>>();
    assert_eq!(f32s(euler.timesteps()), f32s(&golden.timesteps));
    assert_eq!(golden.config.get("timestep_spacing"), Some(&json!("linspace")));
    // linspace: the initial noise is sigma_max itself, not sqrt(sigma_max^2 + 1).
    assert!((euler.init_noise_sigma() - 14.614646911621094).abs() < 1e-6);
}

/// A one-timestep training schedule (the smallest num_train_timesteps allowed) sets up and steps
/// with every sigma schedule instead of indexing past its one sigma.
#[test]
fn a_one_timestep_schedule_does_not_panic() {
    let folder = sd15_ddim_folder();
    let x = Tensor::ones((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    for t in ["euler", "euler-karras", "heun-karras", "euler-a"] {
        let overrides = object(json!({"type": t, "num_train_timesteps": 1, "steps_offset": 0}));
        let mut s = folder.with_overrides(&overrides).unwrap().build(1).unwrap();
        for ts in s.timesteps().to_vec() {
            s.step(&x, ts, &x, &mut Ones).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
    }
}

struct Ones;
impl candlewick_core::schedulers::StepNoise for Ones {
    fn sample_like(&mut self, like: &Tensor) -> candlewick_core::Result<Tensor> {
        Ok(like.ones_like()?)
    }
}
