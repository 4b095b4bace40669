fn main() {
    napi_build::setup();
    // The CUDA build calls the driver (cuCtxGetCurrent, ...) through cudarc, which links
    // `-lcuda`. rustc links shared libraries with `--as-needed`, so a libcuda that does not
    // define those symbols (an empty stub on a build machine without a GPU) is dropped, and the
    // .node then fails to load on the GPU machine ("undefined symbol: cuCtxGetCurrent"): no
    // NEEDED entry tells the loader to open libcuda.so.1. Keep libcuda.so.1 NEEDED whatever the
    // stub holds. scripts/cuda/check-links.sh checks the built artefact in CI.
    let cuda = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
    let gnu_linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if cuda && gnu_linux {
        println!("cargo:rustc-link-arg-cdylib=-Wl,--push-state,--no-as-needed,-lcuda,--pop-state");
    }
}
