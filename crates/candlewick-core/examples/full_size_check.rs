//! The full-size CPU check: SD1.5-shaped random weights, two 512x512 DDIM steps in f32 from the
//! same initial latents as diffusers, compared step by step.
//!
//! 1. `python scripts/make_fixtures.py --full-size DIR` writes the model and diffusers' goldens
//!    (DIR/goldens.{json,safetensors}) and times diffusers on the same machine.
//!    On the GPU machine, bench/gpu/reference.py does the same with diffusers on CUDA.
//! 2. `cargo run --release --example full_size_check -- DIR [--out FILE.json] [--device cpu|cuda]
//!    [--dtype f32|f16] [--no-flash] [--tf32]`
//!
//! Prints (and writes) a JSON record: max relative error per step's latents, the image's PSNR and
//! fraction of values within 1/255, and the seconds each side took.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType, Tensor};
use candlewick_core::cuda::AttentionBackend;
use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::pipeline::{GenerateOptions, LatentsInput, LoadOptions, Observer, StableDiffusionPipeline};

fn relative_error(got: &Tensor, want: &Tensor) -> candle_core::Result<f64> {
    let got = got.to_device(&candle_core::Device::Cpu)?.to_dtype(DType::F64)?;
    let want = want.to_device(&candle_core::Device::Cpu)?.to_dtype(DType::F64)?;
    let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
    let scale = want.abs()?.max_all()?.to_scalar::<f64>()?;
    Ok(diff / scale.max(f64::MIN_POSITIVE))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage =
        "usage: full_size_check MODEL_DIR [--out FILE] [--device cpu|cuda] [--dtype f32|f16] [--no-flash] [--tf32]";
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let (mut out, mut load) =
        (None, LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() });
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = Some(PathBuf::from(args.next().ok_or(usage)?)),
            "--device" => load.device = args.next().ok_or(usage)?.parse()?,
            "--dtype" => load.dtype = args.next().ok_or(usage)?.parse()?,
            "--no-flash" => load.cuda.attention = AttentionBackend::Math,
            "--tf32" => load.cuda.tf32 = true,
            _ => return Err(usage.into()),
        }
    }
    let golden_info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("goldens.json"))?)?;
    let goldens = candle_core::safetensors::load(dir.join("goldens.safetensors"), &candle_core::Device::Cpu)?;

    let started = Instant::now();
    let pipe = StableDiffusionPipeline::load(&dir, &load)?;
    let seconds_load = started.elapsed().as_secs_f64();

    let initial = &goldens["initial_latents"];
    let options = GenerateOptions {
        prompt: vec![golden_info["prompt"].as_str().unwrap_or_default().into()],
        negative_prompt: Some(vec![golden_info["negative_prompt"].as_str().unwrap_or_default().into()]),
        num_inference_steps: golden_info["steps"].as_u64().unwrap_or(2) as usize,
        guidance_scale: golden_info["guidance_scale"].as_f64().unwrap_or(7.5),
        width: golden_info["width"].as_u64().map(|v| v as usize),
        height: golden_info["height"].as_u64().map(|v| v as usize),
        latents: Some(LatentsInput { shape: initial.dims4()?.into(), data: initial.flatten_all()?.to_vec1()? }),
        ..Default::default()
    };
    let seen: Arc<Mutex<Vec<(Tensor, f64)>>> = Arc::default();
    let sink = seen.clone();
    let call_started = Instant::now();
    let observer = Observer::new()
        .with_step_latents(move |_, l| sink.lock().unwrap().push((l.clone(), call_started.elapsed().as_secs_f64())));
    let output = pipe.generate(&options, &observer)?;
    let seconds_call = call_started.elapsed().as_secs_f64();

    let seen = seen.lock().unwrap();
    let mut latents_rel = serde_json::Map::new();
    for (i, (latents, _)) in seen.iter().enumerate() {
        let name = format!("latents_step_{i}");
        latents_rel.insert(name.clone(), relative_error(latents, &goldens[&name])?.into());
    }
    let want = (goldens["image"].permute((0, 2, 3, 1))?.flatten_all()? * 255.0)?.round()?.to_vec1::<f32>()?;
    let got = &output.images[0].data;
    let within_one = got.iter().zip(&want).filter(|(a, b)| (**a as f32 - **b).abs() <= 1.0).count();
    let mse =
        got.iter().zip(&want).map(|(a, b)| ((*a as f64 - *b as f64) / 255.0).powi(2)).sum::<f64>() / want.len() as f64;
    let psnr_db = if mse == 0.0 { f64::INFINITY } else { 10.0 * (1.0 / mse).log10() };
    let step_times: Vec<f64> = seen.iter().map(|(_, t)| *t).collect();

    let info = pipe.info();
    let family = golden_info["family"].as_str().unwrap_or("sd15");
    let record = serde_json::json!({
        "check": format!("full-size parity, {family}-shaped random weights, {} {}", info.device, info.dtype),
        "device": info.device, "dtype": info.dtype, "attention": info.cuda.attention.name(), "tf32": info.cuda.tf32,
        "model": format!("{family}-shaped-random"), "pipeline_class": info.pipeline_class,
        "width": options.width, "height": options.height, "steps": options.num_inference_steps,
        "guidance": options.guidance_scale,
        "host": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "candlewick": {
            "seconds_load": seconds_load,
            "seconds_call": seconds_call,
            "seconds_at_each_step_end": step_times,
        },
        "diffusers": {
            "torch": golden_info["torch_version"], "torch_threads": golden_info["torch_threads"],
            "reference": golden_info.get("reference").cloned().unwrap_or("diffusers f32 on the CPU".into()),
            "seconds_call": golden_info["seconds_call"], "seconds_per_step": golden_info["seconds_per_step"],
        },
        "parity": {
            "latents_max_abs_rel": latents_rel,
            "image_values_within_1_of_255": within_one as f64 / want.len() as f64,
            "image_psnr_db": psnr_db,
            "bounds": "latents <= 1e-4 relative to the tensor's max |value|; >= 99.9% of image values within 1/255",
        },
    });
    let text = serde_json::to_string_pretty(&record)?;
    println!("{text}");
    if let Some(out) = out {
        std::fs::write(out, text + "\n")?;
    }
    Ok(())
}
