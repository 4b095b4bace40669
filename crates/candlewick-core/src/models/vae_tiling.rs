//! The VAE decode in tiles and one image at a time, as diffusers' `AutoencoderKL.enable_tiling()`
//! and `enable_slicing()` do it: latents cut into overlapping tiles, each decoded alone, the
//! overlaps blended linearly (above, then left; in place, so that later tiles blend with their
//! neighbours' blended edges, as diffusers' `blend_v` / `blend_h` leave them). Peak memory then
//! follows the tile, not the image.

use candle_core::{Result, Tensor};

use super::vae::{AutoencoderKL, AutoencoderKLConfig};

/// diffusers' tile settings (`tile_latent_min_size`, `tile_sample_min_size`, `tile_overlap_factor`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VaeTiling {
    /// Latent cells per tile side.
    pub tile_latent_min_size: usize,
    /// Pixels per decoded tile side.
    pub tile_sample_min_size: usize,
    /// The share of a tile that overlaps its neighbour.
    pub tile_overlap_factor: f64,
}

impl VaeTiling {
    /// diffusers' defaults for a VAE: tiles of its `sample_size` pixels (512 for SD1.5: 64x64
    /// latents), a quarter overlapping.
    pub fn for_vae(sample_size: usize, scale_factor: usize) -> Self {
        Self {
            tile_latent_min_size: sample_size / scale_factor.max(1),
            tile_sample_min_size: sample_size,
            tile_overlap_factor: 0.25,
        }
    }
}

/// The most elements one decoder activation may hold for an untiled decode: the GPU kernels
/// (candle's and cuDNN's) index tensors with 32-bit integers, and the H200 refused SD1.5's untiled
/// 4096x4096 decode (256 channels at full size: 2^32 elements) with CUDA_ERROR_INVALID_VALUE.
pub const MAX_DECODE_ELEMENTS: usize = i32::MAX as usize;

/// One image's largest decoder activation (in elements) from which a batch decodes one image at a
/// time unasked: such an image keeps the GPU busy alone, so decoding the batch whole only holds
/// every image's activations at once (SDXL's VAE at 1024x1024: 2^28 elements, 1 GiB in f32, each;
/// its batch of 4 peaked at 12.07 GiB sliced against 23.38 whole, and decoded in 287 ms against 304
/// on an H200, bench/results/2026-12-04-h200-r9-*). SD1.5's 512x512 (2^26) stays whole.
pub const SLICE_FROM_ELEMENTS: usize = 1 << 27;

impl AutoencoderKLConfig {
    /// Whether an untiled decode of `batch` latents of `height` x `width` cells goes one image at a
    /// time: when `asked` (diffusers' `enable_vae_slicing`), when the whole batch would pass
    /// [`MAX_DECODE_ELEMENTS`], or, with `auto`, when one image reaches [`SLICE_FROM_ELEMENTS`].
    /// The images are the whole batch's to within cuDNN's choice of algorithm for the smaller batch
    /// (SDXL's f32 decode at 1024x1024 on an H200: 1.2% of the bytes one level apart, 67.4 dB).
    pub fn decodes_one_at_a_time(&self, batch: usize, height: usize, width: usize, asked: bool, auto: bool) -> bool {
        let largest = |n: usize| self.largest_decoder_activation(n, height, width);
        asked || largest(batch) > MAX_DECODE_ELEMENTS || (auto && batch > 1 && largest(1) >= SLICE_FROM_ELEMENTS)
    }

    /// Elements of the decoder's largest activation for `batch` latents of `height` x `width`
    /// cells: at level k (k upsamplings in), the up block's own channels and, from k = 1, the
    /// upsampled input it takes from the level before (SD1.5's 256 channels at full size).
    pub fn largest_decoder_activation(&self, batch: usize, height: usize, width: usize) -> usize {
        let ch = &self.block_out_channels;
        let n = ch.len();
        (0..n)
            .map(|k| {
                let channels = if k == 0 { ch[n - 1] } else { ch[n - 1 - k].max(ch[n - k]) };
                let side = 1usize.checked_shl(k as u32).unwrap_or(usize::MAX);
                [batch, channels, height, side, width, side].iter().fold(1usize, |a, &b| a.saturating_mul(b))
            })
            .max()
            .unwrap_or(0)
    }
}

impl AutoencoderKL {
    /// diffusers' `decode` with slicing (`sliced`: one image at a time) and tiling (`tiling`:
    /// latents larger than a tile go through [`AutoencoderKL::tiled_decode`]).
    pub fn decode_with(&self, z: &Tensor, tiling: Option<&VaeTiling>, sliced: bool) -> Result<Tensor> {
        let one = |z: &Tensor| -> Result<Tensor> {
            let (_, _, h, w) = z.dims4()?;
            match tiling {
                Some(t) if h > t.tile_latent_min_size || w > t.tile_latent_min_size => self.tiled_decode(z, t),
                _ => self.decode(z),
            }
        };
        let batch = z.dim(0)?;
        if sliced && batch > 1 {
            let images = (0..batch).map(|i| one(&z.narrow(0, i, 1)?)).collect::<Result<Vec<_>>>()?;
            return Tensor::cat(&images, 0);
        }
        one(z)
    }

    /// diffusers' `tiled_decode`: tiles of `tile_latent_min_size` every
    /// `tile_latent_min_size x (1 - overlap)` cells, blended over `tile_sample_min_size x overlap`
    /// pixels, each kept to `tile_sample_min_size - blend_extent` pixels a side.
    pub fn tiled_decode(&self, z: &Tensor, t: &VaeTiling) -> Result<Tensor> {
        let overlap_size = (t.tile_latent_min_size as f64 * (1.0 - t.tile_overlap_factor)) as usize;
        let blend_extent = (t.tile_sample_min_size as f64 * t.tile_overlap_factor) as usize;
        let row_limit = t.tile_sample_min_size - blend_extent;
        if overlap_size == 0 || row_limit == 0 {
            candle_core::bail!("VAE tiling: tiles of {} latent cells do not advance", t.tile_latent_min_size);
        }
        let (_, _, height, width) = z.dims4()?;
        let mut rows: Vec<Vec<Tensor>> = Vec::new();
        for i in (0..height).step_by(overlap_size) {
            let mut row = Vec::new();
            for j in (0..width).step_by(overlap_size) {
                let tile = z
                    .narrow(2, i, t.tile_latent_min_size.min(height - i))?
                    .narrow(3, j, t.tile_latent_min_size.min(width - j))?
                    .contiguous()?;
                row.push(self.decode(&tile)?);
            }
            rows.push(row);
        }
        let mut result_rows = Vec::with_capacity(rows.len());
        for i in 0..rows.len() {
            let mut result_row = Vec::with_capacity(rows[i].len());
            for j in 0..rows[i].len() {
                let mut tile = rows[i][j].clone();
                if i > 0 {
                    tile = blend(&rows[i - 1][j], &tile, blend_extent, 2)?;
                }
                if j > 0 {
                    tile = blend(&rows[i][j - 1], &tile, blend_extent, 3)?;
                }
                // diffusers blends in place: the blended tile is what its neighbours see.
                rows[i][j] = tile.clone();
                let (_, _, th, tw) = tile.dims4()?;
                result_row.push(tile.narrow(2, 0, row_limit.min(th))?.narrow(3, 0, row_limit.min(tw))?);
            }
            result_rows.push(Tensor::cat(&result_row, 3)?);
        }
        Tensor::cat(&result_rows, 2)
    }
}

/// diffusers' `blend_v` (`dim` 2) and `blend_h` (`dim` 3): the first `extent` rows (columns) of
/// `b` become a[-extent + y] x (1 - y / extent) + b[y] x (y / extent).
fn blend(a: &Tensor, b: &Tensor, extent: usize, dim: usize) -> Result<Tensor> {
    let extent = extent.min(a.dim(dim)?).min(b.dim(dim)?);
    if extent == 0 {
        return Ok(b.clone());
    }
    let weights: Vec<f32> = (0..extent).map(|y| (y as f64 / extent as f64) as f32).collect();
    let keep: Vec<f32> = (0..extent).map(|y| (1.0 - y as f64 / extent as f64) as f32).collect();
    let mut shape = [1usize; 4];
    shape[dim] = extent;
    let device = b.device();
    let w_b = Tensor::from_vec(weights, &shape[..], device)?.to_dtype(b.dtype())?;
    let w_a = Tensor::from_vec(keep, &shape[..], device)?.to_dtype(b.dtype())?;
    let a_end = a.narrow(dim, a.dim(dim)? - extent, extent)?;
    let b_start = b.narrow(dim, 0, extent)?;
    let blended = (a_end.broadcast_mul(&w_a)? + b_start.broadcast_mul(&w_b)?)?;
    let rest = b.narrow(dim, extent, b.dim(dim)? - extent)?;
    Tensor::cat(&[&blended, &rest], dim)
}
