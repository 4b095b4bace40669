//! The norm kernels (src/cuda/kernels/norm.cu): LayerNorm over the last dim and diffusers'
//! GroupNorm (+ SiLU), written NCHW or channels-last. Entry points and their guards: `super`.

use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, DeviceRepr, LaunchConfig};
use candle_core::cuda::{CudaDType, CudaStorage};
use candle_core::{bail, DType, Layout, Result, Shape, Tensor};

use half::f16;

use super::launch::*;
use crate::cuda::op::{cuda_only_op, launch};

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
        let (xv, wv, bv) = (view::<T>(x, xl)?, view::<T>(w, wl)?, view::<T>(b, bl)?);
        let mut y = unsafe { dev.alloc::<T>(rows * cols) }?;
        // f16 rows a multiple of 8 long, 16-byte aligned, too few for a warp a row to fill
        // half the GPU's warp slots (SD's 32x32 and lower levels at batch 2, CLIP): a block a
        // row (faster there, slower than a warp a row where rows are many: bench/NOTES.md's
        // LayerNorm timings per launch).
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
        let (r32, c32) = (rows as u32, cols as u32);
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
        launch!(dev, NORM, &name, cfg, &xv, &wv, &bv, &mut y, &r32, &c32, &self.eps)?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev), xl.shape().clone()))
    }
}

cuda_only_op!(CustomOp3 for LayerNorm, "fused-layer-norm", run::<f16 | f32>, x xl, a al, b bl);

pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let op = LayerNorm { eps: eps as f32 };
    x.contiguous()?.apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &op)
}

/// LayerNorm written straight as e4m3 (`layer_norm_e4m3_*_f16`) in the packed layout
/// `crate::cuda::fp8::packed::Packed` describes, with the static scale `bound / 448`.
struct LayerNormE4m3 {
    eps: f32,
    bound: f32,
}

/// The register chunks a lane holds (each 8 values) for rows of `cols`: the smallest kernel that
/// takes the row (SD's 320 to 1,280 channels); the last takes the longest rows the guard admits.
const E4M3_CHUNKS: [usize; 3] = [2, 4, 8];
const _: () = assert!(256 * E4M3_CHUNKS[2] == super::LAYER_NORM_FP8_MAX_COLS);

impl LayerNormE4m3 {
    fn run(
        &self,
        (x, xl): (&CudaStorage, &Layout),
        (w, wl): (&CudaStorage, &Layout),
        (b, bl): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        use crate::cuda::fp8::packed::Packed;
        let dev = x.device().clone();
        let dims = xl.shape().dims();
        let cols = dims[dims.len() - 1];
        let rows = xl.shape().elem_count() / cols;
        let Some(chunks) = E4M3_CHUNKS.into_iter().find(|&c| cols <= 256 * c) else {
            bail!("layer norm to e4m3: rows of {cols} are longer than {}", 256 * E4M3_CHUNKS[2]);
        };
        if !cols.is_multiple_of(8) || wl.shape().elem_count() != cols || bl.shape().elem_count() != cols {
            bail!("layer norm to e4m3: rows of {cols} (a multiple of 8) and weight and bias of as many values");
        }
        let (xv, wv, bv) = (view::<f16>(x, xl)?, view::<f16>(w, wl)?, view::<f16>(b, bl)?);
        if !aligned(&[ptr(&dev, &xv), ptr(&dev, &wv), ptr(&dev, &bv)], 16) {
            bail!("layer norm to e4m3: inputs at misaligned addresses (16-byte vectors of 8)");
        }
        let packed = Packed::of(rows * cols);
        let y = unsafe { dev.alloc::<u8>(packed.bytes) }?;
        let base = ptr(&dev, &y);
        let scale = base + packed.scale as u64;
        const ROWS_PER_BLOCK: usize = THREADS as usize / 32;
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(ROWS_PER_BLOCK) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let (r32, c32) = (rows as u32, cols as u32);
        let name = format!("layer_norm_e4m3_{chunks}_f16");
        launch!(dev, NORM, &name, cfg, &xv, &wv, &bv, &base, &r32, &c32, &self.eps, &self.bound, &scale)?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from(packed.bytes)))
    }
}

cuda_only_op!(CustomOp3 for LayerNormE4m3, "fused-layer-norm-e4m3", run, x xl, a al, b bl);

/// LayerNorm of `x` (f16, rows a multiple of 8 up to 2,048 long) quantized to e4m3 with the
/// static scale `bound / 448` (`bound` at least any normalized value's magnitude).
pub fn layer_norm_e4m3(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64, bound: f32) -> Result<Tensor> {
    let op = LayerNormE4m3 { eps: eps as f32, bound };
    x.contiguous()?.apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &op)
}

// ---- GroupNorm (+ SiLU) -----------------------------------------------------------------

/// Elements of one group that one block covers.
const GROUP_CHUNK: u32 = 4096;

/// The largest group (channels a group x pixels) that the one-kernel channels-last GroupNorm
/// takes: SD's 16x16 and 8x8 levels. A block a group is latency-bound: on an H100 it beats
/// the two passes there, matches them at 32x32 and is 2-3x slower at 64x64, where 64 blocks
/// leave half the GPU idle (bench/NOTES.md's one-kernel GroupNorm).
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
        let (xv, wv, bv) = (view::<T>(x, xl)?, view::<T>(w, wl)?, view::<T>(b, bl)?);
        let mut y = unsafe { dev.alloc::<T>(xl.shape().elem_count()) }?;
        if self.tokens
            && x.dtype() == DType::F16
            && self.single_pass_tokens(&dev, (&xv, &wv, &bv), &mut y, (n, c, inner))?
        {
            return Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from((n, inner, c))));
        }
        let mut partial = unsafe { dev.alloc::<f32>(rows * chunks * 2) }?;
        let stats_cfg =
            LaunchConfig { grid_dim: (chunks as u32, rows as u32, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        let sfx = suffix(x.dtype())?;
        let (per_row, chunk) = (per_row as u32, GROUP_CHUNK);

        // f16 rows of whole 16-byte vectors: the kernel with 16-byte loads.
        let vec8 = x.dtype() == DType::F16 && per_row % 8 == 0 && aligned(&[ptr(&dev, &xv)], 16);
        let stats_name = if vec8 { "group_norm_stats_vec8_f16".to_string() } else { format!("group_norm_stats_{sfx}") };
        launch!(dev, NORM, &stats_name, stats_cfg, &xv, &mut partial, &per_row, &chunk)?;
        if self.tokens {
            self.apply_tokens::<T>(&dev, sfx, (&xv, &wv, &bv), &partial, &mut y, (n, c, inner, chunks))?;
            return Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from((n, inner, c))));
        }

        let (chunks, inner, cpg, silu) = (chunks as u32, inner as u32, (c / groups) as u32, self.silu as i32);
        launch!(
            dev,
            NORM,
            &format!("group_norm_apply_{sfx}"),
            stats_cfg,
            &xv,
            &partial,
            &wv,
            &bv,
            &mut y,
            &per_row,
            &chunk,
            &chunks,
            &inner,
            &self.groups,
            &cpg,
            &self.eps,
            &silu
        )?;
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
        let shapes_fit =
            cpg.is_multiple_of(2) && pixels.is_multiple_of(8) && n <= 65_535 && cpg * pixels <= SINGLE_PASS_ELEMENTS;
        let pointers_fit = aligned(&[ptr(dev, xv)], 16) && aligned(&[ptr(dev, &*y)], 4);
        if !shapes_fit || !pointers_fit {
            return Ok(false);
        }
        let (c32, pixels32, cpg32, silu) = (c as u32, pixels as u32, cpg as u32, self.silu as i32);
        let shared_mem_bytes = (cpg * (pixels + 2) * 2) as u32; // within the 48 KiB any launch may have
        let cfg = LaunchConfig { grid_dim: (self.groups, n as u32, 1), block_dim: (512, 1, 1), shared_mem_bytes };
        launch!(
            dev,
            NORM,
            "group_norm_tokens_single_f16",
            cfg,
            xv,
            wv,
            bv,
            y,
            &c32,
            &pixels32,
            &cpg32,
            &self.eps,
            &silu
        )?;
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
            let (c32, pixels32, cpg32, silu) = (c as u32, pixels as u32, cpg as u32, self.silu as i32);
            let (chunks32, per_row) = (chunks as u32, (cpg * pixels) as u32);
            launch!(
                dev,
                NORM,
                "group_norm_apply_tokens_pairs_f16",
                tile_grid_64(n, c, pixels),
                xv,
                partial,
                wv,
                bv,
                y,
                &c32,
                &pixels32,
                &self.groups,
                &cpg32,
                &silu,
                &chunks32,
                &per_row,
                &self.eps
            )?;
            return Ok(());
        }
        let mut stats = unsafe { dev.alloc::<f32>(rows * 2) }?;
        let (rows32, chunks32, per_row) = (rows as u32, chunks as u32, (c / groups * pixels) as u32);
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(8) as u32, 1, 1), // a warp a row
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(dev, NORM, "group_norm_finalize", cfg, partial, &mut stats, &rows32, &chunks32, &per_row, &self.eps)?;

        let (c32, pixels32, cpg, silu) = (c as u32, pixels as u32, (c / groups) as u32, self.silu as i32);
        if pairs {
            // The pairs kernel without partials to finalize: `stats` holds the means and rstds.
            let (no_partials, zero) = (0u32, 0f32);
            let (name, cfg) = ("group_norm_apply_tokens_pairs_f16", tile_grid_64(n, c, pixels));
            launch!(
                dev,
                NORM,
                name,
                cfg,
                xv,
                &stats,
                wv,
                bv,
                y,
                &c32,
                &pixels32,
                &self.groups,
                &cpg,
                &silu,
                &no_partials,
                &no_partials,
                &zero
            )?;
        } else {
            let name = format!("group_norm_apply_tokens_{sfx}");
            launch!(
                dev,
                NORM,
                &name,
                tile_grid(n, c, pixels),
                xv,
                &stats,
                wv,
                bv,
                y,
                &c32,
                &pixels32,
                &self.groups,
                &cpg,
                &silu
            )?;
        }
        Ok(())
    }
}

cuda_only_op!(CustomOp3 for GroupNorm, "fused-group-norm", run::<f16 | f32>, x xl, a al, b bl);

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
    if dims.len() < 2 || groups == 0 || !dims[1].is_multiple_of(groups) {
        bail!("group norm: {groups} groups do not divide the channels of {dims:?}");
    }
    if weight.elem_count() != dims[1] || bias.elem_count() != dims[1] {
        bail!("group norm: weight and bias need {} values", dims[1]);
    }
    let op = GroupNorm { groups: groups as u32, eps: eps as f32, silu, tokens };
    x.contiguous()?.apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &op)
}
