//! PNDM, DDPM and LCM beyond the step-by-step goldens (tests/schedulers.rs): how a folder and a
//! call choose them, the step counts and fields they refuse and why, and the state img2img relies
//! on. Goldens: test/fixtures/goldens/schedulers.json (scripts/fixture_schedulers.py).
use std::path::Path;

use candle_core::{Device, Tensor};
use candlewick_core::schedulers::{SchedulerChoice, SchedulerKind, StepNoise};
use serde_json::{json, Map, Value};

fn object(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// SD1.5's scheduler/scheduler_config.json.
fn sd15_folder() -> SchedulerChoice {
    SchedulerChoice::from_folder(object(json!({
        "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
        "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null,
        "clip_sample": false
    })))
    .unwrap()
}

/// A golden case's merged config and timesteps, as diffusers resolved `from_config(SD1.5, **overrides)`.
fn golden(name: &str) -> (Map<String, Value>, Vec<f64>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/goldens/schedulers.json");
    let goldens: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = goldens["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    let timesteps = case["timesteps"].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect();
    (case["config"].as_object().unwrap().clone(), timesteps)
}

fn err(choice: &SchedulerChoice, overrides: Value, steps: usize) -> String {
    match choice.with_overrides(&object(overrides.clone())) {
        Err(e) => e.to_string(),
        Ok(c) => {
            c.build(steps).map(|_| ()).expect_err(&format!("{overrides} with {steps} steps was accepted")).to_string()
        }
    }
}

/// Counts the noise a step draws (zeros of the asked shape).
struct Count(usize);

impl StepNoise for Count {
    fn sample_like(&mut self, like: &Tensor) -> candlewick_core::Result<Tensor> {
        self.0 += 1;
        Ok(like.zeros_like()?)
    }
}

#[test]
fn an_sd15_folder_runs_pndm_with_the_second_timestep_twice() {
    let sd15 = sd15_folder();
    assert_eq!(sd15.kind(), SchedulerKind::Pndm);
    let s = sd15.build(50).unwrap();
    let (_, want) = golden("pndm_sd15_50");
    assert_eq!(s.timesteps(), want.as_slice());
    assert_eq!(s.timesteps().len(), 51);
    assert_eq!(&s.timesteps()[..4], &[981.0, 961.0, 961.0, 941.0]);
    assert_eq!((s.init_noise_sigma(), s.order()), (1.0, 1));
}

#[test]
fn pndm_and_plms_by_name() {
    let ddim = SchedulerChoice::defaults(SchedulerKind::Ddim);
    // "plms" forces skip_prk_steps; "pndm" keeps the folder's (here: the class default, false).
    let plms = ddim.with_overrides(&object(json!({"type": "plms"}))).unwrap();
    assert_eq!((plms.kind(), plms.config().get("skip_prk_steps")), (SchedulerKind::Pndm, Some(&json!(true))));
    assert_eq!(plms.build(50).unwrap().timesteps().len(), 51);
    let pndm = ddim.with_overrides(&object(json!({"type": "pndm"}))).unwrap();
    // 12 Runge-Kutta calls on the last 4 timesteps, then PLMS on the other 47.
    assert_eq!(pndm.build(50).unwrap().timesteps().len(), 59);
    let from_sd15 = sd15_folder().with_overrides(&object(json!({"type": "PNDMScheduler"}))).unwrap();
    assert_eq!(from_sd15.build(50).unwrap().timesteps().len(), 51);
    // The PRK golden from the same fields.
    let prk = sd15_folder().with_overrides(&object(json!({"skip_prk_steps": false}))).unwrap();
    assert_eq!(prk.build(10).unwrap().timesteps(), golden("pndm_prk_sd15_10").1.as_slice());
}

#[test]
fn pndm_refusals_say_why() {
    let sd15 = sd15_folder();
    assert_eq!(
        err(&sd15, json!({"skip_prk_steps": false}), 3),
        "Expected integer of at least 4 when scheduler.skip_prk_steps is false (PNDM's Runge-Kutta warm-up runs on the \
         last 4 timesteps; set scheduler.skip_prk_steps to true for fewer steps) for num_inference_steps but received 3"
    );
    assert_eq!(
        err(&sd15, json!({"prediction_type": "sample"}), 10),
        r#"Expected "epsilon" or "v_prediction" (diffusers' PNDMScheduler has no "sample" prediction) for scheduler.prediction_type but received "sample""#
    );
    assert_eq!(
        err(&sd15, json!({}), 1000),
        "Expected at most 999 steps with scheduler.steps_offset 1 (the first timestep would be 1000, past the last \
         training timestep 999) for num_inference_steps but received 1000"
    );
    assert_eq!(err(&sd15, json!({}), 0), "Expected integer between 1 and 1000 for num_inference_steps but received 0");
    assert_eq!(
        err(&sd15, json!({"eta": 0.5}), 10),
        "scheduler.eta is not an option of the pndm scheduler (PNDMScheduler); its options are num_train_timesteps, \
         beta_start, beta_end, beta_schedule, trained_betas, skip_prk_steps, set_alpha_to_one, prediction_type, \
         timestep_spacing, steps_offset"
    );
    // A folder whose PNDM runs the warm-up still loads: the step count is checked per call.
    let folder = SchedulerChoice::from_folder(object(json!({"_class_name": "PNDMScheduler", "skip_prk_steps": false})));
    assert!(folder.unwrap().build(4).is_ok());
}

#[test]
fn pndm_trailing_keeps_the_real_timesteps_where_numpy_adds_one() {
    // np.arange(1000, 0, -1000 / 61) yields 62 values; diffusers then runs a 63rd call at timestep
    // -1 (alphas_cumprod[-1]: the noisiest alpha). Candlewick keeps the 61 real timesteps, as DDIM does.
    let s = sd15_folder().with_overrides(&object(json!({"timestep_spacing": "trailing"}))).unwrap().build(61).unwrap();
    assert_eq!(s.timesteps().len(), 62);
    assert!(s.timesteps().iter().all(|&t| t >= 0.0), "{:?}", s.timesteps());
}

#[test]
fn ddpm_refusals_say_why() {
    let sd15 = sd15_folder();
    let ddpm = |fields: Value| {
        let mut map = object(fields);
        map.insert("type".into(), json!("ddpm"));
        Value::Object(map)
    };
    let fixed = r#"Expected "fixed_small", "fixed_small_log" or "fixed_large" ("#;
    for learned in ["learned", "learned_range"] {
        assert_eq!(
            err(&sd15, ddpm(json!({"variance_type": learned})), 10),
            format!(
                "{fixed}a learned variance needs a model that predicts it in extra output channels; Stable Diffusion \
                 UNets output 4 channels) for scheduler.variance_type but received {learned:?}"
            )
        );
    }
    assert_eq!(
        err(&sd15, ddpm(json!({"variance_type": "fixed_large_log"})), 10),
        format!(
            "{fixed}diffusers' DDPMScheduler takes the square root of the negative log(beta) of \"fixed_large_log\": \
             every step is NaN, a black image) for scheduler.variance_type but received \"fixed_large_log\""
        )
    );
    assert_eq!(
        err(&sd15, ddpm(json!({"variance_type": "small"})), 10),
        r#"Expected one of "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range" for scheduler.variance_type but received "small""#
    );
    assert_eq!(
        err(&sd15, ddpm(json!({"thresholding": true})), 10),
        "Expected false (dynamic thresholding is for pixel-space models and is not supported) for scheduler.thresholding \
         but received true"
    );
    assert_eq!(
        err(&sd15, ddpm(json!({"clip_sample_range": -1.0})), 10),
        "Expected finite number > 0 for scheduler.clip_sample_range but received -1"
    );
    assert!(err(&sd15, ddpm(json!({"skip_prk_steps": true})), 10).starts_with(
        "scheduler.skip_prk_steps is not an option of the ddpm scheduler (DDPMScheduler); its options are"
    ));
}

#[test]
fn lcm_from_an_sd15_folder_is_from_config() {
    // diffusers' LCMScheduler.from_config(SD1.5's config): SD1.5's fields, skip_prk_steps dropped.
    let lcm = sd15_folder().with_overrides(&object(json!({"type": "lcm"}))).unwrap();
    let (config, timesteps) = golden("lcm_sd15_6");
    assert_eq!(lcm.build(6).unwrap().timesteps(), timesteps.as_slice());
    for (key, value) in lcm.config() {
        assert_eq!(config.get(key), Some(value), "{key}");
    }
    assert!(!lcm.config().contains_key("skip_prk_steps"));
}

#[test]
fn lcm_refusals_say_why() {
    let lcm = SchedulerChoice::defaults(SchedulerKind::Lcm);
    assert_eq!(
        err(&lcm, json!({}), 51),
        "Expected integer between 1 and scheduler.original_inference_steps (50): LCM picks its timesteps from that many \
         for num_inference_steps but received 51"
    );
    assert_eq!(
        err(&lcm, json!({"original_inference_steps": 0}), 1),
        "Expected integer between 1 and scheduler.num_train_timesteps (1000) for scheduler.original_inference_steps but \
         received 0"
    );
    assert_eq!(
        err(&lcm, json!({"original_inference_steps": 1001}), 1),
        "Expected integer between 1 and scheduler.num_train_timesteps (1000) for scheduler.original_inference_steps but \
         received 1001"
    );
    assert_eq!(
        err(&lcm, json!({"timestep_scaling": 0.0}), 4),
        "Expected finite number > 0 for scheduler.timestep_scaling but received 0"
    );
    assert!(err(&lcm, json!({"variance_type": "fixed_small"}), 4)
        .starts_with("scheduler.variance_type is not an option of the lcm scheduler (LCMScheduler); its options are"));
}

#[test]
fn lcm_steps_from_the_begin_index_and_renoises_all_but_the_last() {
    let x = Tensor::new(&[0.5f32, -0.25, 1.0, 0.0], &Device::Cpu).unwrap();
    let mut s = SchedulerChoice::defaults(SchedulerKind::Lcm).build(4).unwrap();
    let ts = s.timesteps().to_vec();
    assert_eq!(ts, [999.0, 759.0, 499.0, 259.0]);
    // img2img: start at index 2; the step there re-noises, the last one does not.
    s.set_begin_index(2);
    let mut noise = Count(0);
    let mid = s.step(&x, ts[2], &x, &mut noise).unwrap();
    assert_eq!(noise.0, 1);
    s.step(&x, ts[3], &mid, &mut noise).unwrap();
    assert_eq!(noise.0, 1, "the last step draws no noise");
    // Without a begin index the first step finds its place from its timestep: the same numbers.
    let mut fresh = SchedulerChoice::defaults(SchedulerKind::Lcm).build(4).unwrap();
    let again = fresh.step(&x, ts[2], &x, &mut Count(0)).unwrap();
    assert_eq!(again.to_vec1::<f32>().unwrap(), mid.to_vec1::<f32>().unwrap());
}
