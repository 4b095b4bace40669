//! Noise schedules shared by diffusers' schedulers: the betas of each `beta_schedule`, the
//! zero-terminal-SNR rescale and `alphas_cumprod`, computed with torch's float32 arithmetic
//! (diffusers keeps them in float32 tensors) so the values match diffusers' to the last bits.

/// `torch.linspace(start, end, steps, dtype=torch.float32)`: float32 endpoints and step, the first
/// half counted up from `start` and the second half down from `end` with fused multiply-adds, as
/// ATen's CPU kernel computes it (bit-identical on the machine that made the goldens).
pub fn linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| if i < halfway { step.mul_add(i as f32, start) } else { (-step).mul_add((steps - i - 1) as f32, end) })
        .collect()
}

/// diffusers' `betas_for_alpha_bar(n)` with the cosine `alpha_bar` ("squaredcos_cap_v2"): computed in
/// Python floats (f64), capped at 0.999, then stored as float32.
pub fn squaredcos_cap_v2(steps: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
    (0..steps)
        .map(|i| {
            let t1 = i as f64 / steps as f64;
            let t2 = (i + 1) as f64 / steps as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// `torch.cumprod(alphas, 0)` on the CPU: a float64 running product, each entry stored as float32.
pub fn cumprod_f32(alphas: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    alphas
        .iter()
        .map(|&a| {
            acc *= a as f64;
            acc as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr(betas)` (arXiv 2305.08891, Algorithm 1) in float32: shifts
/// and scales sqrt(alphas_cumprod) so the last one is exactly 0 and the first unchanged.
pub fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut bar_sqrt: Vec<f32> = cumprod_f32(&alphas).iter().map(|a| a.sqrt()).collect();
    let (Some(&first), Some(&last)) = (bar_sqrt.first(), bar_sqrt.last()) else {
        return Vec::new();
    };
    let scale = first / (first - last);
    for v in bar_sqrt.iter_mut() {
        *v -= last;
        *v *= scale;
    }
    let bar: Vec<f32> = bar_sqrt.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    out.extend(bar.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}
