//! The full-size img2img parity check (issue 17): diffusers' StableDiffusionImg2ImgPipeline and ours
//! on the same model folder, init image and noise, compared after every UNet call and on the image.
//!
//! 1. `python3 bench/gpu/reference_img2img.py MODEL_DIR [--out DIR] [--device cuda|cpu]` writes
//!    DIR/{init.png, goldens.json, goldens.safetensors} (DIR: MODEL_DIR/img2img by default), with
//!    every torch.randn draw diffusers made, in order.
//! 2. `cargo run --release --example img2img_check -- MODEL_DIR [--goldens DIR] [--out FILE.json]
//!    [--device cpu|cuda] [--dtype f32|f16] [--no-flash] [--tf32]`
//!
//! Replays the draws through `generate_with_noise` and prints (and writes) a JSON record: the max
//! relative error of each step's latents, the image's PSNR and fraction of values within 1/255.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candlewick_core::cuda::AttentionBackend;
use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::pipeline::{GenerateOptions, ImageInput, LoadOptions, Observer, StableDiffusionPipeline};
use candlewick_core::schedulers::StepNoise;

/// diffusers' randn draws, in order, moved to the device the pipeline asks for.
struct Replay {
    draws: VecDeque<Tensor>,
    shape_mismatch: Option<String>,
}

impl StepNoise for Replay {
    fn sample_like(&mut self, like: &Tensor) -> candlewick_core::Result<Tensor> {
        let next = self.draws.pop_front().ok_or_else(|| {
            candlewick_core::Error::Internal("the pipeline drew more noise than diffusers did".into())
        })?;
        if next.dims() != like.dims() && self.shape_mismatch.is_none() {
            self.shape_mismatch = Some(format!("drew {:?} where diffusers drew {:?}", like.dims(), next.dims()));
        }
        Ok(next.to_device(like.device())?)
    }
}

fn relative_error(got: &Tensor, want: &Tensor) -> candle_core::Result<f64> {
    let got = got.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let want = want.to_dtype(DType::F64)?;
    let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
    let scale = want.abs()?.max_all()?.to_scalar::<f64>()?;
    Ok(diff / scale.max(f64::MIN_POSITIVE))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: img2img_check MODEL_DIR [--goldens DIR] [--out FILE] [--device cpu|cuda] [--dtype f32|f16] \
                 [--no-flash] [--tf32]";
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let (mut out, mut goldens_dir) = (None, dir.join("img2img"));
    let mut load = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--goldens" => goldens_dir = PathBuf::from(args.next().ok_or(usage)?),
            "--out" => out = Some(PathBuf::from(args.next().ok_or(usage)?)),
            "--device" => load.device = args.next().ok_or(usage)?.parse()?,
            "--dtype" => load.dtype = args.next().ok_or(usage)?.parse()?,
            "--no-flash" => load.cuda.attention = AttentionBackend::Math,
            "--tf32" => load.cuda.tf32 = true,
            _ => return Err(usage.into()),
        }
    }
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(goldens_dir.join("goldens.json"))?)?;
    let goldens = candle_core::safetensors::load(goldens_dir.join("goldens.safetensors"), &Device::Cpu)?;
    let draws = info["noise_draws"].as_u64().ok_or("goldens.json has no noise_draws")? as usize;
    let mut noise =
        Replay { draws: (0..draws).map(|k| goldens[&format!("noise_{k}")].clone()).collect(), shape_mismatch: None };
    let init = std::fs::read(goldens_dir.join(info["image"].as_str().ok_or("goldens.json has no image")?))?;
    // Inpainting (reference_img2img.py --inpaint) when the goldens name a mask.
    let mask = info["mask_image"].as_str().map(|m| std::fs::read(goldens_dir.join(m))).transpose()?;
    let task = if mask.is_some() { "inpainting" } else { "img2img" };

    let started = Instant::now();
    let pipe = StableDiffusionPipeline::load(&dir, &load)?;
    let seconds_load = started.elapsed().as_secs_f64();

    let options = GenerateOptions {
        prompt: vec![info["prompt"].as_str().unwrap_or_default().into()],
        negative_prompt: Some(vec![info["negative_prompt"].as_str().unwrap_or_default().into()]),
        num_inference_steps: info["steps"].as_u64().ok_or("goldens.json has no steps")? as usize,
        guidance_scale: info["guidance_scale"].as_f64().unwrap_or(7.5),
        width: info["width"].as_u64().map(|v| v as usize),
        height: info["height"].as_u64().map(|v| v as usize),
        image: Some(ImageInput::Encoded(init)),
        mask_image: mask.map(ImageInput::Encoded),
        strength: info["strength"].as_f64(),
        seed: Some(0),
        ..Default::default()
    };
    let seen: Arc<Mutex<Vec<(Tensor, f64)>>> = Arc::default();
    let sink = seen.clone();
    let call_started = Instant::now();
    let observer = Observer::new()
        .with_step_latents(move |_, l| sink.lock().unwrap().push((l.clone(), call_started.elapsed().as_secs_f64())));
    let output = pipe.generate_with_noise(&options, &observer, &mut noise)?;
    let seconds_call = call_started.elapsed().as_secs_f64();

    let seen = seen.lock().unwrap();
    let mut latents_rel = serde_json::Map::new();
    let mut worst = 0f64;
    for (i, (latents, _)) in seen.iter().enumerate() {
        let name = format!("latents_step_{i}");
        let Some(want) = goldens.get(&name) else { break };
        let rel = relative_error(latents, want)?;
        worst = worst.max(rel);
        latents_rel.insert(name, rel.into());
    }
    let want = goldens["image_u8"].flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let got = &output.images[0].data;
    if got.len() != want.len() {
        return Err(format!("image of {} values, diffusers' has {}", got.len(), want.len()).into());
    }
    let within_one = got.iter().zip(&want).filter(|(a, b)| (**a as f32 - **b).abs() <= 1.0).count();
    // PSNR of the 8-bit images (diffusers' own f32 image rounded, as the JS user gets ours).
    let mse =
        got.iter().zip(&want).map(|(a, b)| ((*a as f64 - *b as f64) / 255.0).powi(2)).sum::<f64>() / want.len() as f64;
    let psnr_db = if mse == 0.0 { f64::INFINITY } else { 10.0 * (1.0 / mse).log10() };
    let step_times: Vec<f64> = seen.iter().map(|(_, t)| *t).collect();

    let pinfo = pipe.info();
    let record = serde_json::json!({
        "check": format!("full-size {task} parity, {} {}", pinfo.device, pinfo.dtype),
        "device": pinfo.device, "dtype": pinfo.dtype, "attention": pinfo.cuda.attention.name(), "tf32": pinfo.cuda.tf32,
        "model": dir.display().to_string(),
        "width": options.width, "height": options.height, "steps": options.num_inference_steps,
        "strength": options.strength, "guidance": options.guidance_scale,
        "unet_calls": { "candlewick": seen.len(), "diffusers": info["unet_calls"] },
        "noise_draws": { "diffusers": draws, "unused": noise.draws.len(), "shape_mismatch": noise.shape_mismatch },
        "candlewick": { "seconds_load": seconds_load, "seconds_call": seconds_call, "seconds_at_each_step_end": step_times },
        "diffusers": {
            "torch": info["torch_version"], "reference": info["reference"], "device": info["device"],
            "seconds_call": info["seconds_call"],
        },
        "parity": {
            "latents_max_abs_rel": latents_rel,
            "latents_max_abs_rel_worst": worst,
            "image_values_within_1_of_255": within_one as f64 / want.len() as f64,
            "image_psnr_db": psnr_db,
            "bounds": "f32: latents <= 1e-4 relative to the tensor's max |value|, >= 99.9% of image values within 1/255",
        },
    });
    let text = serde_json::to_string_pretty(&record)?;
    println!("{text}");
    if let Some(out) = out {
        std::fs::write(out, text + "\n")?;
    }
    Ok(())
}
