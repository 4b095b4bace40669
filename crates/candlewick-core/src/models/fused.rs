//! Fused CUDA kernels (src/kernels/fused.cu) for bias adds, GroupNorm (+ SiLU), GEGLU, the
//! NCHW <-> tokens transposes, a channels-last convolution's tail and the skip concatenation: one kernel where candle runs several, and no per-element index
//! arithmetic for broadcasts and permutes.
//!
//! Each function returns None when the kernels cannot run here (a CPU tensor, a build without
//! CUDA, a dtype other than f16/f32) and the caller composes candle's ops instead; the CPU path
//! and these kernels compute the same function (checked against diffusers on the GPU machine:
//! bench/gpu/parity.mjs).

use candle_core::{Result, Tensor};

/// `x + bias` broadcast along dim 1 of `x` ([n, channels, ...]) or, with `channel_dim` the
/// last dim, along the last dim ([..., channels]).
pub fn bias_add(x: &Tensor, bias: &Tensor, channel_dim: usize) -> Result<Option<Tensor>> {
    if !usable(x) || bias.dtype() != x.dtype() {
        return Ok(None);
    }
    imp::bias_add(x, bias, channel_dim).map(Some)
}

/// `residual + (x + bias)`, the bias broadcast as in [`bias_add`]; `residual` has `x`'s shape.
pub fn bias_add_residual(x: &Tensor, bias: &Tensor, channel_dim: usize, residual: &Tensor) -> Result<Option<Tensor>> {
    if !usable(x) || bias.dtype() != x.dtype() || residual.dtype() != x.dtype() || residual.dims() != x.dims() {
        return Ok(None);
    }
    imp::bias_add_residual(x, bias, channel_dim, residual).map(Some)
}

/// LayerNorm over the last dim of `x`, with per-feature `weight` and `bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if !usable(x) || weight.dtype() != x.dtype() || bias.dtype() != x.dtype() || x.rank() == 0 {
        return Ok(None);
    }
    let cols = x.dim(x.rank() - 1)?;
    if cols == 0 || x.elem_count() / cols > u32::MAX as usize {
        return Ok(None);
    }
    imp::layer_norm(x, weight, bias, eps).map(Some)
}

/// diffusers' GroupNorm over [n, c, ...] with per-channel affine, then SiLU when `silu`.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Option<Tensor>> {
    if !usable(x) || weight.dtype() != x.dtype() || bias.dtype() != x.dtype() || x.rank() < 2 {
        return Ok(None);
    }
    // One grid row per group of each image; beyond CUDA's 65,535 grid rows, candle's ops.
    let n = x.dim(0)?;
    if n * groups > 65_535 || x.elem_count() / n.max(1) / groups.max(1) > u32::MAX as usize {
        return Ok(None);
    }
    imp::group_norm(x, weight, bias, groups, eps, silu, false).map(Some)
}

/// [`group_norm`] on [n, c, h, w], written channels-last: [n, h*w, c] (a channels-last
/// convolution's input, or a transformer's tokens) in the same pass.
pub fn group_norm_tokens(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Option<Tensor>> {
    if !usable(x) || weight.dtype() != x.dtype() || bias.dtype() != x.dtype() || x.rank() != 4 {
        return Ok(None);
    }
    // group_norm's grid and the tiles' grid: beyond, candle's ops.
    let (n, c, h, w) = x.dims4()?;
    if n * groups > 65_535 || !tiles_fit(n, c, h * w) || c / groups.max(1) * h * w > u32::MAX as usize {
        return Ok(None);
    }
    imp::group_norm(x, weight, bias, groups, eps, silu, true).map(Some)
}

/// diffusers' GEGLU on the projection's output `h` [..., 2n]: h[..., :n] * gelu(h[..., n:]),
/// the projection's `bias` [2n] (when given) added first, in the same pass.
pub fn geglu(h: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !usable(h) || bias.is_some_and(|b| b.dtype() != h.dtype()) {
        return Ok(None);
    }
    imp::geglu(h, bias).map(Some)
}

/// The last two dims of a rank-3 `x` swapped, contiguous: [b, m, n] -> [b, n, m].
pub fn transpose(x: &Tensor) -> Result<Option<Tensor>> {
    if !usable(x) || x.rank() != 3 {
        return Ok(None);
    }
    let (b, rows, cols) = x.dims3()?;
    if !tiles_fit(b, rows, cols) {
        return Ok(None);
    }
    imp::transpose(x).map(Some)
}

/// The tail of a channels-last convolution: its output `y` [b, p, q, k] back to [b, k, p, q] with
/// `bias` [k] added, then `per_sample` [b or 1, k] (a resnet's time embedding), then `residual`
/// [b, k, p, q] + that (a resnet's shortcut): one pass where candle would run four.
pub fn conv_epilogue(
    y: &Tensor,
    bias: &Tensor,
    per_sample: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    let same_dtype = |t: Option<&Tensor>| t.is_none_or(|t| t.dtype() == y.dtype());
    if !usable(y) || y.rank() != 4 || !same_dtype(Some(bias)) || !same_dtype(per_sample) || !same_dtype(residual) {
        return Ok(None);
    }
    let (b, p, q, k) = y.dims4()?;
    if !tiles_fit(b, p * q, k) {
        return Ok(None);
    }
    imp::conv_epilogue(y, bias, per_sample, residual).map(Some)
}

/// GroupNorm (then SiLU when `silu`) of what a channels-last convolution's tail would make of
/// its raw output: `y` [b, p, q, c] (cuDNN's NHWC output) plus the convolution's `conv_bias`
/// [c], plus `per_sample` [b or 1, c] (a resnet's time embedding), each rounded as
/// [`conv_epilogue`] rounds them, written as tokens [b, p*q, c]: the next channels-last
/// convolution's input, in two kernels that never write the tail's result. None where the
/// kernels do not apply (not f16 on CUDA, groups that do not make blocks of 8-channel vectors).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_of_conv_tail(
    y: &Tensor,
    conv_bias: &Tensor,
    per_sample: Option<&Tensor>,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Option<Tensor>> {
    let f16 = |t: &Tensor| t.dtype() == candle_core::DType::F16;
    if !usable(y)
        || !f16(y)
        || !f16(conv_bias)
        || !f16(weight)
        || !f16(bias)
        || per_sample.is_some_and(|t| !f16(t))
        || y.rank() != 4
    {
        return Ok(None);
    }
    let (n, p, q, c) = y.dims4()?;
    // The kernels' 16-byte accesses: blocks of whole groups in 8-channel vectors, every tensor
    // starting on 8 halves (candle's allocations are 256-byte aligned).
    let fits = groups > 0 && c % groups == 0 && block_channels(c, groups) % 8 == 0 && c / groups <= 512 && n <= 65_535;
    let sizes = conv_bias.dims() == [c] && weight.dims() == [c] && bias.dims() == [c];
    let aligned = [Some(y), Some(conv_bias), per_sample, Some(weight), Some(bias)]
        .into_iter()
        .flatten()
        .all(|t| t.layout().start_offset() % 8 == 0);
    if !fits || !sizes || !aligned || n * p * q * c > u32::MAX as usize {
        return Ok(None);
    }
    imp::group_norm_of_conv_tail(y, conv_bias, per_sample, weight, bias, groups, eps, silu).map(Some)
}

/// Channels a block of the NHWC GroupNorm kernels covers: whole groups, as many as fit in
/// 64 channels (at least one group), a divisor of `groups` so that the blocks tile them.
fn block_channels(channels: usize, groups: usize) -> usize {
    let width = channels / groups;
    let mut per_block = 1;
    for k in 1..=groups {
        if groups % k == 0 && k * width <= 64 {
            per_block = k;
        }
    }
    per_block * width
}

/// `a` [n, c1, ...] and `b` [n, c2, ...] (the same other dims) concatenated along dim 1 in one
/// kernel of 16-byte copies, where candle's `Tensor::cat` launches a strided copy per input (the
/// up blocks' skip connections, 12 a UNet step). None where the sizes or offsets do not make
/// whole 16-byte vectors.
pub fn cat_dim1(a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    if !usable(a) || b.dtype() != a.dtype() || !b.device().same_device(a.device()) || a.rank() < 2 {
        return Ok(None);
    }
    if b.rank() != a.rank() || a.dim(0)? != b.dim(0)? || a.dims()[2..] != b.dims()[2..] || a.dim(0)? == 0 {
        return Ok(None);
    }
    let size = a.dtype().size_in_bytes();
    let n = a.dim(0)?;
    let whole_vectors = |t: &Tensor| {
        t.elem_count() / n * size % 16 == 0 && (!t.is_contiguous() || t.layout().start_offset() * size % 16 == 0)
    };
    if !whole_vectors(a) || !whole_vectors(b) || (a.elem_count() + b.elem_count()) * size / 16 > u32::MAX as usize {
        return Ok(None);
    }
    imp::cat_dim1(a, b).map(Some)
}

/// 2x nearest-neighbour upsampling of `x` [b, c, h, w] written channels-last, [b, 2h, 2w, c]
/// (the input of a channels-last convolution), in one pass.
pub fn upsample2x_tokens(x: &Tensor) -> Result<Option<Tensor>> {
    if !usable(x) || x.rank() != 4 {
        return Ok(None);
    }
    let (b, c, h, w) = x.dims4()?;
    if !tiles_fit(b, c, h * w) || 4 * c * h * w > u32::MAX as usize {
        return Ok(None);
    }
    imp::upsample2x_tokens(x).map(Some)
}

/// [b, c, h, w] -> [b, h*w, c] (a transformer's tokens), contiguous.
pub fn to_tokens(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    match transpose(&x.reshape((b, c, h * w))?)? {
        Some(t) => Ok(t),
        None => x.permute((0, 2, 3, 1))?.reshape((b, h * w, c)),
    }
}

/// [b, h*w, c] -> [b, c, h, w], contiguous: back from tokens.
pub fn from_tokens(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (b, _, c) = x.dims3()?;
    match transpose(x)? {
        Some(t) => t.reshape((b, c, h, w)),
        None => x.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?.contiguous(),
    }
}

/// Whether a kernel over the 32x32 tiles of [batch, rows, cols] fits CUDA's grid (at most
/// 65,535 tiles high and deep; `imp::tile_grid`); beyond, callers compose candle's ops.
fn tiles_fit(batch: usize, rows: usize, cols: usize) -> bool {
    batch <= 65_535 && rows.div_ceil(32) <= 65_535 && cols <= u32::MAX as usize
}

fn usable(x: &Tensor) -> bool {
    cfg!(feature = "cuda")
        && x.device().is_cuda()
        && matches!(x.dtype(), candle_core::DType::F16 | candle_core::DType::F32)
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda::{CudaDType, CudaStorage, WrapErr};
    use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
    use half::f16;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
    const MODULE: &str = "candlewick_fused";
    const THREADS: u32 = 256;

    fn suffix(dtype: DType) -> Result<&'static str> {
        match dtype {
            DType::F16 => Ok("f16"),
            DType::F32 => Ok("f32"),
            other => bail!("fused kernels: {other:?} is not supported"),
        }
    }

    /// A thread an item (`items` elements, or 16-byte vectors for the vec8 kernels), up to
    /// 65,535 * 8 blocks, past which the kernels' grid-stride loops take several (with the
    /// unrolled tile loops, about 0.5% at batch 1 against four items a thread: bench/NOTES.md,
    /// run 36, call 7).
    fn elementwise_grid(items: usize) -> u32 {
        items.div_ceil(THREADS as usize).clamp(1, 65_535 * 8) as u32
    }

    /// The launch of a kernel over the 32x32 tiles of [batch, rows, cols] (fused.cu's transpose,
    /// conv_epilogue, group_norm_apply_tokens): grid (cols / 32, rows / 32, batch), block (32, 8).
    /// [`super::tiles_fit`] checks the grid first.
    fn tile_grid(batch: usize, rows: usize, cols: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (cols.div_ceil(32) as u32, rows.div_ceil(32) as u32, batch as u32),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        }
    }

    /// The launch of a `_pairs_f16` kernel over 64x64 tiles of [batch, rows, cols]: grid
    /// (cols / 64, rows / 64, batch), block (32, 8) (8 is fused.cu's TILE_ROWS).
    fn tile_grid_64(batch: usize, rows: usize, cols: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (cols.div_ceil(64) as u32, rows.div_ceil(64) as u32, batch as u32),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Whether the f16 `_pairs` variant of a transposing kernel applies: both dims even and every
    /// pointer 4-byte aligned (two halves a load and a store).
    fn pairs_fit(suffix: &str, rows: usize, cols: usize, pointers: &[u64]) -> bool {
        suffix == "f16" && rows % 2 == 0 && cols % 2 == 0 && aligned(pointers, 4)
    }

    /// How many warps the GPU runs at once (SMs x warps an SM).
    fn resident_warps(dev: &candle_core::cuda::CudaDevice) -> Result<usize> {
        use candle_core::cuda::cudarc::driver::sys::CUdevice_attribute as A;
        let context = dev.cuda_stream().context().clone();
        let sms = context.attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).w()?;
        let threads = context.attribute(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR).w()?;
        Ok(sms.max(1) as usize * (threads.max(32) as usize / 32))
    }

    /// Whether every device address is a multiple of `bytes` (what a vectorized kernel loads at once).
    fn aligned(pointers: &[u64], bytes: u64) -> bool {
        pointers.iter().all(|p| p % bytes == 0)
    }

    fn ptr<T, S: DevicePtr<T>>(dev: &candle_core::cuda::CudaDevice, s: &S) -> u64 {
        s.device_ptr(&dev.cuda_stream()).0
    }

    fn contiguous_slice<'a, T: CudaDType>(
        s: &'a CudaStorage,
        l: &Layout,
    ) -> Result<candle_core::cuda::cudarc::driver::CudaView<'a, T>> {
        match l.contiguous_offsets() {
            Some((start, end)) => Ok(s.as_cuda_slice::<T>()?.slice(start..end)),
            None => bail!("fused kernels need contiguous inputs"),
        }
    }

    fn no_cpu<T>() -> Result<T> {
        bail!("fused CUDA kernels called on CPU tensors")
    }

    /// candle's CustomOp1/2/3 for a kernel wrapper whose `run::<T>` takes one (storage, layout)
    /// pair an input and runs in f16 or f32 (the first input's dtype); the CPU side refuses.
    macro_rules! custom_op {
        ($trait:ident for $op:ident, $name:literal, $($s:ident $l:ident),+) => {
            impl $trait for $op {
                fn name(&self) -> &'static str {
                    $name
                }
                #[allow(unused_variables)]
                fn cpu_fwd(&self, $($s: &CpuStorage, $l: &Layout),+) -> Result<(CpuStorage, Shape)> {
                    no_cpu()
                }
                fn cuda_fwd(&self, $($s: &CudaStorage, $l: &Layout),+) -> Result<(CudaStorage, Shape)> {
                    match [$($s.dtype()),+][0] {
                        DType::F16 => self.run::<f16>($(($s, $l)),+),
                        _ => self.run::<f32>($(($s, $l)),+),
                    }
                }
            }
        };
    }

    // ---- bias add -------------------------------------------------------------------------

    struct BiasAdd {
        inner: u32,
        channels: u32,
    }

    impl BiasAdd {
        fn run<T: CudaDType + DeviceRepr>(
            &self,
            (x, xl): (&CudaStorage, &Layout),
            (b, bl): (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            let dev = x.device().clone();
            let (xv, bv) = (contiguous_slice::<T>(x, xl)?, contiguous_slice::<T>(b, bl)?);
            let numel = xl.shape().elem_count();
            let mut y = unsafe { dev.alloc::<T>(numel) }?;
            let func = dev.get_or_load_custom_func(&format!("bias_add_{}", suffix(x.dtype())?), MODULE, PTX)?;
            let mut args = func.builder();
            let (n, inner, channels) = (numel as u64, self.inner, self.channels);
            args.arg(&xv).arg(&bv).arg(&mut y).arg(&n).arg(&inner).arg(&channels);
            let cfg = LaunchConfig {
                grid_dim: (elementwise_grid(numel), 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            unsafe { args.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(y, dev), xl.shape().clone()))
        }
    }

    custom_op!(CustomOp2 for BiasAdd, "fused-bias-add", x xl, a al);

    pub fn bias_add(x: &Tensor, bias: &Tensor, channel_dim: usize) -> Result<Tensor> {
        let dims = x.dims();
        if channel_dim >= dims.len() || bias.elem_count() != dims[channel_dim] {
            bail!("bias_add: a bias of {} values does not match dim {channel_dim} of {:?}", bias.elem_count(), dims);
        }
        let inner: usize = dims[channel_dim + 1..].iter().product();
        let op = BiasAdd { inner: inner as u32, channels: dims[channel_dim] as u32 };
        x.contiguous()?.apply_op2_no_bwd(&bias.contiguous()?, &op)
    }

    struct BiasAddResidual(BiasAdd);

    impl BiasAddResidual {
        fn run<T: CudaDType + DeviceRepr>(
            &self,
            (x, xl): (&CudaStorage, &Layout),
            (b, bl): (&CudaStorage, &Layout),
            (r, rl): (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            let dev = x.device().clone();
            let (xv, bv, rv) =
                (contiguous_slice::<T>(x, xl)?, contiguous_slice::<T>(b, bl)?, contiguous_slice::<T>(r, rl)?);
            let numel = xl.shape().elem_count();
            let mut y = unsafe { dev.alloc::<T>(numel) }?;
            let func =
                dev.get_or_load_custom_func(&format!("bias_add_residual_{}", suffix(x.dtype())?), MODULE, PTX)?;
            let mut args = func.builder();
            let (n, inner, channels) = (numel as u64, self.0.inner, self.0.channels);
            args.arg(&xv).arg(&bv).arg(&rv).arg(&mut y).arg(&n).arg(&inner).arg(&channels);
            let cfg = LaunchConfig {
                grid_dim: (elementwise_grid(numel), 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            unsafe { args.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(y, dev), xl.shape().clone()))
        }
    }

    custom_op!(CustomOp3 for BiasAddResidual, "fused-bias-add-residual", x xl, a al, b bl);

    pub fn bias_add_residual(x: &Tensor, bias: &Tensor, channel_dim: usize, residual: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if channel_dim >= dims.len() || bias.elem_count() != dims[channel_dim] {
            bail!("bias_add: a bias of {} values does not match dim {channel_dim} of {:?}", bias.elem_count(), dims);
        }
        let inner: usize = dims[channel_dim + 1..].iter().product();
        let op = BiasAddResidual(BiasAdd { inner: inner as u32, channels: dims[channel_dim] as u32 });
        x.contiguous()?.apply_op3_no_bwd(&bias.contiguous()?, &residual.contiguous()?, &op)
    }

    // ---- LayerNorm ---------------------------------------------------------------------------

    struct LayerNorm {
        eps: f32,
    }

    impl LayerNorm {
        fn run<T: CudaDType + DeviceRepr>(
            &self,
            (x, xl): (&CudaStorage, &Layout),
            (w, wl): (&CudaStorage, &Layout),
            (b, bl): (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            let dev = x.device().clone();
            let dims = xl.shape().dims();
            let cols = dims[dims.len() - 1];
            let rows = xl.shape().elem_count() / cols;
            if wl.shape().elem_count() != cols || bl.shape().elem_count() != cols {
                bail!("layer norm: weight and bias need {cols} values");
            }
            let (xv, wv, bv) =
                (contiguous_slice::<T>(x, xl)?, contiguous_slice::<T>(w, wl)?, contiguous_slice::<T>(b, bl)?);
            let mut y = unsafe { dev.alloc::<T>(rows * cols) }?;
            // f16 rows a multiple of 8 long, 16-byte aligned, too few for a warp a row to fill
            // half the GPU's warp slots (SD's 32x32 and lower levels at batch 2, CLIP): a block a
            // row. On an H100 (Nsight, bench/NOTES.md run 36): 512 rows of 1280 3.9 us against
            // 10.3 a warp a row, 2048 of 640 5.0 against 6.9, but 8192 of 320 8.7 against 6.3.
            // Otherwise, rows of an even length up to 64 * 24, 4-byte aligned: a warp a row with
            // the row in half2 registers (the smallest kernel that holds it); else the general one.
            let pointers = [ptr(&dev, &xv), ptr(&dev, &wv), ptr(&dev, &bv), ptr(&dev, &y)];
            let half2 = aligned(&pointers, 4);
            let pairs = [4usize, 8, 16, 24].into_iter().find(|&k| cols <= 64 * k);
            let vec8 = x.dtype() == DType::F16
                && cols % 8 == 0
                && cols <= 8 * 1024
                && aligned(&pointers, 16)
                && rows < resident_warps(&dev)? / 2;
            let name = match (x.dtype(), pairs) {
                _ if vec8 => "layer_norm_vec8_f16".to_string(),
                (DType::F16, Some(k)) if cols % 2 == 0 && half2 => format!("layer_norm_pairs{k}_f16"),
                _ => format!("layer_norm_{}", suffix(x.dtype())?),
            };
            let func = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
            let mut args = func.builder();
            let (r32, c32) = (rows as u32, cols as u32);
            args.arg(&xv).arg(&wv).arg(&bv).arg(&mut y).arg(&r32).arg(&c32).arg(&self.eps);
            const ROWS_PER_BLOCK: usize = THREADS as usize / 32;
            let cfg = if vec8 {
                LaunchConfig {
                    grid_dim: (rows as u32, 1, 1),
                    block_dim: ((cols / 8).next_multiple_of(32) as u32, 1, 1),
                    shared_mem_bytes: 0,
                }
            } else {
                LaunchConfig {
                    grid_dim: (rows.div_ceil(ROWS_PER_BLOCK) as u32, 1, 1),
                    block_dim: (THREADS, 1, 1),
                    shared_mem_bytes: 0,
                }
            };
            unsafe { args.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(y, dev), xl.shape().clone()))
        }
    }

    custom_op!(CustomOp3 for LayerNorm, "fused-layer-norm", x xl, a al, b bl);

    pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
        let op = LayerNorm { eps: eps as f32 };
        x.contiguous()?.apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &op)
    }

    // ---- GroupNorm (+ SiLU) -----------------------------------------------------------------

    /// Elements of one group that one block covers.
    const GROUP_CHUNK: u32 = 4096;

    /// The largest group (channels a group x pixels) that the one-kernel channels-last GroupNorm
    /// takes: SD's 16x16 and 8x8 levels. A block a group is latency-bound: on an H100 it beats
    /// the two passes there, matches them at 32x32 and is 2-3x slower at 64x64, where 64 blocks
    /// leave half the GPU idle (bench/NOTES.md, run 32).
    const SINGLE_PASS_ELEMENTS: usize = 12 << 10;

    struct GroupNorm {
        groups: u32,
        eps: f32,
        silu: bool,
        /// Write [n, pixels, c] instead of [n, c, pixels].
        tokens: bool,
    }

    impl GroupNorm {
        fn run<T: CudaDType + DeviceRepr>(
            &self,
            (x, xl): (&CudaStorage, &Layout),
            (w, wl): (&CudaStorage, &Layout),
            (b, bl): (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            let dev = x.device().clone();
            let dims = xl.shape().dims();
            let (n, c) = (dims[0], dims[1]);
            let inner: usize = dims[2..].iter().product();
            let groups = self.groups as usize;
            let per_row = c / groups * inner;
            let rows = n * groups;
            let chunks = per_row.div_ceil(GROUP_CHUNK as usize).max(1);
            let (xv, wv, bv) =
                (contiguous_slice::<T>(x, xl)?, contiguous_slice::<T>(w, wl)?, contiguous_slice::<T>(b, bl)?);
            let mut y = unsafe { dev.alloc::<T>(xl.shape().elem_count()) }?;
            if self.tokens
                && x.dtype() == DType::F16
                && self.single_pass_tokens(&dev, (&xv, &wv, &bv), &mut y, (n, c, inner))?
            {
                return Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from((n, inner, c))));
            }
            let mut partial = unsafe { dev.alloc::<f32>(rows * chunks * 2) }?;
            let stats_cfg = LaunchConfig {
                grid_dim: (chunks as u32, rows as u32, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let sfx = suffix(x.dtype())?;
            let (per_row, chunk) = (per_row as u32, GROUP_CHUNK);

            // f16 rows of whole 16-byte vectors: the kernel with 16-byte loads.
            let vec8 = x.dtype() == DType::F16 && per_row % 8 == 0 && aligned(&[ptr(&dev, &xv)], 16);
            let stats_name =
                if vec8 { "group_norm_stats_vec8_f16".to_string() } else { format!("group_norm_stats_{sfx}") };
            let stats = dev.get_or_load_custom_func(&stats_name, MODULE, PTX)?;
            let mut args = stats.builder();
            args.arg(&xv).arg(&mut partial).arg(&per_row).arg(&chunk);
            unsafe { args.launch(stats_cfg) }.w()?;
            if self.tokens {
                self.apply_tokens::<T>(&dev, sfx, (&xv, &wv, &bv), &partial, &mut y, (n, c, inner, chunks))?;
                return Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from((n, inner, c))));
            }

            let apply = dev.get_or_load_custom_func(&format!("group_norm_apply_{sfx}"), MODULE, PTX)?;
            let mut args = apply.builder();
            let (chunks, inner, cpg, silu) = (chunks as u32, inner as u32, (c / groups) as u32, self.silu as i32);
            args.arg(&xv).arg(&partial).arg(&wv).arg(&bv).arg(&mut y);
            args.arg(&per_row)
                .arg(&chunk)
                .arg(&chunks)
                .arg(&inner)
                .arg(&self.groups)
                .arg(&cpg)
                .arg(&self.eps)
                .arg(&silu);
            unsafe { args.launch(stats_cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(y, dev), xl.shape().clone()))
        }

        /// The whole norm channels-last in one kernel with a block a group (f16 only: the caller
        /// checks) for groups up to [`SINGLE_PASS_ELEMENTS`]: false where it does not run, and the
        /// caller runs the two passes.
        fn single_pass_tokens<T: CudaDType + DeviceRepr>(
            &self,
            dev: &candle_core::cuda::CudaDevice,
            (xv, wv, bv): (&CudaView<T>, &CudaView<T>, &CudaView<T>),
            y: &mut CudaSlice<T>,
            (n, c, pixels): (usize, usize, usize),
        ) -> Result<bool> {
            let cpg = c / self.groups as usize;
            let shapes_fit = cpg % 2 == 0 && pixels % 8 == 0 && n <= 65_535 && cpg * pixels <= SINGLE_PASS_ELEMENTS;
            let pointers_fit = aligned(&[ptr(dev, xv)], 16) && aligned(&[ptr(dev, &*y)], 4);
            if !shapes_fit || !pointers_fit {
                return Ok(false);
            }
            let func = dev.get_or_load_custom_func("group_norm_tokens_single_f16", MODULE, PTX)?;
            let mut args = func.builder();
            let (c32, pixels32, cpg32, silu) = (c as u32, pixels as u32, cpg as u32, self.silu as i32);
            args.arg(xv).arg(wv).arg(bv).arg(y);
            args.arg(&c32).arg(&pixels32).arg(&cpg32).arg(&self.eps).arg(&silu);
            let shared_mem_bytes = (cpg * (pixels + 2) * 2) as u32; // within the 48 KiB any launch may have
            let cfg = LaunchConfig { grid_dim: (self.groups, n as u32, 1), block_dim: (512, 1, 1), shared_mem_bytes };
            unsafe { args.launch(cfg) }.w()?;
            Ok(true)
        }

        /// Pass 2 channels-last: each row's mean and rstd from the partials, then the tiles.
        fn apply_tokens<T: CudaDType + DeviceRepr>(
            &self,
            dev: &candle_core::cuda::CudaDevice,
            sfx: &str,
            (xv, wv, bv): (&CudaView<T>, &CudaView<T>, &CudaView<T>),
            partial: &CudaSlice<f32>,
            y: &mut CudaSlice<T>,
            (n, c, pixels, chunks): (usize, usize, usize, usize),
        ) -> Result<()> {
            let groups = self.groups as usize;
            let rows = n * groups;
            let pairs = pairs_fit(sfx, c, pixels, &[ptr(dev, xv), ptr(dev, wv), ptr(dev, bv), ptr(dev, &*y)]);
            // The pairs kernel finalizes the statistics itself where that is a few partials a group
            // (each block reads those of the groups its 64 channels touch).
            let cpg = c / groups;
            if pairs && chunks <= 16 && cpg >= 1 && 64 / cpg + 2 <= 64 {
                let apply = dev.get_or_load_custom_func("group_norm_apply_tokens_pairs_f16", MODULE, PTX)?;
                let mut args = apply.builder();
                let (c32, pixels32, cpg32, silu) = (c as u32, pixels as u32, cpg as u32, self.silu as i32);
                let (chunks32, per_row) = (chunks as u32, (cpg * pixels) as u32);
                args.arg(xv).arg(partial).arg(wv).arg(bv).arg(y);
                args.arg(&c32).arg(&pixels32).arg(&self.groups).arg(&cpg32).arg(&silu);
                args.arg(&chunks32).arg(&per_row).arg(&self.eps);
                unsafe { args.launch(tile_grid_64(n, c, pixels)) }.w()?;
                return Ok(());
            }
            let mut stats = unsafe { dev.alloc::<f32>(rows * 2) }?;
            let finalize = dev.get_or_load_custom_func("group_norm_finalize", MODULE, PTX)?;
            let mut args = finalize.builder();
            let (rows32, chunks32, per_row) = (rows as u32, chunks as u32, (c / groups * pixels) as u32);
            args.arg(partial).arg(&mut stats).arg(&rows32).arg(&chunks32).arg(&per_row).arg(&self.eps);
            let cfg = LaunchConfig {
                grid_dim: (rows.div_ceil(8) as u32, 1, 1), // a warp a row
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            unsafe { args.launch(cfg) }.w()?;

            let name = if pairs {
                "group_norm_apply_tokens_pairs_f16".to_string()
            } else {
                format!("group_norm_apply_tokens_{sfx}")
            };
            let apply = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
            let mut args = apply.builder();
            let (c32, pixels32, cpg, silu) = (c as u32, pixels as u32, (c / groups) as u32, self.silu as i32);
            args.arg(xv).arg(&stats).arg(wv).arg(bv).arg(y);
            args.arg(&c32).arg(&pixels32).arg(&self.groups).arg(&cpg).arg(&silu);
            let (no_partials, zero) = (0u32, 0f32);
            if pairs {
                args.arg(&no_partials).arg(&no_partials).arg(&zero);
            }
            let cfg = if pairs { tile_grid_64(n, c, pixels) } else { tile_grid(n, c, pixels) };
            unsafe { args.launch(cfg) }.w()?;
            Ok(())
        }
    }

    custom_op!(CustomOp3 for GroupNorm, "fused-group-norm", x xl, a al, b bl);

    pub fn group_norm(
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        groups: usize,
        eps: f64,
        silu: bool,
        tokens: bool,
    ) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() < 2 || groups == 0 || dims[1] % groups != 0 {
            bail!("group norm: {groups} groups do not divide the channels of {dims:?}");
        }
        if weight.elem_count() != dims[1] || bias.elem_count() != dims[1] {
            bail!("group norm: weight and bias need {} values", dims[1]);
        }
        let op = GroupNorm { groups: groups as u32, eps: eps as f32, silu, tokens };
        x.contiguous()?.apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &op)
    }

    // ---- GEGLU ----------------------------------------------------------------------------

    struct Geglu {
        has_bias: bool,
    }

    impl Geglu {
        fn run<T: CudaDType + DeviceRepr>(
            &self,
            (h, hl): (&CudaStorage, &Layout),
            (b, bl): (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            let dev = h.device().clone();
            let mut dims = hl.shape().dims().to_vec();
            let last = dims.pop().unwrap_or(0);
            if last % 2 != 0 || last == 0 {
                bail!("GEGLU: the projection's last dim ({last}) must be even");
            }
            if self.has_bias && bl.shape().elem_count() != last {
                bail!("GEGLU: a bias of {} values for {last} features", bl.shape().elem_count());
            }
            dims.push(last / 2);
            let numel: usize = dims.iter().product();
            let (hv, bv) = (contiguous_slice::<T>(h, hl)?, contiguous_slice::<T>(b, bl)?);
            let mut y = unsafe { dev.alloc::<T>(numel) }?;
            let vec8 = aligned(&[ptr(&dev, &hv), ptr(&dev, &bv), ptr(&dev, &y)], 16);
            if h.dtype() == DType::F16 && (last / 2) % 8 == 0 && vec8 && numel / 8 < u32::MAX as usize {
                let func = dev.get_or_load_custom_func("geglu_vec8_f16", MODULE, PTX)?;
                let mut args = func.builder();
                let (vectors, n_vectors, has_bias) = ((numel / 8) as u32, (last / 16) as u32, self.has_bias as i32);
                args.arg(&hv).arg(&bv).arg(&mut y).arg(&vectors).arg(&n_vectors).arg(&has_bias);
                let cfg = LaunchConfig {
                    grid_dim: (elementwise_grid(numel / 8), 1, 1),
                    block_dim: (THREADS, 1, 1),
                    shared_mem_bytes: 0,
                };
                unsafe { args.launch(cfg) }.w()?;
                return Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from(dims)));
            }
            let func = dev.get_or_load_custom_func(&format!("geglu_{}", suffix(h.dtype())?), MODULE, PTX)?;
            let mut args = func.builder();
            let (n64, half, has_bias) = (numel as u64, (last / 2) as u32, self.has_bias as i32);
            args.arg(&hv).arg(&bv).arg(&mut y).arg(&n64).arg(&half).arg(&has_bias);
            let cfg = LaunchConfig {
                grid_dim: (elementwise_grid(numel), 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            unsafe { args.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from(dims)))
        }
    }

    custom_op!(CustomOp2 for Geglu, "fused-geglu", x xl, a al);

    /// `bias` None: any tensor stands in for the kernel's unused pointer.
    pub fn geglu(h: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let h = h.contiguous()?;
        let b = bias.unwrap_or(&h).contiguous()?;
        h.apply_op2_no_bwd(&b, &Geglu { has_bias: bias.is_some() })
    }

    // ---- concatenation along dim 1 ---------------------------------------------------------

    struct CatDim1;

    impl CatDim1 {
        fn run<T: CudaDType + DeviceRepr>(
            &self,
            (a, al): (&CudaStorage, &Layout),
            (b, bl): (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            let dev = a.device().clone();
            let (mut dims, n) = (al.shape().dims().to_vec(), al.shape().dims()[0]);
            dims[1] += bl.shape().dims()[1];
            let (av, bv) = (contiguous_slice::<T>(a, al)?, contiguous_slice::<T>(b, bl)?);
            let numel = av.len() + bv.len();
            let mut y = unsafe { dev.alloc::<T>(numel) }?;
            if !aligned(&[ptr(&dev, &av), ptr(&dev, &bv), ptr(&dev, &y)], 16) {
                bail!("concatenation: a tensor is not 16-byte aligned");
            }
            let vector = 16 / std::mem::size_of::<T>();
            let (a_vectors, b_vectors) = ((av.len() / n / vector) as u32, (bv.len() / n / vector) as u32);
            let vectors = (numel / vector) as u32;
            let func = dev.get_or_load_custom_func("cat_dim1_vec16", MODULE, PTX)?;
            let mut args = func.builder();
            args.arg(&av).arg(&bv).arg(&mut y).arg(&a_vectors).arg(&b_vectors).arg(&vectors);
            let cfg = LaunchConfig {
                grid_dim: (elementwise_grid(numel / vector), 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            unsafe { args.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from(dims)))
        }
    }

    custom_op!(CustomOp2 for CatDim1, "fused-cat-dim1", a al, b bl);

    pub fn cat_dim1(a: &Tensor, b: &Tensor) -> Result<Tensor> {
        a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &CatDim1)
    }

    // ---- transpose --------------------------------------------------------------------------

    struct Transpose;

    impl Transpose {
        fn run<T: CudaDType + DeviceRepr>(&self, (x, xl): (&CudaStorage, &Layout)) -> Result<(CudaStorage, Shape)> {
            let dev = x.device().clone();
            let (b, rows, cols) = xl.shape().dims3()?;
            let xv = contiguous_slice::<T>(x, xl)?;
            let mut y = unsafe { dev.alloc::<T>(b * rows * cols) }?;
            let func = dev.get_or_load_custom_func(&format!("transpose_{}", suffix(x.dtype())?), MODULE, PTX)?;
            let mut args = func.builder();
            let (r32, c32) = (rows as u32, cols as u32);
            args.arg(&xv).arg(&mut y).arg(&r32).arg(&c32);
            let cfg = tile_grid(b, rows, cols);
            unsafe { args.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from((b, cols, rows))))
        }
    }

    custom_op!(CustomOp1 for Transpose, "fused-transpose", x xl);

    // ---- 2x nearest upsampling into channels-last -------------------------------------------

    struct Upsample2xTokens {
        height: usize,
        width: usize,
    }

    impl Upsample2xTokens {
        fn run<T: CudaDType + DeviceRepr>(&self, (x, xl): (&CudaStorage, &Layout)) -> Result<(CudaStorage, Shape)> {
            let dev = x.device().clone();
            let (b, c, pixels) = xl.shape().dims3()?;
            let xv = contiguous_slice::<T>(x, xl)?;
            let mut y = unsafe { dev.alloc::<T>(b * c * pixels * 4) }?;
            let func =
                dev.get_or_load_custom_func(&format!("upsample2x_tokens_{}", suffix(x.dtype())?), MODULE, PTX)?;
            let mut args = func.builder();
            let (r32, c32, w32) = (c as u32, pixels as u32, self.width as u32);
            args.arg(&xv).arg(&mut y).arg(&r32).arg(&c32).arg(&w32);
            unsafe { args.launch(tile_grid(b, c, pixels)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from((b, 2 * self.height, 2 * self.width, c))))
        }
    }

    custom_op!(CustomOp1 for Upsample2xTokens, "fused-upsample2x-tokens", x xl);

    pub fn upsample2x_tokens(x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        x.contiguous()?.reshape((b, c, h * w))?.apply_op1_no_bwd(&Upsample2xTokens { height: h, width: w })
    }

    pub fn transpose(x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(&Transpose)
    }

    // ---- GroupNorm of a channels-last convolution's tail ---------------------------------------

    /// Inputs: the convolution's raw output [b, pixels, c], its bias [c], the per-sample values
    /// (any tensor without them); the norm's weight and bias travel in the op.
    struct GroupNormOfConvTail {
        weight: Tensor,
        bias: Tensor,
        groups: u32,
        eps: f32,
        silu: bool,
        /// Elements between samples' per-sample rows (0: one row for all), None: no per-sample values.
        per_sample_stride: Option<u32>,
    }

    impl GroupNormOfConvTail {
        fn run(
            &self,
            (y, yl): (&CudaStorage, &Layout),
            (cb, cbl): (&CudaStorage, &Layout),
            (extra, el): (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            let dev = y.device().clone();
            let (n, pixels, c) = yl.shape().dims3()?;
            let groups = self.groups as usize;
            let (yv, cbv) = (contiguous_slice::<f16>(y, yl)?, contiguous_slice::<f16>(cb, cbl)?);
            let ev = match self.per_sample_stride {
                Some(_) => extra.as_cuda_slice::<f16>()?.slice(el.start_offset()..),
                None => contiguous_slice::<f16>(extra, el)?,
            };
            let (wg, wl) = self.weight.storage_and_layout();
            let (bg, bl) = self.bias.storage_and_layout();
            let (candle_core::Storage::Cuda(ws), candle_core::Storage::Cuda(bs)) = (&*wg, &*bg) else {
                bail!("group norm of a convolution's tail: the norm's weights are not on the GPU")
            };
            let (wv, bv) = (contiguous_slice::<f16>(ws, &wl)?, contiguous_slice::<f16>(bs, &bl)?);
            let stride = self.per_sample_stride.unwrap_or(0);
            let block_c = super::block_channels(c, groups);
            let block_pairs = block_c / 2;
            let lanes = usize::max(1, 512 / block_pairs);
            let threads = (block_pairs * lanes) as u32;
            let channel_blocks = (c / block_c) as u32;
            // Pass 1: 32 chunks a sample (what each pass-2 block sums), unless that is more than 16
            // passes of lanes a block (the VAE's large images): then a finalize launch of its own.
            let stats_chunk = pixels.div_ceil(32).clamp(lanes, 16 * lanes);
            let stats_chunks = pixels.div_ceil(stats_chunk);
            let mut partial = unsafe { dev.alloc::<f32>(n * groups * stats_chunks * 2) }?;
            let mut out = unsafe { dev.alloc::<f16>(n * pixels * c) }?;
            let pointers =
                [ptr(&dev, &yv), ptr(&dev, &cbv), ptr(&dev, &ev), ptr(&dev, &wv), ptr(&dev, &bv), ptr(&dev, &out)];
            if !aligned(&pointers, 16) || stride % 8 != 0 || block_c % 8 != 0 {
                bail!("group norm of a convolution's tail: tensors are not 16-byte aligned or groups not 8-channel blocks");
            }
            let (c32, pixels32, has_extra) = (c as u32, pixels as u32, self.per_sample_stride.is_some() as i32);
            let block_c32 = block_c as u32;
            let stats = dev.get_or_load_custom_func("group_norm_stats_nhwc_f16", MODULE, PTX)?;
            let mut args = stats.builder();
            let chunk32 = stats_chunk as u32;
            args.arg(&yv).arg(&cbv).arg(&ev).arg(&stride).arg(&has_extra).arg(&mut partial);
            args.arg(&c32).arg(&pixels32).arg(&chunk32).arg(&self.groups).arg(&block_c32);
            let cfg = LaunchConfig {
                grid_dim: (stats_chunks as u32, channel_blocks, n as u32),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: threads * 2 * 4,
            };
            unsafe { args.launch(cfg) }.w()?;
            let finalized = if stats_chunks > 32 {
                let rows = n * groups;
                let mut stats = unsafe { dev.alloc::<f32>(rows * 2) }?;
                let finalize = dev.get_or_load_custom_func("group_norm_finalize", MODULE, PTX)?;
                let mut args = finalize.builder();
                let (rows32, chunks32, per_row) = (rows as u32, stats_chunks as u32, (c / groups * pixels) as u32);
                args.arg(&partial).arg(&mut stats).arg(&rows32).arg(&chunks32).arg(&per_row).arg(&self.eps);
                let cfg = LaunchConfig {
                    grid_dim: (rows.div_ceil(8) as u32, 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                unsafe { args.launch(cfg) }.w()?;
                Some(stats)
            } else {
                None
            };
            let (partial, stats_chunks) = match &finalized {
                Some(stats) => (stats, 0),
                None => (&partial, stats_chunks),
            };
            // Pass 2: a thread 8 channels, 256 threads a block, 1 to 8 passes of lanes: enough
            // blocks for two an SM of a large GPU where the image is small, long ones where it is large.
            let lanes = usize::max(1, 256 / (block_c / 8));
            let threads = ((block_c / 8) * lanes) as u32;
            let chunks_wanted = 264usize.div_ceil(n * channel_blocks as usize);
            let apply_chunk = pixels.div_ceil(chunks_wanted).next_multiple_of(lanes).clamp(lanes, 8 * lanes);
            let apply = dev.get_or_load_custom_func("group_norm_apply_nhwc_f16", MODULE, PTX)?;
            let mut args = apply.builder();
            let (apply32, stats_chunks32, silu) = (apply_chunk as u32, stats_chunks as u32, self.silu as i32);
            args.arg(&yv).arg(&cbv).arg(&ev).arg(&stride).arg(&has_extra).arg(partial);
            args.arg(&wv).arg(&bv).arg(&mut out);
            args.arg(&c32).arg(&pixels32).arg(&apply32).arg(&self.groups).arg(&block_c32).arg(&stats_chunks32);
            args.arg(&self.eps).arg(&silu);
            let cfg = LaunchConfig {
                grid_dim: (pixels.div_ceil(apply_chunk) as u32, channel_blocks, n as u32),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            unsafe { args.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((n, pixels, c))))
        }
    }

    crate::cuda_op::cuda_only_op!(CustomOp3 for GroupNormOfConvTail, "fused-group-norm-of-conv-tail", run, y yl, b bl, e el);

    #[allow(clippy::too_many_arguments)]
    pub fn group_norm_of_conv_tail(
        y: &Tensor,
        conv_bias: &Tensor,
        per_sample: Option<&Tensor>,
        weight: &Tensor,
        bias: &Tensor,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> Result<Tensor> {
        let (n, p, q, c) = y.dims4()?;
        let tokens = y.reshape((n, p * q, c))?.contiguous()?;
        let (extra, per_sample_stride) = match per_sample {
            Some(t) => {
                // The kernels read 16-byte vectors of a row.
                let (t, stride) = per_sample_rows(t, n, c, 8, "group norm of a convolution's tail")?;
                (t, Some(stride))
            }
            None => (conv_bias.clone(), None),
        };
        let op = GroupNormOfConvTail {
            weight: weight.contiguous()?,
            bias: bias.contiguous()?,
            groups: groups as u32,
            eps: eps as f32,
            silu,
            per_sample_stride,
        };
        tokens.apply_op3_no_bwd(&conv_bias.contiguous()?, &extra, &op)
    }

    /// Per-sample values `t` [samples or 1, channels] (a resnet's time embedding) as a kernel
    /// reads them: row `i` at `i * stride` (stride 0: one row for every sample). Rows with dense
    /// channels whose stride is a multiple of `row_align` elements are read where they are (a view
    /// of a wider matrix too); others are copied first.
    fn per_sample_rows(
        t: &Tensor,
        samples: usize,
        channels: usize,
        row_align: usize,
        what: &str,
    ) -> Result<(Tensor, u32)> {
        let (rows, cols) = t.dims2()?;
        if cols != channels || (rows != samples && rows != 1) {
            bail!("{what}: per-sample values {:?} for {samples} samples of {channels} channels", t.dims());
        }
        let in_place = t.stride()[1] == 1 && (rows == 1 || t.stride()[0] % row_align == 0);
        let t = if in_place { t.clone() } else { t.contiguous()? };
        let stride = if rows == 1 { 0 } else { t.stride()[0] };
        if stride > u32::MAX as usize {
            bail!("{what}: per-sample row stride {stride} is too large");
        }
        Ok((t, stride as u32))
    }

    // ---- a channels-last convolution's tail -------------------------------------------------

    /// What the tail adds after the bias (the kernel's `extra_kind`).
    #[derive(Clone, Copy)]
    enum Extra {
        Nothing = 0,
        /// [b or 1, cols]: one value per sample and channel.
        PerSample = 1,
        /// [b, cols, rows]: a residual, NCHW.
        Residual = 2,
    }

    /// Inputs: the convolution's output [b, rows, cols], the bias [cols], the extra tensor (any
    /// tensor when there is `Extra::Nothing`).
    struct ConvEpilogue {
        extra: Extra,
        per_sample_stride: u32,
    }

    impl ConvEpilogue {
        fn run<T: CudaDType + DeviceRepr>(
            &self,
            (x, xl): (&CudaStorage, &Layout),
            (bias, bl): (&CudaStorage, &Layout),
            (extra, el): (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            let dev = x.device().clone();
            let (b, rows, cols) = xl.shape().dims3()?;
            let expected = match self.extra {
                Extra::Nothing => el.shape().elem_count(),
                Extra::PerSample => {
                    if self.per_sample_stride == 0 {
                        cols
                    } else {
                        b * cols
                    }
                }
                Extra::Residual => b * rows * cols,
            };
            if bl.shape().elem_count() != cols || el.shape().elem_count() != expected {
                bail!("conv epilogue: bias or extra values do not match [{b}, {rows}, {cols}]");
            }
            if let Extra::PerSample = self.extra {
                // The kernel reads extra[sample * per_sample_stride + channel]: the view's own layout.
                let (dims, stride) = (el.shape().dims(), el.stride());
                let one_row = self.per_sample_stride == 0 && dims.first() == Some(&1);
                let rows_match = dims.first() == Some(&b) && stride.first() == Some(&(self.per_sample_stride as usize));
                if dims.len() != 2 || dims[1] != cols || stride[1] != 1 || !(one_row || rows_match) {
                    bail!("conv epilogue: per-sample values of layout {dims:?} / {stride:?} for [{b}, {cols}]");
                }
            }
            let (xv, bv) = (contiguous_slice::<T>(x, xl)?, contiguous_slice::<T>(bias, bl)?);
            // Per-sample values may be rows of a wider matrix (the UNet's stacked time
            // projections): the kernel steps `per_sample_stride` between samples.
            let ev = match self.extra {
                Extra::PerSample => extra.as_cuda_slice::<T>()?.slice(el.start_offset()..),
                _ => contiguous_slice::<T>(extra, el)?,
            };
            let mut y = unsafe { dev.alloc::<T>(b * rows * cols) }?;
            let sfx = suffix(x.dtype())?;
            let pairs = pairs_fit(sfx, rows, cols, &[ptr(&dev, &xv), ptr(&dev, &bv), ptr(&dev, &ev), ptr(&dev, &y)]);
            let name = if pairs { "conv_epilogue_pairs_f16".to_string() } else { format!("conv_epilogue_{sfx}") };
            let func = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
            let mut args = func.builder();
            let (r32, c32, kind) = (rows as u32, cols as u32, self.extra as i32);
            args.arg(&xv).arg(&bv).arg(&ev).arg(&mut y);
            args.arg(&r32).arg(&c32).arg(&self.per_sample_stride).arg(&kind);
            let cfg = if pairs { tile_grid_64(b, rows, cols) } else { tile_grid(b, rows, cols) };
            unsafe { args.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from((b, cols, rows))))
        }
    }

    custom_op!(CustomOp3 for ConvEpilogue, "fused-conv-epilogue", x xl, a al, b bl);

    pub fn conv_epilogue(
        y: &Tensor,
        bias: &Tensor,
        per_sample: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, p, q, k) = y.dims4()?;
        let tokens = y.reshape((b, p * q, k))?.contiguous()?;
        let run = |extra: &Tensor, kind: Extra, per_sample_stride: u32| {
            let op = ConvEpilogue { extra: kind, per_sample_stride };
            tokens.apply_op3_no_bwd(&bias.contiguous()?, extra, &op)?.reshape((b, k, p, q))
        };
        let with_per_sample = |t: &Tensor| {
            let (t, stride) = per_sample_rows(t, b, k, 1, "conv epilogue")?;
            run(&t, Extra::PerSample, stride)
        };
        match (per_sample, residual) {
            (None, None) => run(&bias.contiguous()?, Extra::Nothing, 0),
            (Some(t), None) => with_per_sample(t),
            (None, Some(r)) => run(&r.contiguous()?, Extra::Residual, 0),
            // Not in SD's blocks: the kernel takes one extra input, candle adds the residual.
            (Some(t), Some(r)) => r + with_per_sample(t)?,
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    #[allow(clippy::too_many_arguments)]
    pub fn group_norm_of_conv_tail(
        _: &Tensor,
        _: &Tensor,
        _: Option<&Tensor>,
        _: &Tensor,
        _: &Tensor,
        _: usize,
        _: f64,
        _: bool,
    ) -> Result<Tensor> {
        bail!("fused kernels need the CUDA build")
    }
    pub fn transpose(_: &Tensor) -> Result<Tensor> {
        bail!("fused kernels need the CUDA build")
    }
    pub fn upsample2x_tokens(_: &Tensor) -> Result<Tensor> {
        bail!("fused kernels need the CUDA build")
    }
    pub fn conv_epilogue(_: &Tensor, _: &Tensor, _: Option<&Tensor>, _: Option<&Tensor>) -> Result<Tensor> {
        bail!("fused kernels need the CUDA build")
    }
    use candle_core::{bail, Result, Tensor};

    pub fn bias_add(_: &Tensor, _: &Tensor, _: usize) -> Result<Tensor> {
        bail!("fused kernels need the CUDA build")
    }
    pub fn bias_add_residual(_: &Tensor, _: &Tensor, _: usize, _: &Tensor) -> Result<Tensor> {
        bail!("fused kernels need the CUDA build")
    }
    pub fn group_norm(_: &Tensor, _: &Tensor, _: &Tensor, _: usize, _: f64, _: bool, _: bool) -> Result<Tensor> {
        bail!("fused kernels need the CUDA build")
    }
    pub fn layer_norm(_: &Tensor, _: &Tensor, _: &Tensor, _: f64) -> Result<Tensor> {
        bail!("fused kernels need the CUDA build")
    }
    pub fn geglu(_: &Tensor, _: Option<&Tensor>) -> Result<Tensor> {
        bail!("fused kernels need the CUDA build")
    }
    pub fn cat_dim1(_: &Tensor, _: &Tensor) -> Result<Tensor> {
        bail!("fused kernels need the CUDA build")
    }
}
