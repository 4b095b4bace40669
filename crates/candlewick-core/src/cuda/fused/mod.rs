//! Our fused CUDA kernels (src/cuda/kernels/*.cu) as candle custom ops: one kernel where candle
//! runs several, and no per-element index arithmetic for broadcasts and permutes. By op family:
//! `norm` (LayerNorm, GroupNorm + SiLU, NCHW or channels-last), `layout` (transposes, 2x
//! upsampling into channels-last, the skip concatenation), `conv_tail` (a channels-last
//! convolution's tail, alone or into the GroupNorm after it) and `elementwise` (bias adds,
//! GEGLU), `fp8` (FP8 quantization); `launch` holds what they share. Those modules exist in CUDA builds only.
//!
//! The functions here are every build's entry points and their guards: each returns None when
//! its kernel cannot run here (a CPU tensor, a build without CUDA, a dtype other than f16/f32, a
//! shape or alignment the kernel does not take) and the caller composes candle's ops instead;
//! the CPU path and these kernels compute the same function (checked against diffusers on the
//! GPU machine: bench/gpu/parity.mjs).

use candle_core::{Result, Tensor};

use crate::cuda::features::built;

#[cfg(feature = "cuda")]
mod conv_tail;
#[cfg(feature = "cuda")]
mod elementwise;
#[cfg(feature = "cuda")]
mod fp8;
#[cfg(feature = "cuda")]
mod launch;
#[cfg(feature = "cuda")]
mod layout;
#[cfg(feature = "cuda")]
mod norm;

// ---- Elementwise (`elementwise`) ----------------------------------------------------------------

/// `x + bias` broadcast along dim 1 of `x` ([n, channels, ...]) or, with `channel_dim` the
/// last dim, along the last dim ([..., channels]).
pub fn bias_add(x: &Tensor, bias: &Tensor, channel_dim: usize) -> Result<Option<Tensor>> {
    if !usable(x) || bias.dtype() != x.dtype() {
        return Ok(None);
    }
    built!("cuda", elementwise::bias_add(x, bias, channel_dim))
}

/// `residual + (x + bias)`, the bias broadcast as in [`bias_add`]; `residual` has `x`'s shape.
pub fn bias_add_residual(x: &Tensor, bias: &Tensor, channel_dim: usize, residual: &Tensor) -> Result<Option<Tensor>> {
    if !usable(x) || bias.dtype() != x.dtype() || residual.dtype() != x.dtype() || residual.dims() != x.dims() {
        return Ok(None);
    }
    built!("cuda", elementwise::bias_add_residual(x, bias, channel_dim, residual))
}

/// diffusers' GEGLU on the projection's output `h` [..., 2n]: h[..., :n] * gelu(h[..., n:]),
/// the projection's `bias` [2n] (when given) added first, in the same pass.
pub fn geglu(h: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !usable(h) || bias.is_some_and(|b| b.dtype() != h.dtype()) {
        return Ok(None);
    }
    built!("cuda", elementwise::geglu(h, bias))
}

/// [`geglu`] written in e4m3 for an FP8 layer (`crate::cuda::fp8::packed::Packed`), the quantizer's first
/// pass folded into GEGLU's kernel; None where its kernel does not apply (f16 on CUDA, the
/// projection's width a multiple of 16, `h` and `bias` at 16-byte-aligned starts).
pub fn geglu_fp8(h: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    let f16 = candle_core::DType::F16;
    let last = h.dims().last().copied().unwrap_or(0);
    let starts_aligned = |t: &Tensor| !t.is_contiguous() || t.layout().start_offset().is_multiple_of(8);
    if !h.device().is_cuda()
        || h.dtype() != f16
        || bias.is_some_and(|b| b.dtype() != f16 || b.dims() != [last] || !starts_aligned(b))
        || last == 0
        || !last.is_multiple_of(16)
        || h.elem_count() / 16 >= u32::MAX as usize
        || !starts_aligned(h)
    {
        return Ok(None);
    }
    built!("cuda", fp8::geglu_quantize(h, bias))
}

/// FP8 quantization (`fp8`): `x` (f16 on CUDA) as the packed u8 tensor `crate::cuda::fp8::packed::Packed`
/// describes; `crate::cuda::fp8` checks its inputs.
#[cfg(feature = "cuda")]
pub fn fp8_quantize(x: &Tensor) -> Result<Tensor> {
    fp8::quantize(x)
}

// ---- Norms (`norm`) -----------------------------------------------------------------------------

/// LayerNorm over the last dim of `x`, with per-feature `weight` and `bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if !usable(x) || weight.dtype() != x.dtype() || bias.dtype() != x.dtype() || x.rank() == 0 {
        return Ok(None);
    }
    let cols = x.dim(x.rank() - 1)?;
    if cols == 0 || x.elem_count() / cols > u32::MAX as usize {
        return Ok(None);
    }
    built!("cuda", norm::layer_norm(x, weight, bias, eps))
}

/// The longest row the e4m3 LayerNorm kernels take (8 values in each of a warp's lanes' 8 chunks).
pub const LAYER_NORM_FP8_MAX_COLS: usize = 2048;

/// LayerNorm over the last dim of `x` written as e4m3 for an FP8 product (`crate::cuda::fp8`'s
/// packed layout), scaled by the static `bound / 448`: f16 rows a multiple of 8 long, at most
/// 2,048, starting 16-byte aligned; else None (the caller takes the f16 LayerNorm).
pub fn layer_norm_fp8(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64, bound: f32) -> Result<Option<Tensor>> {
    let f16 = candle_core::DType::F16;
    if !x.device().is_cuda() || (x.dtype(), weight.dtype(), bias.dtype()) != (f16, f16, f16) || x.rank() == 0 {
        return Ok(None);
    }
    let cols = x.dim(x.rank() - 1)?;
    let aligned = [x, weight, bias].iter().all(|t| t.layout().start_offset().is_multiple_of(8));
    if cols == 0
        || !cols.is_multiple_of(8)
        || cols > LAYER_NORM_FP8_MAX_COLS
        || !aligned
        || x.elem_count() / cols > u32::MAX as usize
    {
        return Ok(None);
    }
    if !(bound.is_finite() && bound > 0.0) {
        return Ok(None);
    }
    built!("cuda", norm::layer_norm_e4m3(x, weight, bias, eps, bound))
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
    built!("cuda", norm::group_norm(x, weight, bias, groups, eps, silu, false))
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
    built!("cuda", norm::group_norm(x, weight, bias, groups, eps, silu, true))
}

// ---- Layout (`layout`) --------------------------------------------------------------------------

/// The last two dims of a rank-3 `x` swapped, contiguous: [b, m, n] -> [b, n, m].
pub fn transpose(x: &Tensor) -> Result<Option<Tensor>> {
    if !usable(x) || x.rank() != 3 {
        return Ok(None);
    }
    let (b, rows, cols) = x.dims3()?;
    if !tiles_fit(b, rows, cols) {
        return Ok(None);
    }
    built!("cuda", layout::transpose(x))
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
    built!("cuda", layout::upsample2x_tokens(x))
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
        (t.elem_count() / n * size).is_multiple_of(16)
            && (!t.is_contiguous() || (t.layout().start_offset() * size).is_multiple_of(16))
    };
    if !whole_vectors(a) || !whole_vectors(b) || (a.elem_count() + b.elem_count()) * size / 16 > u32::MAX as usize {
        return Ok(None);
    }
    built!("cuda", layout::cat_dim1(a, b))
}

// ---- A channels-last convolution's tail (`conv_tail`) -------------------------------------------

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
    built!("cuda", conv_tail::conv_epilogue(y, bias, per_sample, residual))
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
    // Every tensor starting on 8 halves (candle's allocations are 256-byte aligned).
    let fits = conv_tail_norm_fits(n, c, groups);
    let sizes = conv_bias.dims() == [c] && weight.dims() == [c] && bias.dims() == [c];
    let aligned = [Some(y), Some(conv_bias), per_sample, Some(weight), Some(bias)]
        .into_iter()
        .flatten()
        .all(|t| t.layout().start_offset() % 8 == 0);
    if !fits || !sizes || !aligned || n * p * q * c > u32::MAX as usize {
        return Ok(None);
    }
    built!("cuda", conv_tail::group_norm_of_conv_tail(y, conv_bias, per_sample, weight, bias, groups, eps, silu))
}

/// Whether the GroupNorm-of-conv-tail kernels take `n` samples of `c` channels in `groups`: the
/// statistics pass reads channel pairs, so a group must have an even width (a pair must not
/// straddle two groups: with one channel a group, as in tiny test UNets of 32 channels in 32
/// groups, its pairs-per-group would be 0 and it wrote out of bounds), and the apply pass reads
/// blocks of whole groups in 8-channel vectors.
fn conv_tail_norm_fits(n: usize, c: usize, groups: usize) -> bool {
    groups > 0
        && c.is_multiple_of(groups)
        && (c / groups).is_multiple_of(2)
        && block_channels(c, groups).is_multiple_of(8)
        && c / groups <= 512
        && n <= 65_535
}

/// Channels a block of the NHWC GroupNorm kernels covers: whole groups, as many as fit in
/// 64 channels (at least one group), a divisor of `groups` so that the blocks tile them.
fn block_channels(channels: usize, groups: usize) -> usize {
    let width = channels / groups;
    let mut per_block = 1;
    for k in 1..=groups {
        if groups.is_multiple_of(k) && k * width <= 64 {
            per_block = k;
        }
    }
    per_block * width
}

// ---- Shared guards ------------------------------------------------------------------------------

/// Whether a kernel over the 32x32 tiles of [batch, rows, cols] fits CUDA's grid (at most
/// 65,535 tiles high and deep; `launch::tile_grid`); beyond, callers compose candle's ops.
fn tiles_fit(batch: usize, rows: usize, cols: usize) -> bool {
    batch <= 65_535 && rows.div_ceil(32) <= 65_535 && cols <= u32::MAX as usize
}

fn usable(x: &Tensor) -> bool {
    cfg!(feature = "cuda")
        && x.device().is_cuda()
        && matches!(x.dtype(), candle_core::DType::F16 | candle_core::DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_tail_norm_takes_even_group_widths_in_8_channel_blocks() {
        // SD1.5's widths (320, 640, 1280 channels in 32 groups: 10, 20, 40 a group).
        assert!(conv_tail_norm_fits(2, 320, 32));
        assert!(conv_tail_norm_fits(16, 1280, 32));
        // 64 channels in 32 groups: 2 a group, 32 groups in a 64-channel block.
        assert!(conv_tail_norm_fits(2, 64, 32));
        // One channel a group (tiny-sd's first level): the pairs would straddle groups.
        assert!(!conv_tail_norm_fits(2, 32, 32));
        // An odd width, a group count that does not divide, no groups, too many samples.
        assert!(!conv_tail_norm_fits(2, 96, 32));
        assert!(!conv_tail_norm_fits(2, 100, 32));
        assert!(!conv_tail_norm_fits(2, 64, 0));
        assert!(!conv_tail_norm_fits(65_536, 320, 32));
    }
}
