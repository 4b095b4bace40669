//! Inpainting's `padding_mask_crop` (A1111's "inpaint only masked"), as diffusers'
//! `StableDiffusionInpaintPipeline` and `StableDiffusionXLInpaintPipeline` do it with
//! `VaeImageProcessor`'s helpers: the box around the mask's nonzero pixels, padded and grown to the
//! output's aspect ratio (`get_crop_region`: integer arithmetic, exact), the image and mask cropped
//! to it and resized to the output's size keeping their aspect (`resize_mode="fill"`), the run, and
//! the result resized back into the box (`resize_mode="crop"`) and laid over the original image
//! through the mask (`apply_overlay`). Pixels go through PIL's arithmetic (pil_resample.rs) to the
//! byte.

use std::borrow::Cow;

use candle_core::{Device, Tensor};

use super::image_processor::Decoded;
use super::options::{ImageInput, RgbImage};
use super::pil_resample::{Filter, Pixels};
use crate::error::{expected, Result};

/// `crops_coords`: the box (x1, y1, x2, y2) of the original image that is inpainted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropRegion {
    pub x1: usize,
    pub y1: usize,
    pub x2: usize,
    pub y2: usize,
}

/// What `padding_mask_crop` does to an input image or mask.
impl Decoded {
    /// `preprocess(..., crops_coords, resize_mode="fill")`'s pixels, at width x height: the box
    /// cropped and resized keeping its aspect (PIL's arithmetic, to the byte).
    pub(super) fn cropped_and_filled(&self, crop: CropRegion, width: usize, height: usize) -> Result<Self> {
        Decoded::from_pixels(crop_and_fill(&self.pixels(), crop, width, height))
    }

    /// Itself, or with `padding_mask_crop` its box cropped and filled to width x height.
    pub(super) fn cropped(&self, crop: Option<CropRegion>, width: usize, height: usize) -> Result<Cow<'_, Self>> {
        match crop {
            Some(crop) => Ok(Cow::Owned(self.cropped_and_filled(crop, width, height)?)),
            None => Ok(Cow::Borrowed(self)),
        }
    }
}

/// On the CPU, what the pipeline does with `padding_mask_crop` before the run: the crop box and
/// `image_processor.preprocess(image, height, width, crops_coords, resize_mode="fill")` ([1, 3, H, W]
/// in [-1, 1]) and the mask processor's ([1, 1, H, W] of 0 and 1).
pub fn preprocess_mask_crop(
    image: &ImageInput,
    mask: &ImageInput,
    width: usize,
    height: usize,
    pad: usize,
) -> Result<(CropRegion, Tensor, Tensor)> {
    let (image, mask) = (Decoded::new(image, "image")?, Decoded::new(mask, "mask_image")?);
    let crop = get_crop_region(&mask.pixels(), width, height, pad)?;
    let image = image.cropped_and_filled(crop, width, height)?.to_image_tensor(width, height, &Device::Cpu)?;
    let mask = mask.cropped_and_filled(crop, width, height)?.to_mask_tensor(width, height, &Device::Cpu)?;
    Ok((crop, image, mask))
}

/// What the pipeline does with `padding_mask_crop` after the run: `generated` laid over `image`
/// through `mask` in the box `crop` (diffusers' `apply_overlay`).
pub fn overlay(image: &ImageInput, mask: &ImageInput, generated: &RgbImage, crop: CropRegion) -> Result<RgbImage> {
    let (image, mask) = (Decoded::new(image, "image")?, Decoded::new(mask, "mask_image")?);
    Ok(apply_overlay(&mask.pixels(), &image.pixels(), generated, crop))
}

/// `VaeImageProcessor.get_crop_region(mask, width, height, pad)`: `mask` gray (`convert("L")`).
/// diffusers divides by zero on a mask with no nonzero pixel (or repaints nothing with a large pad):
/// refused.
pub(super) fn get_crop_region(mask: &Pixels, width: usize, height: usize, pad: usize) -> Result<CropRegion> {
    let (w, h) = (mask.width as i64, mask.height as i64);
    let nonzero_column = |x: usize| (0..mask.height).any(|y| mask.data[y * mask.width + x] != 0);
    let nonzero_row = |y: usize| mask.data[y * mask.width..(y + 1) * mask.width].iter().any(|&v| v != 0);
    let (Some(left), Some(top)) =
        ((0..mask.width).find(|&x| nonzero_column(x)), (0..mask.height).find(|&y| nonzero_row(y)))
    else {
        return Err(expected(
            "mask_image with at least one nonzero pixel with padding_mask_crop (the crop is the region around the mask)",
            "mask_image",
            "a mask with no nonzero pixel",
        ));
    };
    let right = (0..mask.width).rev().find(|&x| nonzero_column(x)).unwrap_or(left) as i64 + 1;
    let bottom = (0..mask.height).rev().find(|&y| nonzero_row(y)).unwrap_or(top) as i64 + 1;
    let pad = pad.min(1 << 30) as i64;
    // 2. The padding; 3. the box grown to the output's aspect ratio (Python's float and // arithmetic).
    let (mut x1, mut y1) = ((left as i64 - pad).max(0), (top as i64 - pad).max(0));
    let (mut x2, mut y2) = ((right + pad).min(w), (bottom + pad).min(h));
    let ratio_crop_region = (x2 - x1) as f64 / (y2 - y1) as f64;
    let ratio_processing = width as f64 / height as f64;
    let grow = |lo: &mut i64, hi: &mut i64, desired: f64, size: i64| {
        let diff = (desired - (*hi - *lo) as f64) as i64;
        *lo -= diff.div_euclid(2);
        *hi += diff - diff.div_euclid(2);
        if *hi >= size {
            let over = *hi - size;
            *hi -= over;
            *lo -= over;
        }
        if *lo < 0 {
            *hi -= *lo;
            *lo = 0;
        }
        if *hi >= size {
            *hi = size;
        }
    };
    if ratio_crop_region > ratio_processing {
        grow(&mut y1, &mut y2, (x2 - x1) as f64 / ratio_processing, h);
    } else {
        grow(&mut x1, &mut x2, (y2 - y1) as f64 * ratio_processing, w);
    }
    let crop = CropRegion { x1: x1 as usize, y1: y1 as usize, x2: x2 as usize, y2: y2 as usize };
    // A box held by the image's edges far from the output's aspect can shrink to nothing in the
    // fill's resize (PIL refuses a size of 0: diffusers fails there).
    let (bw, bh) = (crop.x2 - crop.x1, crop.y2 - crop.y1);
    if fill_size(bw, bh, width, height).0 == 0 || fill_size(bw, bh, width, height).1 == 0 {
        return Err(expected(
            &format!(
                "padding_mask_crop whose box ({bw}x{bh} pixels of the image, grown to the output's aspect within the \
                 image) keeps at least 1 pixel a side resized into {width}x{height} (an output closer to the image's aspect)"
            ),
            "padding_mask_crop",
            pad,
        ));
    }
    Ok(crop)
}

/// `_resize_and_fill`'s size of the resized image inside width x height.
fn fill_size(image_width: usize, image_height: usize, width: usize, height: usize) -> (usize, usize) {
    let ratio = width as f64 / height as f64;
    let src_ratio = image_width as f64 / image_height as f64;
    let src_w = if ratio < src_ratio { width } else { image_width * height / image_height };
    let src_h = if ratio >= src_ratio { height } else { image_height * width / image_width };
    (src_w, src_h)
}

/// `image_processor.preprocess(image, height, width, crops_coords, resize_mode="fill")`'s pixels:
/// the box cropped, then `_resize_and_fill`.
pub(super) fn crop_and_fill(image: &Pixels, crop: CropRegion, width: usize, height: usize) -> Pixels {
    resize_and_fill(&image.crop(crop.x1, crop.y1, crop.x2, crop.y2), width, height)
}

/// `VaeImageProcessor._resize_and_fill`: resized inside width x height keeping its aspect,
/// centered, the strips left on either side filled by stretching the image's edge (a resize of a
/// zero-size box, through `Image.resize`'s default filter: bicubic, not the processor's Lanczos).
fn resize_and_fill(image: &Pixels, width: usize, height: usize) -> Pixels {
    let ratio = width as f64 / height as f64;
    let src_ratio = image.width as f64 / image.height as f64;
    let (src_w, src_h) = fill_size(image.width, image.height, width, height);
    let resized = image.resize(src_w, src_h);
    let mut res = Pixels::new(width, height, image.channels);
    res.paste(&resized, (width / 2) as i64 - (src_w / 2) as i64, (height / 2) as i64 - (src_h / 2) as i64);
    let (rw, rh) = (resized.width as f32, resized.height as f32);
    if ratio < src_ratio {
        let fill = (height / 2).saturating_sub(src_h / 2);
        if fill > 0 {
            res.paste(&resized.resize_box(width, fill, Filter::Bicubic, [0.0, 0.0, width as f32, 0.0]), 0, 0);
            res.paste(
                &resized.resize_box(width, fill, Filter::Bicubic, [0.0, rh, width as f32, rh]),
                0,
                (fill + src_h) as i64,
            );
        }
    } else if ratio > src_ratio {
        let fill = (width / 2).saturating_sub(src_w / 2);
        if fill > 0 {
            res.paste(&resized.resize_box(fill, height, Filter::Bicubic, [0.0, 0.0, 0.0, height as f32]), 0, 0);
            res.paste(
                &resized.resize_box(fill, height, Filter::Bicubic, [rw, 0.0, rw, height as f32]),
                (fill + src_w) as i64,
                0,
            );
        }
    }
    res
}

/// `VaeImageProcessor._resize_and_crop`: resized to cover width x height keeping its aspect,
/// centered, the excess cut.
fn resize_and_crop(image: &Pixels, width: usize, height: usize) -> Pixels {
    let ratio = width as f64 / height as f64;
    let src_ratio = image.width as f64 / image.height as f64;
    let src_w = if ratio > src_ratio { width } else { image.width * height / image.height };
    let src_h = if ratio <= src_ratio { height } else { image.height * width / image.width };
    let resized = image.resize(src_w, src_h);
    let mut res = Pixels::new(width, height, image.channels);
    res.paste(&resized, (width / 2) as i64 - (src_w / 2) as i64, (height / 2) as i64 - (src_h / 2) as i64);
    res
}

/// `VaeImageProcessor.apply_overlay(mask, init_image, image, crop_coords)`: `image` (the run's
/// output) resized into the box of a black canvas of the original's size, and the original laid
/// over it with alpha 255 - mask (PIL's RGBa paste, unpremultiply and `alpha_composite`, to the byte).
pub(super) fn apply_overlay(mask: &Pixels, init_image: &Pixels, image: &RgbImage, crop: CropRegion) -> RgbImage {
    let generated = Pixels { width: image.width, height: image.height, channels: 3, data: image.data.clone() };
    let mut base = Pixels::new(init_image.width, init_image.height, 3);
    base.paste(&resize_and_crop(&generated, crop.x2 - crop.x1, crop.y2 - crop.y1), crop.x1 as i64, crop.y1 as i64);
    let mut data = Vec::with_capacity(base.data.len());
    for ((dst, src), &m) in base.data.chunks(3).zip(init_image.data.chunks(3)).zip(&mask.data) {
        // init_image.convert("RGBA").convert("RGBa") pasted on transparent black through
        // ImageOps.invert(mask): BLEND(a, 0, c) = DIV255(c * a), a = 255 - mask.
        let a = 255 - u32::from(m);
        let premultiplied = src.iter().map(|&c| div255(div255(u32::from(c) * 255) * a));
        // convert("RGBA"): unpremultiplied (rgba2rgbA).
        let src_rgb: Vec<u32> =
            premultiplied.map(|c| if a == 255 || a == 0 { c } else { ((255 * c) / a).min(255) }).collect();
        // image.alpha_composite(init_image_masked) over an opaque image (AlphaComposite.c).
        for (ch, &d) in dst.iter().enumerate() {
            data.push(if a == 0 { d } else { alpha_composite(src_rgb[ch], a, u32::from(d)) });
        }
    }
    RgbImage { width: init_image.width, height: init_image.height, data }
}

/// PIL's `DIV255`: round(v / 255) for v in 0..=255 x 255.
fn div255(v: u32) -> u32 {
    let t = v + 128;
    ((t >> 8) + t) >> 8
}

/// AlphaComposite.c for one channel: `src` of alpha `sa` (> 0) over an opaque `dst`.
fn alpha_composite(src: u32, sa: u32, dst: u32) -> u8 {
    const BITS: u32 = 7;
    let blend = 255 * (255 - sa);
    let outa255 = sa * 255 + blend;
    let coef1 = sa * 255 * 255 * (1 << BITS) / outa255;
    let coef2 = 255 * (1 << BITS) - coef1;
    let t = src * coef1 + dst * coef2 + (0x80 << BITS);
    ((((t >> 8) + t) >> 8) >> BITS) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(w: usize, h: usize, on: &[(usize, usize)]) -> Pixels {
        let mut m = Pixels::new(w, h, 1);
        for &(x, y) in on {
            m.data[y * w + x] = 255;
        }
        m
    }

    #[test]
    fn the_box_is_padded_grown_to_the_aspect_and_kept_inside() {
        // One pixel at (10, 10) of 32x32, pad 2: 5x5 around it; a 2:1 output grows it to 10x5.
        let r = get_crop_region(&mask(32, 32, &[(10, 10)]), 64, 32, 2).unwrap();
        assert_eq!(r, CropRegion { x1: 6, y1: 8, x2: 16, y2: 13 });
        // At the right edge the box slides left.
        let r = get_crop_region(&mask(32, 32, &[(31, 10)]), 64, 32, 2).unwrap();
        assert_eq!(r, CropRegion { x1: 22, y1: 8, x2: 32, y2: 13 });
        assert!(get_crop_region(&mask(8, 8, &[]), 8, 8, 4).is_err());
        // A line down an 8x2048 image: its box cannot widen past 8 pixels, 0 wide resized into 2048x8.
        let e = get_crop_region(&mask(8, 2048, &[(3, 0), (3, 2047)]), 2048, 8, 0).unwrap_err().to_string();
        assert!(e.contains("8x2048 pixels of the image") && e.ends_with("for padding_mask_crop but received 0"), "{e}");
    }
}
