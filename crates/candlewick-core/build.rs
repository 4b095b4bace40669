//! CUDA builds only: compiles src/kernels/fused.cu to PTX for the GPU's compute capability
//! (CUDA_COMPUTE_CAP, 90 for Hopper) with the toolkit's nvcc (CUDA_HOME or PATH). The PTX is
//! embedded in the library and loaded by src/models/fused.rs on first use.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/kernels/fused.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("fused.ptx");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let nvcc = std::env::var("CUDA_HOME").map(|h| PathBuf::from(h).join("bin/nvcc")).unwrap_or_else(|_| "nvcc".into());
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=compute_{cap}"), "-o"])
        .arg(&out)
        .arg("src/kernels/fused.cu")
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {} (the CUDA build needs nvcc: scripts/cuda/toolkit.sh): {e}", nvcc.display())
        });
    assert!(status.success(), "nvcc failed on src/kernels/fused.cu");
}
