//! CUDA builds only: compiles each kernel family of src/cuda/kernels/ (norm, layout, conv_tail,
//! elementwise, fp8, sharing common.cuh) to PTX for the GPU's compute capability (CUDA_COMPUTE_CAP,
//! 90 for Hopper) with the toolkit's nvcc (CUDA_HOME or PATH). The PTX is embedded in the
//! library and loaded by src/cuda/fused/launch.rs on first use. With cuDNN, also
//! src/cuda/cudnn/sdpa.cpp (cuDNN's frontend headers: CUDA_HOME/include-cudnn-frontend, from
//! scripts/cuda/toolkit.sh), linked against libcudnn.
use std::path::PathBuf;
use std::process::Command;

/// The kernel families: src/cuda/kernels/NAME.cu, compiled to OUT_DIR/NAME.ptx.
const FAMILIES: &[&str] = &["norm", "layout", "conv_tail", "elementwise", "fp8"];

fn main() {
    println!("cargo:rerun-if-changed=src/cuda/kernels");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    if std::env::var_os("CARGO_FEATURE_CUDNN").is_some() {
        compile_sdpa();
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let nvcc = std::env::var("CUDA_HOME").map(|h| PathBuf::from(h).join("bin/nvcc")).unwrap_or_else(|_| "nvcc".into());
    for family in FAMILIES {
        let source = format!("src/cuda/kernels/{family}.cu");
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=compute_{cap}"), "-o"])
            .arg(out_dir.join(format!("{family}.ptx")))
            .arg(&source)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run {} (the CUDA build needs nvcc: scripts/cuda/toolkit.sh): {e}", nvcc.display())
            });
        assert!(status.success(), "nvcc failed on {source}");
    }
}

/// cuDNN's fused attention through its frontend's graph API: a C++ file with a C interface.
fn compile_sdpa() {
    println!("cargo:rerun-if-changed=src/cuda/cudnn/sdpa.cpp");
    let mut build = cc::Build::new();
    build.cpp(true).std("c++17").opt_level(2).warnings(false).file("src/cuda/cudnn/sdpa.cpp");
    if let Ok(home) = std::env::var("CUDA_HOME") {
        let home = PathBuf::from(home);
        for dir in ["include", "include-cudnn", "include-cudnn-frontend"] {
            build.include(home.join(dir));
        }
    }
    build.compile("candlewick_sdpa");
    println!("cargo:rustc-link-lib=dylib=cudnn");
    println!("cargo:rustc-link-lib=dylib=cudart");
}
