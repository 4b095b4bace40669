//! How much GPU memory this process's tensors use, from CUDA's default memory pool of the
//! device (where candle allocates, through cuMemAllocAsync) plus the memory of captured CUDA
//! graphs (`cuda::graph`): PyTorch's `memory_allocated`, `max_memory_allocated` and
//! `memory_reserved`, for the benchmarks and for callers who size their batches. The CUDA
//! context and the libraries' own buffers (cuBLAS) are not included.
//!
//! The pool and the graphs each keep their own high-water mark, so their sum over-states the peak
//! when the two peaked at different times (a UNet step's activations live in graph memory, the VAE
//! decode's in the pool). A pipeline marks its phase boundaries ([`phase_boundary`]): the sum of
//! the highs so far is carried and both marks restart there, so that the peak reported is the
//! highest phase's, and there only the one that changes in it is at its high. At the end of the
//! denoising loop the boundary also gives the graphs' idle memory back to the driver
//! (`cuDeviceGraphMemTrim`), so that the decode does not run beside the UNet's activations
//! (`CANDLEWICK_TRIM_GRAPH_MEMORY=0` keeps it, for the A/B).

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuMemory {
    /// Bytes held by live tensors (and cuDNN's workspace) now.
    pub used: u64,
    /// The most `used` has been since the process started or [`reset_peak`] was called (the
    /// pool's and the graphs' highs added: an upper bound when both peaked at different times).
    pub peak_used: u64,
    /// Bytes the pool holds from the driver, used or cached for reuse.
    pub reserved: u64,
}

/// The memory of CUDA device `ordinal`; an error on a CPU-only build or a device that has none.
pub fn usage(ordinal: usize) -> Result<GpuMemory> {
    let usage: Result<Option<GpuMemory>> = crate::cuda::features::built!("cuda", imp::usage(ordinal));
    usage?.ok_or_else(no_cuda)
}

/// Start a new peak: `peak_used` becomes the current `used`.
pub fn reset_peak(ordinal: usize) -> Result<()> {
    let reset: Result<Option<()>> = crate::cuda::features::built!("cuda", imp::reset_peak(ordinal));
    reset?.ok_or_else(no_cuda)
}

/// A pipeline's phase boundary on `device` (after its work there has finished): the peak so far
/// is carried and the high-water marks restart; with `trim_graphs`, the memory captured graphs hold
/// between their runs goes back to the driver (unless `CANDLEWICK_TRIM_GRAPH_MEMORY=0`). Nothing on
/// a CPU device or a CPU-only build.
pub fn phase_boundary(device: &candle_core::Device, trim_graphs: bool) -> Result<()> {
    if !matches!(device, candle_core::Device::Cuda(_)) {
        return Ok(());
    }
    let done: Result<Option<()>> =
        crate::cuda::features::built!("cuda", imp::phase_boundary(device, trim_graphs && trim_enabled()));
    done.map(|_| ())
}

/// Whether graph memory is trimmed at the end of the denoising loop (on unless
/// `CANDLEWICK_TRIM_GRAPH_MEMORY=0`; read once).
fn trim_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("CANDLEWICK_TRIM_GRAPH_MEMORY").map_or(true, |v| v != "0"))
}

fn no_cuda() -> Error {
    Error::Device("this build of candlewick was compiled without CUDA: there is no GPU memory to report".into())
}

#[cfg(feature = "cuda")]
mod imp {
    use super::*;
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Per device ordinal, the highest peak of the phases closed since the last reset.
    static CARRIED: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

    fn carried(ordinal: usize) -> Option<&'static AtomicU64> {
        CARRIED.get(ordinal)
    }

    /// The device and its default memory pool, looked up once per call.
    fn device_and_pool(ordinal: usize) -> Result<(sys::CUdevice, sys::CUmemoryPool)> {
        let fail = |e: result::DriverError| Error::Device(format!("cannot read the memory of cuda:{ordinal}: {e}"));
        result::init().map_err(fail)?;
        let device = result::device::get(ordinal as i32).map_err(fail)?;
        // SAFETY: `device` came from cuDeviceGet.
        let pool = unsafe { result::device::get_default_mem_pool(device) }.map_err(fail)?;
        Ok((device, pool))
    }

    fn pool_attribute(pool: sys::CUmemoryPool, attr: sys::CUmemPool_attribute) -> Result<u64> {
        let mut value = 0u64;
        // SAFETY: these attributes are cuuint64_t values.
        unsafe { result::mem_pool::get_attribute(pool, attr, &mut value as *mut u64 as *mut _) }
            .map_err(|e| Error::Device(format!("cannot read GPU memory pool attribute {attr:?}: {e}")))?;
        Ok(value)
    }

    fn graph_attribute(device: sys::CUdevice, attr: sys::CUgraphMem_attribute) -> Result<u64> {
        let mut value = 0u64;
        // SAFETY: these attributes are cuuint64_t values; `device` came from cuDeviceGet.
        unsafe { sys::cuDeviceGetGraphMemAttribute(device, attr, &mut value as *mut u64 as *mut _) }
            .result()
            .map_err(|e| Error::Device(format!("cannot read CUDA graph memory attribute {attr:?}: {e}")))?;
        Ok(value)
    }

    pub fn usage(ordinal: usize) -> Result<GpuMemory> {
        let (device, pool) = device_and_pool(ordinal)?;
        usage_of(ordinal, device, pool)
    }

    fn usage_of(ordinal: usize, device: sys::CUdevice, pool: sys::CUmemoryPool) -> Result<GpuMemory> {
        use sys::CUgraphMem_attribute::*;
        use sys::CUmemPool_attribute::*;
        let both = |p, g| -> Result<u64> { Ok(pool_attribute(pool, p)? + graph_attribute(device, g)?) };
        let phase_peak = both(CU_MEMPOOL_ATTR_USED_MEM_HIGH, CU_GRAPH_MEM_ATTR_USED_MEM_HIGH)?;
        Ok(GpuMemory {
            used: both(CU_MEMPOOL_ATTR_USED_MEM_CURRENT, CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT)?,
            peak_used: phase_peak.max(carried(ordinal).map_or(0, |c| c.load(Ordering::Relaxed))),
            reserved: both(CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT)?,
        })
    }

    pub fn phase_boundary(device: &candle_core::Device, trim_graphs: bool) -> Result<()> {
        let candle_core::Device::Cuda(cuda) = device else { return Ok(()) };
        let ordinal = cuda.cuda_stream().context().ordinal();
        let (device, pool) = device_and_pool(ordinal)?;
        let peak = usage_of(ordinal, device, pool)?.peak_used;
        if let Some(c) = carried(ordinal) {
            c.fetch_max(peak, Ordering::Relaxed);
        }
        restart_highs(device, pool)?;
        if trim_graphs {
            // SAFETY: `device` came from cuDeviceGet; memory of graphs running or queued is kept.
            unsafe { sys::cuDeviceGraphMemTrim(device) }
                .result()
                .map_err(|e| Error::Device(format!("cannot trim the CUDA graphs' memory on cuda:{ordinal}: {e}")))?;
        }
        Ok(())
    }

    pub fn reset_peak(ordinal: usize) -> Result<()> {
        if let Some(c) = carried(ordinal) {
            c.store(0, Ordering::Relaxed);
        }
        let (device, pool) = device_and_pool(ordinal)?;
        restart_highs(device, pool)
    }

    /// Both high-water marks restart at the current use.
    fn restart_highs(device: sys::CUdevice, pool: sys::CUmemoryPool) -> Result<()> {
        // SAFETY: both high-water marks take a cuuint64_t; 0 is the only value they accept (a reset).
        let mut zero = 0u64;
        unsafe {
            result::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                &mut zero as *mut u64 as *mut _,
            )
        }
        .map_err(|e| Error::Device(format!("cannot reset the GPU memory peak: {e}")))?;
        unsafe {
            sys::cuDeviceSetGraphMemAttribute(
                device,
                sys::CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH,
                &mut zero as *mut u64 as *mut _,
            )
        }
        .result()
        .map_err(|e| Error::Device(format!("cannot reset the CUDA graph memory peak: {e}")))
    }
}
