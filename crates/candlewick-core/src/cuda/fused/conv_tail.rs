//! The tail of a channels-last convolution (src/cuda/kernels/conv_tail.cu): back to NCHW with
//! the bias, a time embedding and a shortcut added in one pass, or straight into the GroupNorm
//! that follows. Entry points and their guards: `super`.

use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{DeviceRepr, LaunchConfig};
use candle_core::cuda::{CudaDType, CudaStorage};
use candle_core::{bail, Layout, Result, Shape, Tensor};
use half::f16;

use super::launch::*;
use crate::cuda::op::{cuda_only_op, launch};

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
        let (xv, bv) = (view::<T>(x, xl)?, view::<T>(bias, bl)?);
        // Per-sample values may be rows of a wider matrix (the UNet's stacked time
        // projections): the kernel steps `per_sample_stride` between samples.
        let ev = match self.extra {
            Extra::PerSample => extra.as_cuda_slice::<T>()?.slice(el.start_offset()..),
            _ => view::<T>(extra, el)?,
        };
        let mut y = unsafe { dev.alloc::<T>(b * rows * cols) }?;
        let sfx = suffix(x.dtype())?;
        let pairs = pairs_fit(sfx, rows, cols, &[ptr(&dev, &xv), ptr(&dev, &bv), ptr(&dev, &ev), ptr(&dev, &y)]);
        let name = if pairs { "conv_epilogue_pairs_f16".to_string() } else { format!("conv_epilogue_{sfx}") };
        let (r32, c32, kind) = (rows as u32, cols as u32, self.extra as i32);
        let cfg = if pairs { tile_grid_64(b, rows, cols) } else { tile_grid(b, rows, cols) };
        launch!(dev, CONV_TAIL, &name, cfg, &xv, &bv, &ev, &mut y, &r32, &c32, &self.per_sample_stride, &kind)?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from((b, cols, rows))))
    }
}

cuda_only_op!(CustomOp3 for ConvEpilogue, "fused-conv-epilogue", run::<f16 | f32>, x xl, a al, b bl);

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
        let (yv, cbv) = (view::<f16>(y, yl)?, view::<f16>(cb, cbl)?);
        let ev = match self.per_sample_stride {
            Some(_) => extra.as_cuda_slice::<f16>()?.slice(el.start_offset()..),
            None => view::<f16>(extra, el)?,
        };
        let (wg, wl) = self.weight.storage_and_layout();
        let (bg, bl) = self.bias.storage_and_layout();
        let (candle_core::Storage::Cuda(ws), candle_core::Storage::Cuda(bs)) = (&*wg, &*bg) else {
            bail!("group norm of a convolution's tail: the norm's weights are not on the GPU")
        };
        let (wv, bv) = (view::<f16>(ws, wl)?, view::<f16>(bs, bl)?);
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
        if !aligned(&pointers, 16) || !stride.is_multiple_of(8) || !block_c.is_multiple_of(8) {
            bail!("group norm of a convolution's tail: tensors are not 16-byte aligned or groups not 8-channel blocks");
        }
        let (c32, pixels32, has_extra) = (c as u32, pixels as u32, self.per_sample_stride.is_some() as i32);
        let block_c32 = block_c as u32;
        let chunk32 = stats_chunk as u32;
        let cfg = LaunchConfig {
            grid_dim: (stats_chunks as u32, channel_blocks, n as u32),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: threads * 2 * 4,
        };
        launch!(
            dev,
            CONV_TAIL,
            "group_norm_stats_nhwc_f16",
            cfg,
            &yv,
            &cbv,
            &ev,
            &stride,
            &has_extra,
            &mut partial,
            &c32,
            &pixels32,
            &chunk32,
            &self.groups,
            &block_c32
        )?;
        let finalized = if stats_chunks > 32 {
            let rows = n * groups;
            let mut stats = unsafe { dev.alloc::<f32>(rows * 2) }?;
            let (rows32, chunks32, per_row) = (rows as u32, stats_chunks as u32, (c / groups * pixels) as u32);
            let cfg =
                LaunchConfig { grid_dim: (rows.div_ceil(8) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // The finalize kernel is GroupNorm's own (kernels/norm.cu), shared with `norm::GroupNorm`.
            launch!(
                dev,
                NORM,
                "group_norm_finalize",
                cfg,
                &partial,
                &mut stats,
                &rows32,
                &chunks32,
                &per_row,
                &self.eps
            )?;
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
        let (apply32, stats_chunks32, silu) = (apply_chunk as u32, stats_chunks as u32, self.silu as i32);
        let cfg = LaunchConfig {
            grid_dim: (pixels.div_ceil(apply_chunk) as u32, channel_blocks, n as u32),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            dev,
            CONV_TAIL,
            "group_norm_apply_nhwc_f16",
            cfg,
            &yv,
            &cbv,
            &ev,
            &stride,
            &has_extra,
            partial,
            &wv,
            &bv,
            &mut out,
            &c32,
            &pixels32,
            &apply32,
            &self.groups,
            &block_c32,
            &stats_chunks32,
            &self.eps,
            &silu
        )?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((n, pixels, c))))
    }
}

cuda_only_op!(CustomOp3 for GroupNormOfConvTail, "fused-group-norm-of-conv-tail", run, y yl, b bl, e el);

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
fn per_sample_rows(t: &Tensor, samples: usize, channels: usize, row_align: usize, what: &str) -> Result<(Tensor, u32)> {
    let (rows, cols) = t.dims2()?;
    if cols != channels || (rows != samples && rows != 1) {
        bail!("{what}: per-sample values {:?} for {samples} samples of {channels} channels", t.dims());
    }
    let in_place = t.stride()[1] == 1 && (rows == 1 || t.stride()[0].is_multiple_of(row_align));
    let t = if in_place { t.clone() } else { t.contiguous()? };
    let stride = if rows == 1 { 0 } else { t.stride()[0] };
    if stride > u32::MAX as usize {
        bail!("{what}: per-sample row stride {stride} is too large");
    }
    Ok((t, stride as u32))
}
