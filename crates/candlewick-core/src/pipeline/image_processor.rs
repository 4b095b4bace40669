//! Images in, as diffusers' `VaeImageProcessor` prepares them: decoded (PNG, JPEG or WebP, by the
//! `image` crate, EXIF orientation applied), resized with Lanczos (diffusers' default `resample`)
//! to the call's size, then a [1, 3, H, W] tensor in [-1, 1]; a mask (`mask_processor`:
//! grayscale, not normalized, binarized at 0.5) a [1, 1, H, W] tensor of 0 and 1.
//!
//! Sizes are checked from the file's header before anything is decoded: a small file that
//! declares 100000x100000 pixels is refused without allocating them.

use std::io::Cursor;

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::options::{ImageInput, MAX_SIDE};
use super::pil_resample::Pixels;
use crate::error::{expected, Error, Result};

/// The most pixels an input image may have along one side (as the output's `width` and `height`).
pub const MAX_INPUT_SIDE: usize = MAX_SIDE;

/// A decoded input image: 8-bit pixels, `channels` a pixel (1 gray, 3 RGB), alpha already dropped
/// (images) or refused (masks).
#[derive(Clone)]
pub struct Decoded {
    pub width: usize,
    pub height: usize,
    image: DynamicImage,
}

impl Decoded {
    /// Decode `input` (the option named `option`: "image" or "mask_image"). A mask with an alpha
    /// channel is refused (is transparency meant as "keep" or "repaint"?); an image's alpha is
    /// dropped, as diffusers' `load_image` (`convert("RGB")`) does.
    pub fn new(input: &ImageInput, option: &str) -> Result<Self> {
        let image = match input {
            ImageInput::Encoded(bytes) => decode_bytes(bytes, option)?,
            ImageInput::Raw { width, height, channels, data } => from_raw(*width, *height, *channels, data, option)?,
        };
        let is_mask = option == "mask_image";
        if is_mask && image.color().has_alpha() {
            return Err(expected(
                "mask without an alpha channel (white = repaint, black = keep; as grayscale or RGB)",
                option,
                "an image with an alpha channel",
            ));
        }
        let image =
            if is_mask { DynamicImage::ImageLuma8(pil_luma(&image)) } else { DynamicImage::ImageRgb8(image.to_rgb8()) };
        Ok(Self { width: image.width() as usize, height: image.height() as usize, image })
    }

    /// The 8-bit pixels (gray for a mask, RGB for an image).
    pub(super) fn pixels(&self) -> Pixels {
        let channels = self.image.color().channel_count() as usize;
        Pixels { width: self.width, height: self.height, channels, data: self.image.as_bytes().to_vec() }
    }

    /// The image of 8-bit `pixels` (gray or RGB), as [`Self::pixels`] gives them.
    pub(super) fn from_pixels(p: Pixels) -> Result<Self> {
        let (width, height) = (p.width, p.height);
        let image = match p.channels {
            1 => image::GrayImage::from_raw(width as u32, height as u32, p.data).map(DynamicImage::ImageLuma8),
            _ => image::RgbImage::from_raw(width as u32, height as u32, p.data).map(DynamicImage::ImageRgb8),
        };
        let image = image.ok_or_else(|| Error::Internal(format!("{width}x{height} pixels of the wrong length")))?;
        Ok(Self { width, height, image })
    }

    /// "32x32".
    pub fn size(&self) -> String {
        format!("{}x{}", self.width, self.height)
    }

    /// The image resized to `width` x `height` (PIL's Lanczos, as diffusers' `resize`; no resize
    /// at the same size), as [1, channels, H, W] f32 values / 255.
    fn resized_unit(&self, width: usize, height: usize, device: &Device) -> Result<Tensor> {
        let same = width == self.width && height == self.height;
        let resized;
        let image = if same {
            &self.image
        } else {
            resized = self.image.resize_exact(width as u32, height as u32, FilterType::Lanczos3);
            &resized
        };
        let channels = image.color().channel_count() as usize;
        let bytes = image.as_bytes().to_vec();
        let t = Tensor::from_vec(bytes, (height, width, channels), device)?;
        Ok((t.permute((2, 0, 1))?.unsqueeze(0)?.to_dtype(candle_core::DType::F32)? / 255.0)?)
    }

    /// `image_processor.preprocess(image, height, width)`: [1, 3, H, W] in [-1, 1].
    pub fn to_image_tensor(&self, width: usize, height: usize, device: &Device) -> Result<Tensor> {
        Ok(((self.resized_unit(width, height, device)? * 2.0)? - 1.0)?)
    }

    /// `mask_processor.preprocess(mask, height, width)`: [1, 1, H, W], 1 where the gray level is
    /// >= 0.5 (repaint), 0 elsewhere.
    pub fn to_mask_tensor(&self, width: usize, height: usize, device: &Device) -> Result<Tensor> {
        Ok(self.resized_unit(width, height, device)?.ge(0.5)?.to_dtype(candle_core::DType::F32)?)
    }
}

/// `image_processor.preprocess(image, height, width)` on the CPU: [1, 3, H, W] in [-1, 1].
pub fn preprocess_image(input: &ImageInput, width: usize, height: usize) -> Result<Tensor> {
    Decoded::new(input, "image")?.to_image_tensor(width, height, &Device::Cpu)
}

/// `mask_processor.preprocess(mask_image, height, width)` on the CPU: [1, 1, H, W] of 0 and 1.
pub fn preprocess_mask(input: &ImageInput, width: usize, height: usize) -> Result<Tensor> {
    Decoded::new(input, "mask_image")?.to_mask_tensor(width, height, &Device::Cpu)
}

/// Decode PNG, JPEG or WebP bytes: the format from the bytes themselves, the size from the header
/// (checked before decoding), EXIF orientation applied.
fn decode_bytes(bytes: &[u8], option: &str) -> Result<DynamicImage> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Internal(format!("reading {option} from memory: {e}")))?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP)) => f,
        Some(other) => {
            return Err(expected(
                "PNG, JPEG or WebP image",
                option,
                format!("{} bytes of {other:?}, which candlewick does not decode", bytes.len()),
            ))
        }
        None => return Err(expected("PNG, JPEG or WebP image", option, not_an_image(bytes))),
    };
    let name = format_name(format);
    let mut limits = Limits::default();
    // The header's size is checked below, with a message that names it; this bounds what a
    // decoder allocates besides the frame: a 16-bit RGBA frame at the largest size and its buffers.
    limits.max_alloc = Some((MAX_INPUT_SIDE * MAX_INPUT_SIDE * 16) as u64 + (64 << 20));
    reader.limits(limits);
    let undecodable = |e: image::ImageError| {
        expected(&format!("a complete {name} image"), option, format!("{} bytes that do not decode ({e})", bytes.len()))
    };
    let mut decoder = reader.into_decoder().map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(option, name, None),
        other => undecodable(other),
    })?;
    let (width, height) = decoder.dimensions();
    check_size(width as usize, height as usize, option, name)?;
    let orientation = decoder.orientation().map_err(undecodable)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(option, name, Some((width, height))),
        other => undecodable(other),
    })?;
    image.apply_orientation(orientation);
    Ok(image)
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        _ => "WebP",
    }
}

/// What bytes that are no known image look like, for the error.
fn not_an_image(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "0 bytes".into();
    }
    let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{} bytes that are not an image (they start {})", bytes.len(), head.join(" "))
}

fn too_large(option: &str, name: &str, size: Option<(u32, u32)>) -> Error {
    let what = format!("image of at most {MAX_INPUT_SIDE}x{MAX_INPUT_SIDE} pixels");
    match size {
        Some((w, h)) => expected(&what, option, format!("a {name} of {w}x{h} pixels too large to decode")),
        None => expected(&what, option, format!("a {name} whose header declares a larger size")),
    }
}

/// Width and height from 1 to [`MAX_INPUT_SIDE`] each.
fn check_size(width: usize, height: usize, option: &str, name: &str) -> Result<()> {
    if width == 0 || height == 0 || width > MAX_INPUT_SIDE || height > MAX_INPUT_SIDE {
        return Err(expected(
            &format!("image of 1 to {MAX_INPUT_SIDE} pixels a side"),
            option,
            format!("a {name} declaring {width}x{height} pixels"),
        ));
    }
    Ok(())
}

/// Raw pixels, rows top to bottom, `channels` bytes a pixel (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA).
fn from_raw(width: usize, height: usize, channels: usize, data: &[u8], option: &str) -> Result<DynamicImage> {
    if !(1..=4).contains(&channels) {
        return Err(expected("1, 2, 3 or 4", &format!("{option}.channels"), channels));
    }
    check_size(width, height, option, "raw image")?;
    let want = width * height * channels;
    if data.len() != want {
        return Err(expected(
            &format!("{want} bytes ({width}x{height} pixels x {channels} channels)"),
            &format!("{option}.data"),
            format!("{} bytes", data.len()),
        ));
    }
    let (w, h, data) = (width as u32, height as u32, data.to_vec());
    let image = match channels {
        1 => image::GrayImage::from_raw(w, h, data).map(DynamicImage::ImageLuma8),
        2 => image::GrayAlphaImage::from_raw(w, h, data).map(DynamicImage::ImageLumaA8),
        3 => image::RgbImage::from_raw(w, h, data).map(DynamicImage::ImageRgb8),
        _ => image::RgbaImage::from_raw(w, h, data).map(DynamicImage::ImageRgba8),
    };
    image.ok_or_else(|| Error::Internal(format!("{option}: {width}x{height}x{channels} buffer refused")))
}

/// Grayscale as PIL's `convert("L")` computes it (ITU-R 601-2 luma in 16-bit fixed point:
/// L = (R·19595 + G·38470 + B·7471 + 2^15) >> 16), which diffusers' mask processor uses; the
/// `image` crate's own `to_luma8` weighs the channels as Rec. 709 does instead.
fn pil_luma(image: &DynamicImage) -> image::GrayImage {
    if let DynamicImage::ImageLuma8(gray) = image {
        return gray.clone();
    }
    let rgb = image.to_rgb8();
    image::GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0.map(u32::from);
        image::Luma([((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pil_luma_matches_pils_fixed_point_formula() {
        // PIL: Image.new("RGB", (1, 1), (200, 100, 50)).convert("L").getpixel((0, 0)) == 124
        let rgb = image::RgbImage::from_raw(1, 1, vec![200, 100, 50]).unwrap();
        assert_eq!(pil_luma(&DynamicImage::ImageRgb8(rgb)).as_raw(), &vec![124]);
    }
}
