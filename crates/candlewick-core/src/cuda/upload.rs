//! Weights from a file to the GPU faster than candle's upload. `from_raw_buffer` copies each
//! tensor from pageable memory (the memory-mapped file), which the driver stages through a small
//! pinned buffer of its own, one tensor at a time. For a tensor of 1 MiB or more, two ways here,
//! chosen by `CANDLEWICK_PIN_WEIGHTS` (the A/B switch of the start-up profile's `*_weights` rows):
//!
//! - `staged` (the default): the bytes are copied by several threads into one of two page-locked
//!   buffers of our own while the GPU copies the other one in, so the host's copy, the bus and the
//!   next tensor overlap. The buffers live for one component's load ([`finish`] frees them).
//! - `register`: the bytes are page-locked where they lie (`cuMemHostRegister`, read-only), copied
//!   by one DMA transfer, and released again before the next tensor.
//! - `off`: candle's upload for every tensor.
//!
//! The bytes on the GPU are the same whichever way. Where the driver refuses (pinned memory
//! unavailable, no read-only registration), the process takes candle's path from then on.
//! With `CANDLEWICK_PROFILE_STARTUP=1`, `weights_pinned_copy` counts and times the tensors copied
//! this way.

use candle_core::{DType, Device, Result, Tensor};

/// Tensors smaller than this take candle's path: they are a small share of the bytes.
const MIN_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Staged,
    Register,
    Off,
}

/// `CANDLEWICK_PIN_WEIGHTS`: "off" (or "0", "false"), "register", else staged.
fn mode() -> Mode {
    static MODE: std::sync::OnceLock<Mode> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("CANDLEWICK_PIN_WEIGHTS").as_deref().map(str::trim) {
        Ok("off" | "0" | "false") => Mode::Off,
        Ok("register") => Mode::Register,
        _ => Mode::Staged,
    })
}

/// `bytes` (a tensor stored as `dtype`, of `shape`) as a tensor on `device` by a pinned copy; None
/// where that path does not apply (a CPU device, a small tensor, the switch off, a build without
/// CUDA, the driver refusing) and the caller takes candle's upload.
pub fn tensor(bytes: &[u8], dtype: DType, shape: &[usize], device: &Device) -> Result<Option<Tensor>> {
    let Device::Cuda(_cuda) = device else { return Ok(None) };
    let mode = mode();
    if bytes.len() < MIN_BYTES || mode == Mode::Off {
        return Ok(None);
    }
    #[cfg(feature = "cuda")]
    {
        imp::tensor(bytes, dtype, shape, _cuda, mode == Mode::Staged)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (dtype, shape);
        Ok(None)
    }
}

/// Free this thread's staging buffers (after the copies that read them): called at the end of a
/// component's load.
pub fn finish() {
    #[cfg(feature = "cuda")]
    imp::finish();
}

#[cfg(feature = "cuda")]
mod imp {
    use std::cell::RefCell;
    use std::ffi::c_void;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use candle_core::cuda::cudarc::driver::{
        result, sys, CudaContext, CudaEvent, CudaSlice, DevicePtrMut, DeviceRepr, PinnedHostSlice,
    };
    use candle_core::cuda::{CudaDType, CudaDevice, CudaStorage};
    use candle_core::op::BackpropOp;
    use candle_core::{DType, Result, Storage, Tensor};

    /// Each staging buffer's size: one chunk of a tensor in flight on the bus while the next is copied.
    const STAGE_BYTES: usize = 16 << 20;

    /// Set once the driver refused: later tensors take candle's path at once.
    static REFUSED: AtomicBool = AtomicBool::new(false);

    thread_local! {
        static STAGING: RefCell<Option<Staging>> = const { RefCell::new(None) };
    }

    pub fn tensor(
        bytes: &[u8],
        dtype: DType,
        shape: &[usize],
        device: &CudaDevice,
        staged: bool,
    ) -> Result<Option<Tensor>> {
        if REFUSED.load(Ordering::Relaxed) {
            return Ok(None);
        }
        crate::profile::startup_time("weights_pinned_copy", None, || {
            let storage = match dtype {
                DType::F16 => copy::<half::f16>(bytes, device, staged)?.map(|s| wrap(s, device)),
                DType::BF16 => copy::<half::bf16>(bytes, device, staged)?.map(|s| wrap(s, device)),
                DType::F32 => copy::<f32>(bytes, device, staged)?.map(|s| wrap(s, device)),
                DType::F64 => copy::<f64>(bytes, device, staged)?.map(|s| wrap(s, device)),
                _ => None,
            };
            Ok(storage.map(|s| Tensor::from_storage(Storage::Cuda(s), shape, BackpropOp::none(), false)))
        })
    }

    pub fn finish() {
        // Dropping waits for the copies that read the buffers, then frees them.
        STAGING.with(|s| s.borrow_mut().take());
    }

    fn wrap<T: CudaDType>(slice: CudaSlice<T>, device: &CudaDevice) -> CudaStorage {
        CudaStorage::wrap_cuda_slice(slice, device.clone())
    }

    fn copy<T: DeviceRepr>(bytes: &[u8], device: &CudaDevice, staged: bool) -> Result<Option<CudaSlice<T>>> {
        let stream = device.cuda_stream();
        if stream.context().bind_to_thread().is_err() {
            return refused();
        }
        // SAFETY: every byte is written by the copies below before the slice is read (the
        // stream orders them before any later work on it).
        let mut out = unsafe { device.alloc::<T>(bytes.len() / std::mem::size_of::<T>()) }?;
        let done = {
            let (dst, _sync) = out.device_ptr_mut(&stream);
            match staged {
                true => copy_staged(bytes, dst, &stream),
                false => copy_registered(bytes, dst, &stream, device),
            }
        };
        match done {
            Ok(true) => Ok(Some(out)),
            Ok(false) => refused(),
            Err(e) => Err(candle_core::Error::Msg(format!("copying {} bytes of weights to the GPU failed: {e}", bytes.len()))),
        }
    }

    fn refused<T>() -> Result<Option<T>> {
        REFUSED.store(true, Ordering::Relaxed);
        Ok(None)
    }

    /// Two page-locked buffers and, for each, an event recorded after the copy that last read it.
    struct Staging {
        buffers: Vec<(PinnedHostSlice<u8>, CudaEvent)>,
    }

    impl Staging {
        fn new(context: &Arc<CudaContext>) -> Option<Self> {
            let mut buffers = Vec::new();
            for _ in 0..2 {
                // SAFETY: the buffer is written before the bus reads it (copy_staged).
                let buffer = unsafe { context.alloc_pinned_with_flags::<u8>(STAGE_BYTES, 0) }.ok()?;
                buffers.push((buffer, context.new_event(None).ok()?));
            }
            Some(Self { buffers })
        }
    }

    impl Drop for Staging {
        fn drop(&mut self) {
            for (_, event) in &self.buffers {
                let _ = event.synchronize();
            }
        }
    }

    /// Chunk by chunk through the two staging buffers: wait until the buffer's last copy to the
    /// GPU is done, fill it (several threads), queue its copy. Ok(false) when no buffer could be had.
    fn copy_staged(
        bytes: &[u8],
        dst: sys::CUdeviceptr,
        stream: &Arc<candle_core::cuda::cudarc::driver::CudaStream>,
    ) -> std::result::Result<bool, result::DriverError> {
        STAGING.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = Staging::new(stream.context());
            }
            let Some(staging) = cell.as_mut() else { return Ok(false) };
            for (i, chunk) in bytes.chunks(STAGE_BYTES).enumerate() {
                let (buffer, event) = &mut staging.buffers[i % 2];
                event.synchronize()?;
                let host = &mut buffer.as_mut_slice()?[..chunk.len()];
                parallel_copy(chunk, host);
                // SAFETY: `dst` holds bytes.len() bytes (allocated for them); `host` stays alive
                // and unwritten until `event`, recorded after this copy, has completed.
                unsafe { result::memcpy_htod_async(dst + (i * STAGE_BYTES) as u64, host, stream.cu_stream()) }?;
                event.record(stream)?;
            }
            Ok(true)
        })
    }

    /// memcpy with up to eight threads (the source is a memory-mapped file: its page faults
    /// are the slow part, and they spread across threads).
    fn parallel_copy(src: &[u8], dst: &mut [u8]) {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        let part = src.len().div_ceil(threads).max(1 << 20);
        if src.len() <= part {
            dst.copy_from_slice(src);
            return;
        }
        std::thread::scope(|scope| {
            for (s, d) in src.chunks(part).zip(dst.chunks_mut(part)) {
                scope.spawn(move || d.copy_from_slice(s));
            }
        });
    }

    /// Unregisters the range when dropped (after the copy has been waited for, or failed).
    struct Registered(*mut c_void);

    impl Drop for Registered {
        fn drop(&mut self) {
            // SAFETY: the pointer was registered by cuMemHostRegister and nothing reads it now.
            unsafe { sys::cuMemHostUnregister(self.0) };
        }
    }

    /// Page-lock `bytes` where they lie, copy them in one transfer, wait, release. Ok(false) when
    /// the driver will not register them.
    fn copy_registered(
        bytes: &[u8],
        dst: sys::CUdeviceptr,
        stream: &Arc<candle_core::cuda::cudarc::driver::CudaStream>,
        device: &CudaDevice,
    ) -> std::result::Result<bool, result::DriverError> {
        if !read_only_registration(device) {
            return Ok(false);
        }
        let host = bytes.as_ptr() as *mut c_void;
        // SAFETY: `bytes` is a live slice; READ_ONLY: the GPU only reads it (a read-only mapping
        // of a file can be registered so); it is unregistered before this function returns.
        let registered = unsafe { sys::cuMemHostRegister_v2(host, bytes.len(), sys::CU_MEMHOSTREGISTER_READ_ONLY) };
        if registered != sys::CUresult::CUDA_SUCCESS {
            return Ok(false);
        }
        let _registered = Registered(host);
        // SAFETY: `dst` holds bytes.len() bytes; the source stays registered until the stream
        // has finished the copy (synchronized below, before `_registered` drops).
        unsafe { result::memcpy_htod_async(dst, bytes, stream.cu_stream()) }?;
        stream.synchronize()?;
        Ok(true)
    }

    /// Whether this GPU can register memory read-only (asked once per process).
    fn read_only_registration(device: &CudaDevice) -> bool {
        use sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED as ATTRIBUTE;
        static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *SUPPORTED.get_or_init(|| device.cuda_stream().context().attribute(ATTRIBUTE).is_ok_and(|v| v == 1))
    }
}
