//! What the fused kernels' wrappers share: the PTX module of each kernel family (compiled by
//! build.rs from src/cuda/kernels/), the kernels' dtype suffixes, their grids and the alignment
//! checks of their vectorized variants.

use candle_core::cuda::cudarc::driver::{CudaView, DevicePtr, LaunchConfig};
use candle_core::cuda::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::{bail, DType, Layout, Result};

use crate::cuda::op::PtxModule;

macro_rules! family {
    ($name:ident, $file:literal) => {
        pub const $name: PtxModule = PtxModule {
            name: concat!("candlewick_", $file),
            ptx: include_str!(concat!(env!("OUT_DIR"), "/", $file, ".ptx")),
        };
    };
}

family!(NORM, "norm");
family!(LAYOUT, "layout");
family!(CONV_TAIL, "conv_tail");
family!(ELEMENTWISE, "elementwise");
family!(FP8, "fp8");

/// Threads a block of the elementwise and row kernels.
pub const THREADS: u32 = 256;

/// The kernels' name suffix for `dtype`.
pub fn suffix(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F16 => Ok("f16"),
        DType::F32 => Ok("f32"),
        other => bail!("fused kernels: {other:?} is not supported"),
    }
}

/// A thread an item (`items` elements, or 16-byte vectors for the vec8 kernels), up to
/// 65,535 * 8 blocks, past which the kernels' grid-stride loops take several (with the unrolled
/// tile loops, measured no slower at batch 1 than four items a thread: bench/NOTES.md).
pub fn elementwise_grid(items: usize) -> u32 {
    items.div_ceil(THREADS as usize).clamp(1, 65_535 * 8) as u32
}

/// The launch of a kernel over the 32x32 tiles of [batch, rows, cols] (transpose, conv_epilogue,
/// group_norm_apply_tokens): grid (cols / 32, rows / 32, batch), block (32, 8).
/// [`super::tiles_fit`] checks the grid first.
pub fn tile_grid(batch: usize, rows: usize, cols: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (cols.div_ceil(32) as u32, rows.div_ceil(32) as u32, batch as u32),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    }
}

/// The launch of a `_pairs_f16` kernel over 64x64 tiles of [batch, rows, cols]: grid
/// (cols / 64, rows / 64, batch), block (32, 8) (8 is common.cuh's TILE_ROWS).
pub fn tile_grid_64(batch: usize, rows: usize, cols: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (cols.div_ceil(64) as u32, rows.div_ceil(64) as u32, batch as u32),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    }
}

/// Whether the f16 `_pairs` variant of a transposing kernel applies: both dims even and every
/// pointer 4-byte aligned (two halves a load and a store).
pub fn pairs_fit(suffix: &str, rows: usize, cols: usize, pointers: &[u64]) -> bool {
    suffix == "f16" && rows.is_multiple_of(2) && cols.is_multiple_of(2) && aligned(pointers, 4)
}

/// How many warps the GPU runs at once (SMs x warps an SM).
pub fn resident_warps(dev: &CudaDevice) -> Result<usize> {
    use candle_core::cuda::cudarc::driver::sys::CUdevice_attribute as A;
    let context = dev.cuda_stream().context().clone();
    let sms = context.attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).w()?;
    let threads = context.attribute(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR).w()?;
    Ok(sms.max(1) as usize * (threads.max(32) as usize / 32))
}

/// Whether every device address is a multiple of `bytes` (what a vectorized kernel loads at once).
pub fn aligned(pointers: &[u64], bytes: u64) -> bool {
    pointers.iter().all(|p| p % bytes == 0)
}

/// The device address of a slice or view.
pub fn ptr<T, S: DevicePtr<T>>(dev: &CudaDevice, s: &S) -> u64 {
    s.device_ptr(&dev.cuda_stream()).0
}

/// A contiguous input of a fused kernel as a device view.
pub fn view<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, T>> {
    crate::cuda::op::contiguous_view(s, l, "fused kernels")
}
