//! Step 6 of a generation, diffusers' `decode_latents` / `vae.decode`: the latents to an image
//! tensor, with the VAE's own rules: `force_upcast` (SDXL's VAE in f32, its convolutions in TF32 as
//! PyTorch runs them), slicing and tiling (asked, or where the decode would not fit), and an f16
//! decode that overflowed redone in f32.

use candle_core::{DType, Tensor};

use super::components::Components;
use super::denoise::all_finite;
use super::options::GenerateOptions;
use super::options::PipelineInfo;
use crate::error::{Error, Result};
use crate::models::vae::AutoencoderKL;
use crate::models::vae_tiling::{VaeTiling, MAX_DECODE_ELEMENTS};

/// Latents to an image tensor in [0, 1], NCHW, f32: in tiles and one image at a time when asked,
/// one at a time also for a batch of large images or one past the kernels' index limit, in tiles
/// when the whole decode runs out of memory. An f16 decode that overflows (NaN or infinity: a
/// black image in diffusers) is redone with an f32 copy of the VAE, loaded on first need.
pub(super) fn decode_latents(
    c: &Components,
    info: &PipelineInfo,
    latents: &Tensor,
    options: &GenerateOptions,
    warnings: &mut Vec<String>,
) -> Result<Tensor> {
    let scaled = (latents / c.vae.config.scaling_factor)?;
    let tiling = VaeTiling::for_vae(c.vae.config.sample_size.first(), info.vae_scale_factor);
    let mut tiled = options.vae_tiling.then_some(&tiling);
    // One image at a time changes no arithmetic (at most cuDNN's choice of algorithm); tiles do, so
    // they are the last resort (with a warning).
    let (batch, _, h, w) = latents.dims4()?;
    let fits = |n: usize| c.vae.config.largest_decoder_activation(n, h, w) <= MAX_DECODE_ELEMENTS;
    let sliced = match tiled {
        Some(_) => options.vae_slicing,
        None => c.vae.config.decodes_one_at_a_time(batch, h, w, options.vae_slicing, auto_slicing()),
    };
    if tiled.is_none() && !fits(1) {
        let (vsf, side) = (info.vae_scale_factor, tiling.tile_sample_min_size);
        warnings.push(format!(
            "the VAE decode of {}x{} has activations of more than 2^31 elements, more than the GPU kernels can \
             index; it was decoded in tiles of {side}x{side} (ask for VAE tiling to silence this)",
            w * vsf,
            h * vsf
        ));
        tiled = Some(&tiling);
    }
    let decode = |vae: &AutoencoderKL, dtype: DType, tiled: Option<&VaeTiling>| -> candle_core::Result<Tensor> {
        vae.decode_with(&scaled.to_dtype(dtype)?, tiled, sliced)?.to_dtype(DType::F32)
    };
    let upcast = c.vae_needs_upcasting();
    let (vae, dtype) = (&c.vae.model, c.vae_dtype());
    // The upcast decode's convolutions in TF32, as PyTorch runs diffusers' (its default): in full
    // f32 they took 552 ms of SDXL's 769 ms call on an H200 (bench/NOTES.md, 2026-12-03).
    // CANDLEWICK_VAE_UPCAST_TF32=0 keeps them in full f32 (the A/B of bench/gpu/families.sh).
    let decode = |vae: &AutoencoderKL, dtype: DType, tiled: Option<&VaeTiling>| match upcast && upcast_tf32() {
        true => crate::cuda::cudnn::with_tf32_convolutions(|| decode(vae, dtype, tiled)),
        false => decode(vae, dtype, tiled),
    };
    let mut image = match decode(vae, dtype, tiled) {
        Err(e) if tiled.is_none() && crate::error::is_out_of_memory(&e) => {
            let (vsf, side) = (info.vae_scale_factor, tiling.tile_sample_min_size);
            warnings.push(format!(
                "the VAE decode of {}x{} ran out of memory on {}; it was decoded again in tiles of {side}x{side} \
                 (asking for VAE tiling skips the first try)",
                w * vsf,
                h * vsf,
                info.device
            ));
            tiled = Some(&tiling);
            decode(vae, dtype, tiled)?
        }
        other => other?,
    };
    if dtype != DType::F32 && !all_finite(&image)? {
        warnings.push(format!("the VAE overflowed in {}; the image was decoded again in f32", info.dtype));
        image = decode(c.vae_in_f32()?, DType::F32, tiled)?;
    }
    if !all_finite(&image)? {
        return Err(Error::NonFinite(
            "the VAE's decoded image is NaN or infinite (the latents are out of range)".into(),
        ));
    }
    Ok(((image / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
}

/// Whether a batch of large images decodes one image at a time unasked
/// (`AutoencoderKLConfig::decodes_one_at_a_time`; on unless `CANDLEWICK_VAE_AUTO_SLICING=0`, the
/// A/B of bench/gpu/round9.sh; read once).
fn auto_slicing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("CANDLEWICK_VAE_AUTO_SLICING").map_or(true, |v| v != "0"))
}

/// Whether the f32 decode under `force_upcast` may run its convolutions in TF32 (on unless
/// `CANDLEWICK_VAE_UPCAST_TF32=0`; read once).
fn upcast_tf32() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("CANDLEWICK_VAE_UPCAST_TF32").map_or(true, |v| v != "0"))
}
