//! Where a generation's GPU time goes, by model part: CUDA events around the layers, summed per
//! name. A developer's tool for the benchmarks, off unless `CANDLEWICK_PROFILE=1` is set: then
//! every generate call on CUDA (with CUDA graphs off, which hide the layers) prints one JSON line
//! to stderr: `{"candlewick_profile": {"conv": {"ms": 12.3, "calls": 4200}, ...}}`.
//!
//! Times are inclusive (a resnet's time includes its convolutions), and the events themselves
//! serialize nothing: the GPU runs as it would, the host does a little more per layer.

use std::sync::Mutex;
use std::time::Instant;

use candle_core::{Device, Result};

/// Whether `CANDLEWICK_PROFILE` asks for profiles (read once).
pub fn requested() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("CANDLEWICK_PROFILE").is_ok_and(|v| v == "1"))
}

/// Whether `CANDLEWICK_PROFILE_STARTUP=1` asks for the one-time costs of loading and of first
/// calls (read once): see [`startup_time`].
pub fn startup_requested() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("CANDLEWICK_PROFILE_STARTUP").is_ok_and(|v| v == "1"))
}

/// Seconds of one-time work (CUDA context, weights upload, cuDNN plans, graph capture), summed
/// per name until [`print_startup`] prints them.
static STARTUP: Mutex<Vec<(&str, f64, usize)>> = Mutex::new(Vec::new());

/// Runs `f` and, when start-up profiling is requested, adds its wall time under `name`; with
/// `device` given, the device is synchronized first and after, so that the time is the work's.
pub fn startup_time<T, E>(
    name: &'static str,
    device: Option<&Device>,
    f: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    if !startup_requested() {
        return f();
    }
    let sync = || device.map(|d| d.synchronize());
    let _ = sync();
    let start = Instant::now();
    let out = f();
    let _ = sync();
    let seconds = start.elapsed().as_secs_f64();
    if let Ok(mut sums) = STARTUP.lock() {
        match sums.iter_mut().find(|(n, ..)| *n == name) {
            Some(entry) => {
                entry.1 += seconds;
                entry.2 += 1;
            }
            None => sums.push((name, seconds, 1)),
        }
    }
    out
}

/// Prints the sums [`startup_time`] gathered since the last print as one JSON line on stderr,
/// `{"candlewick_startup": {"what": "load", "unet": {"s": 0.31, "calls": 1}, ...}}`, and clears them.
pub fn print_startup(what: &str) {
    if !startup_requested() {
        return;
    }
    let Ok(mut sums) = STARTUP.lock() else { return };
    let parts: String =
        sums.iter().map(|(name, s, calls)| format!(", \"{name}\": {{\"s\": {s:.4}, \"calls\": {calls}}}")).collect();
    eprintln!("{{\"candlewick_startup\": {{\"what\": \"{what}\"{parts}}}}}");
    sums.clear();
}

/// Runs `f`, timing its GPU work under `name` when this thread is recording.
pub fn scope<T>(name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    imp::scope(name, f)
}

/// Record the scopes `f` runs on this thread, and print their sums when it returns.
pub fn record<T>(device: &Device, f: impl FnOnce() -> T) -> T {
    if !requested() || !device.is_cuda() {
        return f();
    }
    imp::record(device, f)
}

#[cfg(feature = "cuda")]
mod imp {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use candle_core::cuda::cudarc::driver::{CudaEvent, CudaStream};
    use candle_core::{Device, Result};

    struct Recording {
        stream: Arc<CudaStream>,
        spans: Vec<(&'static str, CudaEvent, CudaEvent)>,
    }

    thread_local! {
        static RECORDING: RefCell<Option<Recording>> = const { RefCell::new(None) };
    }

    fn event(stream: &Arc<CudaStream>) -> Option<CudaEvent> {
        let flags = candle_core::cuda::cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;
        let event = stream.context().new_event(Some(flags)).ok()?;
        event.record(stream).ok()?;
        Some(event)
    }

    pub fn scope<T>(name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let start = RECORDING.with(|r| r.borrow().as_ref().and_then(|rec| event(&rec.stream)));
        let out = f()?;
        if let Some(start) = start {
            RECORDING.with(|r| {
                if let Some(rec) = r.borrow_mut().as_mut() {
                    if let Some(end) = event(&rec.stream) {
                        rec.spans.push((name, start, end));
                    }
                }
            });
        }
        Ok(out)
    }

    pub fn record<T>(device: &Device, f: impl FnOnce() -> T) -> T {
        let Device::Cuda(cuda) = device else { return f() };
        RECORDING.with(|r| *r.borrow_mut() = Some(Recording { stream: cuda.cuda_stream(), spans: Vec::new() }));
        let out = f();
        let Some(rec) = RECORDING.with(|r| r.borrow_mut().take()) else { return out };
        let _ = rec.stream.synchronize();
        let mut sums: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
        for (name, start, end) in &rec.spans {
            if let Ok(ms) = start.elapsed_ms(end) {
                let entry = sums.entry(name).or_default();
                entry.0 += ms as f64;
                entry.1 += 1;
            }
        }
        let parts: Vec<String> = sums
            .iter()
            .map(|(name, (ms, calls))| format!("\"{name}\": {{\"ms\": {ms:.3}, \"calls\": {calls}}}"))
            .collect();
        eprintln!("{{\"candlewick_profile\": {{{}}}}}", parts.join(", "));
        out
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::{Device, Result};

    pub fn scope<T>(_name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        f()
    }

    pub fn record<T>(_device: &Device, f: impl FnOnce() -> T) -> T {
        f()
    }
}
