//! The sigma arithmetic of diffusers' sigma-based schedulers (Euler, Heun, DPM++, UniPC...), with
//! the dtypes diffusers uses at each stage: the training sigmas in float32 torch arithmetic, their
//! logs with numpy's float32 `np.log`, and the inference schedule (interpolation, Karras,
//! exponential) in numpy float64, cast to float32 at the end by the caller
//! (`torch.from_numpy(sigmas).to(torch.float32)`).

/// sqrt((1 - alphas_cumprod) / alphas_cumprod) per training timestep, float32 as diffusers computes it.
///
/// Correctly rounded square roots. torch's float32 sqrt on the CPU (`** 0.5`, `.sqrt()`, 0-d tensors
/// included) is not: about 1 result in 180, near a rounding tie, is an ulp off (measured on 2M
/// values with the goldens' torch; the algorithm is not known here). The goldens' sigmas have
/// matched exactly at the timesteps their schedules use, and the Karras timesteps, which read the
/// logs of all of them (tests/schedulers.rs checks both).
pub fn training_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    // `((1 - a) / a) ** 0.5` on a float32 tensor: torch's pow with exponent 0.5 is sqrt.
    alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect()
}

/// `np.log(sigmas)` of float32 training sigmas (the `log_sigmas` that `_sigma_to_t` reads), as f64
/// values of numpy's float32 results.
pub fn log_sigmas(sigmas: &[f32]) -> Vec<f64> {
    sigmas.iter().map(|&s| f64::from(np_log_f32(s))).collect()
}

/// numpy's float32 `np.log` on x86-64 with AVX2/AVX512F (the SIMD loop numpy runs on such CPUs,
/// the goldens' machine included): not correctly rounded (up to 3.83 ulp), and `_sigma_to_t`'s
/// fractional timesteps move by an ulp with a correctly rounded log. The mantissa is brought to
/// [sqrt(1/2), sqrt(2)), log(1 + y) is a 5/5 rational minimax fit evaluated with fused
/// multiply-adds, and e * ln 2 is added with one more. Positive normal inputs only (sigmas).
#[allow(clippy::excessive_precision)] // numpy's constants as numpy writes them
pub fn np_log_f32(x: f32) -> f32 {
    if x.is_nan() || x < 0.0 {
        return f32::NAN;
    }
    if x == 0.0 {
        return f32::NEG_INFINITY;
    }
    if x == f32::INFINITY || !x.is_normal() {
        return x.ln();
    }
    // numpy's NPY_COEFF_{P,Q}{0..5}_LOGf.
    const P: [f32; 6] = [
        0.0,
        9.999999999999998702752e-01,
        2.112677543073053063722e+00,
        1.480000633576506585156e+00,
        3.808837741388407920751e-01,
        2.589979117907922693523e-02,
    ];
    const Q: [f32; 6] = [
        1.0,
        2.612677543073109236779e+00,
        2.453006071784736363091e+00,
        9.864942958519418960339e-01,
        1.546476374983906719538e-01,
        5.875095403124574342950e-03,
    ];
    let bits = x.to_bits();
    // x = m * 2^e with m in [0.5, 1).
    let mut e = ((bits >> 23) as i32 - 126) as f32;
    let mut m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F00_0000);
    if m <= std::f32::consts::FRAC_1_SQRT_2 {
        m += m;
        e -= 1.0;
    }
    let y = m - 1.0;
    let horner = |c: &[f32; 6]| c[..5].iter().rev().fold(c[5], |acc, &k| acc.mul_add(y, k));
    let poly = horner(&P) / horner(&Q);
    e.mul_add(std::f32::consts::LN_2, poly)
}

/// `np.linspace(start, stop, n)` in float64: i * step + start, the last value exactly `stop`.
pub fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 0 {
        return Vec::new();
    }
    if n == 1 {
        return vec![start];
    }
    let div = (n - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut out: Vec<f64> =
        (0..n).map(|i| if step == 0.0 { i as f64 / div * delta + start } else { i as f64 * step + start }).collect();
    out[n - 1] = stop;
    out
}

/// diffusers' `_convert_to_karras(in_sigmas, num_inference_steps)`: rho 7, between sigma_min and sigma_max, numpy float64.
pub fn karras(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    linspace(0.0, 1.0, n).into_iter().map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(rho)).collect()
}

/// diffusers' `_convert_to_exponential(in_sigmas, num_inference_steps)`: evenly spaced in log
/// sigma from sigma_max down to sigma_min, numpy float64.
pub fn exponential(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    linspace(sigma_max.ln(), sigma_min.ln(), n).into_iter().map(f64::exp).collect()
}

/// diffusers' `_sigma_to_t(sigma, log_sigmas)` (numpy float64): the fractional training timestep
/// whose log sigma is `ln(sigma)`, linearly interpolated between the two neighbouring ones.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    if log_sigmas.len() < 2 {
        return 0.0; // a one-timestep schedule: nothing to interpolate
    }
    let log_sigma = sigma.max(1e-10).ln();
    // np.cumsum(dists >= 0).argmax(): the last index whose log sigma is <= log_sigma (0 if none),
    // clipped so that a neighbour above exists.
    let at_or_below = log_sigmas.iter().rposition(|&l| log_sigma - l >= 0.0).unwrap_or(0);
    let low_idx = at_or_below.min(log_sigmas.len().saturating_sub(2));
    let high_idx = low_idx + 1;
    let (low, high) = (log_sigmas[low_idx], log_sigmas[high_idx]);
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// numpy's `np.interp(x, xp, fp)` for increasing xp: fp's end values outside xp, else
/// slope * (x - xp[j]) + fp[j] on the segment holding x.
pub fn interp(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    let n = xp.len();
    if x.is_nan() {
        return x;
    }
    if x < xp[0] {
        return fp[0];
    }
    if x >= xp[n - 1] {
        return fp[n - 1];
    }
    // The segment j with xp[j] <= x < xp[j + 1].
    let j = xp.partition_point(|&v| v <= x) - 1;
    if xp[j] == x {
        return fp[j];
    }
    let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    let y = slope * (x - xp[j]) + fp[j];
    if y.is_nan() {
        let y = slope * (x - xp[j + 1]) + fp[j + 1];
        if y.is_nan() && fp[j] == fp[j + 1] {
            return fp[j];
        }
        return y;
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interp_matches_numpy_on_its_edges() {
        let xp = [0.0, 1.0, 2.0];
        let fp = [10.0, 20.0, 40.0];
        assert_eq!(interp(-1.0, &xp, &fp), 10.0);
        assert_eq!(interp(0.5, &xp, &fp), 15.0);
        assert_eq!(interp(1.0, &xp, &fp), 20.0);
        assert_eq!(interp(1.25, &xp, &fp), 25.0);
        assert_eq!(interp(2.0, &xp, &fp), 40.0);
        assert_eq!(interp(3.0, &xp, &fp), 40.0);
    }

    #[test]
    fn sigma_to_t_inverts_the_schedule_and_clamps() {
        let log_sigmas: Vec<f64> = [0.1f64, 0.2, 0.4, 0.8].iter().map(|s| s.ln()).collect();
        assert_eq!(sigma_to_t(0.2, &log_sigmas), 1.0);
        assert!((sigma_to_t((0.2f64 * 0.4).sqrt(), &log_sigmas) - 1.5).abs() < 1e-12);
        assert_eq!(sigma_to_t(0.01, &log_sigmas), 0.0);
        assert_eq!(sigma_to_t(5.0, &log_sigmas), 3.0);
        assert_eq!(sigma_to_t(0.8, &log_sigmas), 3.0);
        assert_eq!(sigma_to_t(0.8, &log_sigmas[..1]), 0.0);
    }

    #[test]
    fn karras_runs_from_sigma_max_to_sigma_min() {
        let k = karras(0.03, 14.6, 5);
        assert_eq!(k.len(), 5);
        assert!((k[0] - 14.6).abs() < 1e-12 && (k[4] - 0.03).abs() < 1e-12);
        assert!(k.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(karras(0.03, 14.6, 1), vec![14.6f64.powf(1.0 / 7.0).powf(7.0)]);
    }

    #[test]
    fn np_log_f32_is_close_to_ln() {
        for &x in &[0.029_168_f32, 0.5, 1.0, 2.0, 14.61, 4096.0, 1e-3] {
            let (got, want) = (np_log_f32(x), x.ln());
            assert!((got - want).abs() <= 4.0 * f32::EPSILON * want.abs().max(1.0), "{x}: {got} vs {want}");
        }
    }
}
