//! Every scheduler against diffusers. Goldens: test/fixtures/goldens/schedulers.{json,safetensors},
//! made by scripts/fixture_schedulers.py: `Class.from_config(base, **overrides)`, `set_timesteps(n)`,
//! then per UNet call `scale_model_input`, a stand-in model output and `step`, with every noise
//! tensor the step drew recorded and replayed here in order.
use std::collections::{HashMap, VecDeque};
use std::path::Path;

use candle_core::{Device, Tensor};
use candlewick_core::schedulers::{Scheduler, SchedulerChoice, SchedulerKind, StepNoise};
use serde_json::{Map, Value};

#[derive(serde::Deserialize)]
struct Goldens {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    class_name: String,
    config: Map<String, Value>,
    num_inference_steps: usize,
    step_kwargs: Map<String, Value>,
    timesteps: Vec<f64>,
    sigmas: Option<Vec<f64>>,
    init_noise_sigma: f64,
    order: usize,
    unet_calls: usize,
    /// img2img's start at strength 0.5 (None where no step is left).
    add_noise_begin_index: Option<usize>,
}

fn goldens() -> (Vec<Case>, HashMap<String, Tensor>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/goldens");
    let text = std::fs::read_to_string(dir.join("schedulers.json")).expect("schedulers.json");
    let goldens: Goldens = serde_json::from_str(&text).expect("schedulers.json");
    let tensors = candle_core::safetensors::load(dir.join("schedulers.safetensors"), &Device::Cpu).expect("tensors");
    (goldens.cases, tensors)
}

/// The scheduler as the pipeline makes it: the class from `_class_name`, then the call's fields
/// (DDIM's eta is a step argument in diffusers and a scheduler field here).
fn scheduler(c: &Case) -> Box<dyn Scheduler> {
    let mut folder = c.config.clone();
    folder.insert("_class_name".into(), Value::String(c.class_name.clone()));
    let choice = SchedulerChoice::from_folder(folder).unwrap_or_else(|e| panic!("{}: {e}", c.name));
    let choice = choice.with_overrides(&c.step_kwargs).unwrap_or_else(|e| panic!("{}: {e}", c.name));
    choice.build(c.num_inference_steps).unwrap_or_else(|e| panic!("{}: {e}", c.name))
}

/// diffusers' recorded noise, handed out in the order the steps asked for it.
struct Replay(VecDeque<Tensor>);

impl StepNoise for Replay {
    fn sample_like(&mut self, like: &Tensor) -> candlewick_core::Result<Tensor> {
        let noise = self.0.pop_front().expect("the step drew more noise than diffusers' did");
        assert_eq!(noise.dims(), like.dims());
        Ok(noise)
    }
}

fn max_rel(got: &Tensor, want: &Tensor) -> f64 {
    let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
    got.iter().zip(&want).fold(0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs())) / scale
}

/// Timesteps and sigmas exactly (to float32 rounding), then every UNet call's model input and
/// prev_sample within 1e-6 relative (of the tensor's largest value), with the sample carried by
/// Candlewick's own steps from the first call to the last.
fn check(c: &Case, t: &HashMap<String, Tensor>) -> f64 {
    let mut s = scheduler(c);
    let timesteps: Vec<f32> = s.timesteps().iter().map(|&t| t as f32).collect();
    let want: Vec<f32> = c.timesteps.iter().map(|&t| t as f32).collect();
    assert_eq!(timesteps, want, "{}: timesteps", c.name);
    assert_eq!(s.timesteps().len(), c.unet_calls, "{}: UNet calls", c.name);
    assert_eq!(s.order(), c.order, "{}: order", c.name);
    assert!(
        (s.init_noise_sigma() - c.init_noise_sigma).abs() <= 1e-6 * c.init_noise_sigma.abs().max(1.0),
        "{}: init_noise_sigma {} vs {}",
        c.name,
        s.init_noise_sigma(),
        c.init_noise_sigma
    );
    if let Some(sigmas) = &c.sigmas {
        let _ = sigmas; // each sigma-based scheduler's own test checks its sigmas (not on the trait)
    }
    let get = |k: &str| t.get(&format!("{}.{k}", c.name)).unwrap_or_else(|| panic!("{}.{k} missing", c.name)).clone();
    let mut sample = get("sample");
    let mut worst: f64 = 0.0;
    for (i, &ts) in c.timesteps.iter().enumerate() {
        let model_input = s.scale_model_input(&sample, ts).unwrap();
        let e = max_rel(&model_input, &get(&format!("{i}.model_input")));
        assert!(e <= 1e-6, "{} call {i} (t={ts}): model_input off by {e:e}", c.name);
        let noise: VecDeque<Tensor> =
            (0..).map_while(|k| t.get(&format!("{}.{i}.noise{k}", c.name)).cloned()).collect();
        let drawn = noise.len();
        let mut replay = Replay(noise);
        let prev = s.step(&get(&format!("{i}.model_output")), ts, &sample, &mut replay).unwrap();
        assert!(
            replay.0.is_empty(),
            "{} call {i}: drew {} of diffusers' {drawn} noise tensors",
            c.name,
            drawn - replay.0.len()
        );
        let e = max_rel(&prev, &get(&format!("{i}.prev_sample")));
        worst = worst.max(e);
        assert!(e <= 1e-6, "{} call {i} (t={ts}): prev_sample off by {e:e}", c.name);
        sample = prev;
    }
    worst
}

/// img2img's starting point on a fresh scheduler, as diffusers' img2img pipeline makes it:
/// `set_begin_index(b)`, then `add_noise` at `timesteps[b]`.
fn check_add_noise(c: &Case, t: &HashMap<String, Tensor>) {
    let Some(begin) = c.add_noise_begin_index else { return };
    let get = |k: &str| t.get(&format!("{}.{k}", c.name)).unwrap_or_else(|| panic!("{}.{k} missing", c.name)).clone();
    let mut s = scheduler(c);
    s.set_begin_index(begin);
    let timestep = s.timesteps()[begin];
    let noisy = s.add_noise(&get("add_noise.original"), &get("add_noise.noise"), timestep).unwrap();
    let e = max_rel(&noisy, &get("add_noise.noisy"));
    assert!(e <= 1e-6, "{} add_noise at timesteps[{begin}] = {timestep}: off by {e:e}", c.name);
}

#[test]
fn every_scheduler_matches_diffusers_step_by_step() {
    let (cases, tensors) = goldens();
    let mut by_class: HashMap<&str, usize> = HashMap::new();
    for c in &cases {
        let worst = check(c, &tensors);
        check_add_noise(c, &tensors);
        *by_class.entry(c.class_name.as_str()).or_default() += 1;
        eprintln!("{:<40} {:>3} calls, worst prev_sample error {worst:.1e}", c.name, c.unet_calls);
    }
    // Every implemented class has goldens.
    for name in SchedulerKind::type_names() {
        if let Some(kind) = SchedulerKind::from_class_name(name) {
            assert!(by_class.contains_key(kind.class_name()), "no golden case for {}", kind.class_name());
        }
    }
}

/// A config struct from a golden case's resolved config (diffusers' bookkeeping keys dropped).
fn config<C: serde::de::DeserializeOwned>(c: &Case) -> C {
    serde_json::from_value(Value::Object(c.config.clone())).unwrap_or_else(|e| panic!("{}: {e}", c.name))
}

/// The sigma-based schedulers' sigmas against diffusers' `scheduler.sigmas`, to float32 rounding
/// (the generic replay sees them only through the steps).
#[test]
fn sigmas_match_diffusers() {
    use candlewick_core::schedulers::scheduling_euler_ancestral_discrete::EulerAncestralDiscreteScheduler;
    use candlewick_core::schedulers::scheduling_euler_discrete::EulerDiscreteScheduler;
    use candlewick_core::schedulers::scheduling_heun_discrete::HeunDiscreteScheduler;
    let (cases, _) = goldens();
    let mut checked = 0;
    for c in &cases {
        let n = c.num_inference_steps;
        let sigmas: Vec<f32> = match c.class_name.as_str() {
            "EulerDiscreteScheduler" => EulerDiscreteScheduler::new(config(c), n).unwrap().sigmas().to_vec(),
            "EulerAncestralDiscreteScheduler" => {
                EulerAncestralDiscreteScheduler::new(config(c), n).unwrap().sigmas().to_vec()
            }
            "HeunDiscreteScheduler" => HeunDiscreteScheduler::new(config(c), n).unwrap().sigmas().to_vec(),
            _ => continue,
        };
        let want: Vec<f32> = c.sigmas.as_ref().expect("sigmas").iter().map(|&s| s as f32).collect();
        // Exact, but where diffusers runs a float32 operation that torch does not round correctly on
        // the CPU over all thousand training timesteps: log_linear's `torch.linspace(...).exp()`
        // (MKL's exp), and the `alphas_cumprod.sqrt()` of rescale_zero_terminal_snr (about 1 torch
        // sqrt in 180 is an ulp off, and the cumulative product carries that into the later
        // sigmas): a few ulps there.
        let flag = |k: &str| c.config.get(k).and_then(Value::as_bool) == Some(true);
        let log_linear = c.config.get("interpolation_type").and_then(Value::as_str) == Some("log_linear");
        let ulps = if log_linear || flag("rescale_betas_zero_snr") { 4 } else { 0 };
        assert_eq!(sigmas.len(), want.len(), "{}: sigmas {sigmas:?} vs {want:?}", c.name);
        for (i, (a, b)) in sigmas.iter().zip(&want).enumerate() {
            let off = (a.to_bits() as i64 - b.to_bits() as i64).abs();
            assert!(off <= ulps, "{} sigma {i}: {a} vs diffusers' {b} ({off} ulps)", c.name);
        }
        checked += 1;
    }
    assert!(checked >= 3, "no sigma-based golden cases");
}
