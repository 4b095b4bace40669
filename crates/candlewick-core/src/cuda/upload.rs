//! Weights from a file to the GPU by DMA. candle's upload (`from_raw_buffer`) copies from pageable
//! memory, which the driver stages through a small pinned buffer of its own. Here a tensor of 1 MiB
//! or more is page-locked where it lies (the memory-mapped file, or a buffer; `cuMemHostRegister`,
//! read-only), copied in one transfer, and released again before the next tensor: nothing stays
//! pinned after the call, and the bytes are the same.
//!
//! Where the driver refuses to register (a GPU or system without read-only registration, a
//! locked-memory limit), the process falls back to candle's path for every later tensor too.
//! `CANDLEWICK_PIN_WEIGHTS=off` takes candle's path throughout (the A/B switch of the start-up
//! profile's `*_weights` rows; `weights_pinned_copy` counts and times the tensors copied this way).
//! On an H200 (bench/NOTES.md, 2026-12-03 session 15) this took an SD1.5-shaped load from 1.69 s to
//! 1.55 s on average over three fresh processes each (1.57-1.80 s against 1.47-1.65 s), the same image
//! either way; copying through two pinned buffers of our own filled by several threads was no faster
//! than candle's path (1.58-1.78 s) and was taken out.

use candle_core::{DType, Device, Result, Tensor};

/// Tensors smaller than this take candle's path: they are a small share of the bytes.
const MIN_BYTES: usize = 1 << 20;

/// `bytes` (a tensor stored as `dtype`, of `shape`) as a tensor on `device` by a pinned copy; None
/// where that path does not apply (a CPU device, a small tensor, the switch off, a build without
/// CUDA, registration refused) and the caller takes candle's upload.
pub fn tensor(bytes: &[u8], dtype: DType, shape: &[usize], device: &Device) -> Result<Option<Tensor>> {
    let Device::Cuda(_cuda) = device else { return Ok(None) };
    if bytes.len() < MIN_BYTES || !enabled() {
        return Ok(None);
    }
    #[cfg(feature = "cuda")]
    {
        imp::tensor(bytes, dtype, shape, _cuda)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (dtype, shape);
        Ok(None)
    }
}

/// `CANDLEWICK_PIN_WEIGHTS`: on unless "off", "0" or "false".
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        !matches!(std::env::var("CANDLEWICK_PIN_WEIGHTS").as_deref().map(str::trim), Ok("off" | "0" | "false"))
    })
}

#[cfg(feature = "cuda")]
mod imp {
    use std::ffi::c_void;
    use std::sync::atomic::{AtomicBool, Ordering};

    use candle_core::cuda::cudarc::driver::{sys, CudaSlice, DevicePtrMut, DeviceRepr};
    use candle_core::cuda::{CudaDType, CudaDevice, CudaStorage};
    use candle_core::op::BackpropOp;
    use candle_core::{DType, Result, Storage, Tensor};

    /// Set once the driver refused a registration: later tensors take candle's path at once.
    static REFUSED: AtomicBool = AtomicBool::new(false);

    pub fn tensor(bytes: &[u8], dtype: DType, shape: &[usize], device: &CudaDevice) -> Result<Option<Tensor>> {
        if REFUSED.load(Ordering::Relaxed) {
            return Ok(None);
        }
        // Timed (with CANDLEWICK_PROFILE_STARTUP=1) as `weights_pinned_copy`: one call a tensor.
        crate::profile::startup_time("weights_pinned_copy", None, || upload(bytes, dtype, shape, device))
    }

    fn upload(bytes: &[u8], dtype: DType, shape: &[usize], device: &CudaDevice) -> Result<Option<Tensor>> {
        let storage = match dtype {
            DType::F16 => copy::<half::f16>(bytes, device)?.map(|s| wrap(s, device)),
            DType::BF16 => copy::<half::bf16>(bytes, device)?.map(|s| wrap(s, device)),
            DType::F32 => copy::<f32>(bytes, device)?.map(|s| wrap(s, device)),
            DType::F64 => copy::<f64>(bytes, device)?.map(|s| wrap(s, device)),
            _ => None,
        };
        Ok(storage.map(|s| Tensor::from_storage(Storage::Cuda(s), shape, BackpropOp::none(), false)))
    }

    fn wrap<T: CudaDType>(slice: CudaSlice<T>, device: &CudaDevice) -> CudaStorage {
        CudaStorage::wrap_cuda_slice(slice, device.clone())
    }

    /// Unregisters the range when dropped (after the copy has been waited for, or failed).
    struct Registered(*mut c_void);

    impl Drop for Registered {
        fn drop(&mut self) {
            // SAFETY: the pointer was registered by cuMemHostRegister and nothing reads it now.
            unsafe { sys::cuMemHostUnregister(self.0) };
        }
    }

    fn copy<T: DeviceRepr>(bytes: &[u8], device: &CudaDevice) -> Result<Option<CudaSlice<T>>> {
        let stream = device.cuda_stream();
        let context = stream.context();
        if context.bind_to_thread().is_err() || !read_only_registration(device) {
            REFUSED.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        let host = bytes.as_ptr() as *mut c_void;
        // SAFETY: `bytes` is a live slice; READ_ONLY: the GPU only reads it (a read-only mapping
        // of a file can be registered so); it is unregistered before this function returns.
        let registered = unsafe { sys::cuMemHostRegister_v2(host, bytes.len(), sys::CU_MEMHOSTREGISTER_READ_ONLY) };
        if registered != sys::CUresult::CUDA_SUCCESS {
            REFUSED.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        let guard = Registered(host);
        // SAFETY: every element is written by the copy below before the slice is read.
        let mut out = unsafe { device.alloc::<T>(bytes.len() / std::mem::size_of::<T>()) }?;
        {
            let (dst, _sync) = out.device_ptr_mut(&stream);
            // SAFETY: `out` holds bytes.len() bytes (the caller's shape times the dtype's size,
            // checked against the file's header); the source stays registered until the stream
            // has finished the copy.
            let copied = unsafe { sys::cuMemcpyHtoDAsync_v2(dst, host, bytes.len(), stream.cu_stream()) };
            if copied != sys::CUresult::CUDA_SUCCESS {
                drop(guard);
                candle_core::bail!("copying {} bytes of weights to the GPU failed: {copied:?}", bytes.len());
            }
        }
        let waited = stream.synchronize();
        drop(guard);
        waited.map_err(|e| candle_core::Error::Msg(format!("copying weights to the GPU failed: {e}")))?;
        Ok(Some(out))
    }

    /// Whether this GPU can register memory read-only (asked once per process).
    fn read_only_registration(device: &CudaDevice) -> bool {
        use sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED as ATTRIBUTE;
        static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *SUPPORTED.get_or_init(|| device.cuda_stream().context().attribute(ATTRIBUTE).is_ok_and(|v| v == 1))
    }
}
