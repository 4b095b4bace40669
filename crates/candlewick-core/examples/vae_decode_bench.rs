//! The VAE decode's time and peak GPU memory, whole and in tiles (and one image at a time with
//! `--batch` > 1), for large images: the candle side of the VAE tiling table (issue 17).
//! bench/gpu/vae_tiling.py measures diffusers' `AutoencoderKL.decode` the same way.
//!
//! `cargo run --release --example vae_decode_bench -- MODEL_DIR [--sizes 2048,4096]
//!  [--device cpu|cuda] [--dtype f16|f32] [--runs 3] [--batch 1] [--modes full,tiled]`
//!
//! Loads MODEL_DIR/vae as the pipeline does, decodes seeded standard-normal latents divided by the
//! VAE's `scaling_factor` (as the pipeline hands them over) of each image size / 8, and prints one
//! JSON line per size and mode: the median seconds of `--runs` synchronized decodes after one
//! warm-up, and the peak GPU memory over them (the pool's high-water mark, reset first; weights
//! included, as in torch.cuda.max_memory_allocated). A decode that runs out of memory is a row
//! with "oom": true.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candlewick_core::config::read_json;
use candlewick_core::cuda::memory;
use candlewick_core::device::{self, DTypeRequest, DeviceRequest};
use candlewick_core::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use candlewick_core::models::vae_tiling::VaeTiling;
use candlewick_core::pipeline::LoadOptions;
use candlewick_core::weights;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde_json::json;

fn is_out_of_memory(e: &candle_core::Error) -> bool {
    let text = e.to_string();
    text.contains("OUT_OF_MEMORY") || text.contains("out of memory")
}

fn gpu_memory(device: &Device) -> Option<memory::GpuMemory> {
    match device {
        Device::Cuda(_) => memory::usage(0).ok(),
        _ => None,
    }
}

fn list(text: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = text.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if items.is_empty() {
        return Err(format!("empty list: {text:?}"));
    }
    Ok(items)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: vae_decode_bench MODEL_DIR [--sizes 2048,4096] [--device cpu|cuda] [--dtype f16|f32] \
                 [--runs N] [--batch N] [--modes full,tiled,sliced,tiled+sliced] [--seed N]";
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let (mut device_request, mut dtype_request) = (DeviceRequest::Auto, DTypeRequest::Auto);
    let (mut sizes, mut runs, mut batch, mut seed) = (vec![2048usize, 4096], 3usize, 1usize, 0u64);
    let mut modes: Option<Vec<String>> = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(usage);
        match arg.as_str() {
            "--sizes" => sizes = list(&value()?)?.iter().map(|s| s.parse()).collect::<Result<_, _>>()?,
            "--device" => device_request = value()?.parse()?,
            "--dtype" => dtype_request = value()?.parse()?,
            "--runs" => runs = value()?.parse()?,
            "--batch" => batch = value()?.parse()?,
            "--seed" => seed = value()?.parse()?,
            "--modes" => modes = Some(list(&value()?)?),
            _ => return Err(usage.into()),
        }
    }
    let modes = modes.unwrap_or_else(|| {
        let mut m = vec!["full".to_string(), "tiled".to_string()];
        if batch > 1 {
            m.extend(["sliced".to_string(), "tiled+sliced".to_string()]);
        }
        m
    });
    for m in &modes {
        if !["full", "tiled", "sliced", "tiled+sliced"].contains(&m.as_str()) {
            return Err(format!("unknown mode {m:?}; expected full, tiled, sliced or tiled+sliced").into());
        }
    }

    // The VAE as the pipeline loads it (components.rs): device and dtype chosen, the GPU paths
    // (cuDNN convolutions, attention backend) installed on this thread before the weights load.
    let target = device::choose(device_request, dtype_request)?;
    let (dev, dtype) = (target.device.clone(), target.dtype);
    LoadOptions::default().cuda.resolve(&dev, dtype).settings.install(&dev);
    let vae_dir = dir.join("vae");
    let config: AutoencoderKLConfig = read_json(&vae_dir.join("config.json"))?;
    let path = weights::find_weights(&vae_dir, "diffusion_pytorch_model", dtype)?;
    let vb = weights::open(&path, dtype, &dev)?;
    let vae = weights::with_file(&path, || AutoencoderKL::new(vb, &config))?;
    let scale = config.scale_factor();
    let tiling = VaeTiling::for_vae(config.sample_size.first(), scale);
    dev.synchronize()?;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for &size in &sizes {
        let (h, w) = (size / scale, size / scale);
        let n = batch * config.latent_channels * h * w;
        let data: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        let latents = (Tensor::from_vec(data, (batch, config.latent_channels, h, w), &Device::Cpu)?
            / config.scaling_factor)?
            .to_device(&dev)?
            .to_dtype(dtype)?;
        for mode in &modes {
            let tiled = mode.contains("tiled").then_some(&tiling);
            let sliced = mode.contains("sliced");
            dev.synchronize()?;
            let baseline = gpu_memory(&dev);
            if baseline.is_some() {
                memory::reset_peak(0)?;
            }
            let mut seconds = Vec::new();
            let mut failure: Option<candle_core::Error> = None;
            let mut shape = None;
            for _ in 0..=runs {
                let started = Instant::now();
                // A panic (an allocation failure some kernel does not return as an error) is a row too.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    vae.decode_with(&latents, tiled, sliced).and_then(|image| {
                        dev.synchronize()?;
                        Ok(image)
                    })
                }))
                .unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Err(candle_core::Error::Msg(format!("panicked: {message}")))
                });
                match result {
                    Ok(image) => shape = Some(image.dims().to_vec()),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                seconds.push(started.elapsed().as_secs_f64());
            }
            let _ = dev.synchronize();
            let peak = gpu_memory(&dev);
            let warm_up = seconds.first().copied();
            let mut timed: Vec<f64> = seconds.iter().skip(1).copied().collect();
            timed.sort_by(f64::total_cmp);
            let median = (!timed.is_empty()).then(|| timed[timed.len() / 2]);
            let oom = failure.as_ref().is_some_and(is_out_of_memory);
            let row = json!({
                "impl": "candlewick",
                "device": target.name, "dtype": format!("{dtype:?}").to_lowercase(),
                "width": w * scale, "height": h * scale, "batch": batch, "latents": [batch, config.latent_channels, h, w],
                "mode": mode, "tiling": tiled.is_some(), "slicing": sliced,
                "tile": [tiling.tile_latent_min_size, tiling.tile_sample_min_size, tiling.tile_overlap_factor],
                "seconds_median": median, "seconds_runs": &seconds[seconds.len().min(1)..],
                "seconds_warm_up": warm_up,
                "baseline_bytes": baseline.map(|m| m.used),
                "peak_bytes": peak.map(|m| m.peak_used),
                "peak_over_baseline_bytes": baseline.zip(peak).map(|(b, p)| p.peak_used.saturating_sub(b.used)),
                "reserved_bytes": peak.map(|m| m.reserved),
                "output_shape": shape,
                "oom": oom,
                "error": failure.as_ref().map(|e| e.to_string().lines().next().unwrap_or_default().to_string()),
            });
            println!("{row}");
        }
    }
    Ok(())
}
