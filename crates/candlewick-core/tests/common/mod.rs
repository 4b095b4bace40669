//! Shared helpers for the model tests: fixture paths, golden loading, tensor comparison.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candlewick_core::{config, weights};

/// test/fixtures/ at the repository root (made by scripts/make_fixtures.py).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures")
}

/// The tensors of test/fixtures/goldens/<name>.safetensors, on the CPU.
pub fn goldens(name: &str) -> HashMap<String, Tensor> {
    let path = fixtures().join("goldens").join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One golden tensor by name.
pub fn golden(map: &HashMap<String, Tensor>, name: &str) -> Tensor {
    map.get(name).unwrap_or_else(|| panic!("golden tensor {name} is missing")).clone()
}

/// Build a tiny-sd component as the pipeline does: config.json, the weights file for `dtype`
/// (the fp16 variant for f16), memory-mapped.
pub fn load<T, C: serde::de::DeserializeOwned>(
    component: &str,
    stem: &str,
    dtype: DType,
    build: impl FnOnce(candle_nn::VarBuilder<'static>, &C) -> candle_core::Result<T>,
) -> (T, C) {
    let dir = fixtures().join("tiny-sd").join(component);
    let cfg: C = config::read_json(&dir.join("config.json")).unwrap_or_else(|e| panic!("{e}"));
    let path = weights::find_weights(&dir, stem, dtype).unwrap_or_else(|e| panic!("{e}"));
    if dtype == DType::F16 {
        assert!(
            path.to_string_lossy().ends_with(".fp16.safetensors"),
            "expected the fp16 variant, got {}",
            path.display()
        );
    }
    let vb = weights::open(&path, dtype, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    let model = weights::with_file(&path, || build(vb, &cfg)).unwrap_or_else(|e| panic!("{e}"));
    (model, cfg)
}

/// Relative error max|got - want| / max|want|, computed in f32.
pub fn rel_error(got: &Tensor, want: &Tensor) -> (f32, f32, f32) {
    let got = got.to_dtype(DType::F32).and_then(|t| t.flatten_all()).expect("got to f32");
    let want = want.to_dtype(DType::F32).and_then(|t| t.flatten_all()).expect("want to f32");
    let diff = (&got - &want).and_then(|d| d.abs()).and_then(|d| d.max(0)).and_then(|d| d.to_scalar::<f32>());
    let scale = want.abs().and_then(|w| w.max(0)).and_then(|w| w.to_scalar::<f32>());
    let (diff, scale) = (diff.expect("max diff"), scale.expect("max golden"));
    (diff / scale, diff, scale)
}

/// Assert max|got - want| / max|want| <= tol, after checking shapes; reports the max abs diff
/// and the scale either way.
pub fn assert_close(name: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.dims(), want.dims(), "{name}: shape {:?} but the golden is {:?}", got.dims(), want.dims());
    let (rel, diff, scale) = rel_error(got, want);
    eprintln!("{name}: max|a-b| = {diff:.3e}, max|golden| = {scale:.3e}, relative {rel:.3e} (tol {tol:.0e})");
    assert!(!rel.is_nan(), "{name}: NaN in the output");
    assert!(rel <= tol, "{name}: relative error {rel:.3e} > {tol:.0e} (max|a-b| {diff:.3e}, max|golden| {scale:.3e})");
}
