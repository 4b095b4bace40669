//! Previews of the latents while they denoise: each latent cell mapped to a colour by a fixed
//! linear map (a cheap approximation of the VAE decode, no extra model), so an image of
//! width / 8 x height / 8 pixels for SD1.x. The map is the one ComfyUI and web UIs use for SD1.x
//! latents ("Latent2RGB").

use candle_core::{DType, Device, IndexOp, Tensor};

use super::options::RgbImage;
use crate::error::Result;

/// SD1.x's latent channels to R, G, B (ComfyUI's `latent_formats.SD15.latent_rgb_factors`).
const SD15_LATENT_RGB: [[f32; 3]; 4] =
    [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]];

/// One small RGB image per latent image: rgb = latents · map, then (rgb + 1) / 2 in [0, 1] to
/// 8 bits. None for latents of another channel count than SD1.x's 4.
pub fn latents_to_rgb(latents: &Tensor) -> Result<Option<Vec<RgbImage>>> {
    let (n, channels, height, width) = latents.dims4()?;
    if channels != SD15_LATENT_RGB.len() {
        return Ok(None);
    }
    let map: Vec<f32> = SD15_LATENT_RGB.iter().flatten().copied().collect();
    let map = Tensor::from_vec(map, (channels, 3), &Device::Cpu)?;
    // [n, h, w, c] x [c, 3] on the host: a few thousand cells.
    let cells = latents.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.permute((0, 2, 3, 1))?.contiguous()?;
    let rgb = cells.reshape((n * height * width, channels))?.matmul(&map)?;
    let rgb = (((rgb + 1.0)? / 2.0)?.clamp(0f32, 1f32)? * 255.0)?.round()?.to_dtype(DType::U8)?;
    let rgb = rgb.reshape((n, height * width * 3))?;
    let images = (0..n).map(|i| Ok(RgbImage { width, height, data: rgb.i(i)?.to_vec1::<u8>()? }));
    Ok(Some(images.collect::<Result<Vec<_>>>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cell_becomes_its_colour_by_the_fixed_map() {
        // One cell of latents (1, 0, 0, 0): R, G, B = 0.3512, 0.2297, 0.3227 -> (x + 1) / 2 x 255.
        let latents = Tensor::new(&[1f32, 0., 0., 0.], &Device::Cpu).unwrap().reshape((1, 4, 1, 1)).unwrap();
        let images = latents_to_rgb(&latents).unwrap().unwrap();
        assert_eq!((images[0].width, images[0].height), (1, 1));
        assert_eq!(images[0].data, vec![172, 157, 169]);
        let other = Tensor::zeros((1, 16, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(latents_to_rgb(&other).unwrap().is_none(), "no map for 16 channels");
    }
}
