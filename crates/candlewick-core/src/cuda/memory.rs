//! How much GPU memory this process's tensors use, from CUDA's default memory pool of the
//! device (where candle allocates, through cuMemAllocAsync) plus the memory of captured CUDA
//! graphs (`cuda::graph`): PyTorch's `memory_allocated`, `max_memory_allocated` and
//! `memory_reserved`, for the benchmarks and for callers who size their batches. The CUDA
//! context and the libraries' own buffers (cuBLAS) are not included.

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

fn no_cuda() -> Error {
    Error::Device("this build of candlewick was compiled without CUDA: there is no GPU memory to report".into())
}

#[cfg(feature = "cuda")]
mod imp {
    use super::*;
    use candle_core::cuda_backend::cudarc::driver::{result, sys};

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
        use sys::CUgraphMem_attribute::*;
        use sys::CUmemPool_attribute::*;
        let (device, pool) = device_and_pool(ordinal)?;
        let both = |p, g| -> Result<u64> { Ok(pool_attribute(pool, p)? + graph_attribute(device, g)?) };
        Ok(GpuMemory {
            used: both(CU_MEMPOOL_ATTR_USED_MEM_CURRENT, CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT)?,
            peak_used: both(CU_MEMPOOL_ATTR_USED_MEM_HIGH, CU_GRAPH_MEM_ATTR_USED_MEM_HIGH)?,
            reserved: both(CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT)?,
        })
    }

    pub fn reset_peak(ordinal: usize) -> Result<()> {
        let (device, pool) = device_and_pool(ordinal)?;
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
