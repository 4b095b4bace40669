//! Attention alone on SD1.5's shapes (512x512, CFG batch 2, 8 heads): candlewick's FlashAttention-2
//! path and its unfused path, on the GPU test machine, beside PyTorch SDPA from
//! ../shared/bench/anchor_phases.py on the same card (bench/gpu/run.sh runs both).
//!
//!   cargo run --release --example attention_bench --features cuda,flash-attn -- [OUT.json]
//!
//! Times with the device synchronized around 200 repetitions after 20 warm-ups (median of 5 such
//! batches), on fresh random f16 inputs.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candlewick_core::cuda::flash;
use candlewick_core::models::attention_processor;

fn time_ms(device: &Device, mut f: impl FnMut() -> candle_core::Result<Tensor>) -> candle_core::Result<f64> {
    for _ in 0..20 {
        f()?;
    }
    let mut batches = Vec::new();
    for _ in 0..5 {
        device.synchronize()?;
        let start = Instant::now();
        for _ in 0..200 {
            f()?;
        }
        device.synchronize()?;
        batches.push(start.elapsed().as_secs_f64() * 1e3 / 200.0);
    }
    batches.sort_by(f64::total_cmp);
    Ok(batches[2])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::new_cuda(0)?;
    let mut rows = Vec::new();
    for (head_dim, seq) in [(40usize, 4096usize), (80, 1024), (160, 256), (160, 64)] {
        for (kv, kind) in [(seq, "self"), (77, "cross")] {
            // [batch, seq, heads, head_dim]: flash attention's layout.
            let q = Tensor::randn(0f32, 1.0, (2, seq, 8, head_dim), &device)?.to_dtype(DType::F16)?;
            let k = Tensor::randn(0f32, 1.0, (2, kv, 8, head_dim), &device)?.to_dtype(DType::F16)?;
            let v = Tensor::randn(0f32, 1.0, (2, kv, 8, head_dim), &device)?.to_dtype(DType::F16)?;
            let flops = 4.0 * 2.0 * 8.0 * (seq * kv * head_dim) as f64;
            let (qt, kt, vt) = (q.transpose(1, 2)?, k.transpose(1, 2)?, v.transpose(1, 2)?);
            let unfused_ms = time_ms(&device, || attention_processor::scaled_dot_product(&qt, &kt, &vt))?;
            let flash_ms = if flash::compiled() {
                let ms = time_ms(&device, || flash::attention(&q, &k, &v).map(|o| o.expect("flash applies")))?;
                // Same function: compare the two paths' outputs.
                let a = flash::attention(&q, &k, &v)?.expect("flash applies").to_dtype(DType::F32)?;
                let b =
                    attention_processor::scaled_dot_product(&qt, &kt, &vt)?.transpose(1, 2)?.to_dtype(DType::F32)?;
                let rel = ((a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?) / b.abs()?.max_all()?.to_scalar::<f32>()?;
                Some((ms, rel))
            } else {
                None
            };
            let row = serde_json::json!({
                "kind": kind, "head_dim": head_dim, "q_len": seq, "kv_len": kv,
                "unfused_ms": unfused_ms, "unfused_tflops": flops / unfused_ms / 1e9,
                "flash_ms": flash_ms.map(|f| f.0), "flash_tflops": flash_ms.map(|f| flops / f.0 / 1e9),
                "flash_vs_unfused_max_rel": flash_ms.map(|f| f.1),
            });
            println!("{row}");
            rows.push(row);
        }
    }
    if let Some(out) = std::env::args().nth(1) {
        std::fs::write(out, serde_json::to_string_pretty(&rows)? + "\n")?;
    }
    Ok(())
}
