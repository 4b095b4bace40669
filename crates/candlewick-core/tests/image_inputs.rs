//! Input images: what is refused, with which message, and that the pipeline works after each;
//! EXIF orientation and the Lanczos resize against PIL's (VaeImageProcessor's default resample).
//!
//! Goldens: test/fixtures/goldens/image_inputs.safetensors and test/fixtures/images/, made by
//! scripts/fixture_images.py (scripts/make_fixtures.py --images-only).

mod common;

use candle_core::IndexOp;
use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::pipeline::{
    preprocess_image, GenerateOptions, ImageInput, LoadOptions, Observer, StableDiffusionPipeline,
};
use common::{fixtures, goldens, rel_error};

fn load() -> StableDiffusionPipeline {
    let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() };
    StableDiffusionPipeline::load(&fixtures().join("tiny-sd"), &options).expect("tiny-sd loads")
}

fn bytes(path: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(path)).unwrap()
}

fn img2img(image: ImageInput) -> GenerateOptions {
    GenerateOptions {
        prompt: vec!["a red apple".into()],
        num_inference_steps: 2,
        strength: Some(1.0),
        image: Some(image),
        seed: Some(1),
        ..Default::default()
    }
}

/// A PNG whose header declares `width` x `height` RGB pixels, followed by a few bytes of IDAT.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    for (kind, data) in [(b"IHDR", ihdr), (b"IDAT", vec![0x78, 0x9c, 0x63, 0, 0, 0, 1, 0, 1]), (b"IEND", vec![])] {
        png.extend((data.len() as u32).to_be_bytes());
        let mut typed = kind.to_vec();
        typed.extend(&data);
        png.extend(&typed);
        png.extend(crc32(&typed).to_be_bytes());
    }
    png
}

/// PNG's CRC-32 (ISO 3309), bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Every bad input is an InvalidOption error with this exact message, and the next call works.
#[test]
fn bad_images_are_refused_with_messages_that_name_them_and_the_pipeline_goes_on() {
    let pipe = load();
    let observer = Observer::new();
    let good = pipe.generate(&img2img(ImageInput::Encoded(bytes("images/input.png"))), &observer).unwrap();
    let input = bytes("images/input.png");
    let mask = |m: ImageInput| GenerateOptions { mask_image: Some(m), ..img2img(ImageInput::Encoded(input.clone())) };
    let cases: Vec<(&str, GenerateOptions, String)> = vec![
        (
            "a decompression bomb",
            img2img(ImageInput::Encoded(png_declaring(100_000, 100_000))),
            "Expected image of 1 to 8192 pixels a side for image but received a PNG declaring 100000x100000 pixels".into(),
        ),
        (
            "a truncated file",
            img2img(ImageInput::Encoded(input[..input.len() / 2].to_vec())),
            format!("Expected a complete PNG image for image but received {} bytes that do not decode", input.len() / 2),
        ),
        (
            "text",
            img2img(ImageInput::Encoded(b"not an image at all".to_vec())),
            "Expected PNG, JPEG or WebP image for image but received 19 bytes that are not an image (they start 6e 6f 74 20 61 6e 20 69)".into(),
        ),
        (
            "a mask of another size",
            mask(ImageInput::Raw { width: 16, height: 32, channels: 1, data: vec![255; 16 * 32] }),
            "Expected mask of the image's size (32x32 pixels) for mask_image but received 16x32 pixels".into(),
        ),
        (
            "a mask with alpha",
            mask(ImageInput::Raw { width: 32, height: 32, channels: 4, data: vec![255; 32 * 32 * 4] }),
            "Expected mask without an alpha channel (white = repaint, black = keep; as grayscale or RGB) for mask_image but received an image with an alpha channel".into(),
        ),
        (
            "raw pixels of the wrong length",
            img2img(ImageInput::Raw { width: 4, height: 4, channels: 3, data: vec![0; 47] }),
            "Expected 48 bytes (4x4 pixels x 3 channels) for image.data but received 47 bytes".into(),
        ),
        (
            "an image smaller than 8 pixels",
            img2img(ImageInput::Raw { width: 4, height: 4, channels: 3, data: vec![0; 48] }),
            "Expected image of at least 8x8 pixels for image but received 4x4 pixels".into(),
        ),
        (
            "strength 0",
            GenerateOptions { strength: Some(0.0), ..img2img(ImageInput::Encoded(input.clone())) },
            "Expected number > 0 and <= 1 for strength but received 0".into(),
        ),
        (
            "strength above 1",
            GenerateOptions { strength: Some(1.5), ..img2img(ImageInput::Encoded(input.clone())) },
            "Expected number > 0 and <= 1 for strength but received 1.5".into(),
        ),
        (
            "strength NaN",
            GenerateOptions { strength: Some(f64::NAN), ..img2img(ImageInput::Encoded(input.clone())) },
            "Expected number > 0 and <= 1 for strength but received NaN".into(),
        ),
        (
            "a strength that runs no step",
            GenerateOptions { strength: Some(0.4), ..img2img(ImageInput::Encoded(input.clone())) },
            "Expected strength x num_inference_steps >= 1 (at least one step; 2 steps need strength >= 0.5) for strength but received 0.4".into(),
        ),
        (
            "strength without an image",
            GenerateOptions { strength: Some(0.5), image: None, ..img2img(ImageInput::Encoded(vec![])) },
            "Expected image with strength (strength is for image to image and inpainting) for image but received none".into(),
        ),
        (
            "a mask without an image",
            GenerateOptions { image: None, mask_image: Some(ImageInput::Encoded(input.clone())), strength: None, ..img2img(ImageInput::Encoded(vec![])) },
            "Expected image with mask_image (inpainting repaints the image) for image but received none".into(),
        ),
    ];
    for (what, options, message) in cases {
        match pipe.generate(&options, &observer) {
            Err(candlewick_core::Error::InvalidOption(got)) => {
                // A truncated file's message ends with the decoder's own words, in parentheses.
                if message.ends_with("do not decode") {
                    assert!(got.starts_with(&format!("{message} (")), "{what}: {got}");
                } else {
                    assert_eq!(got, message, "{what}");
                }
            }
            other => panic!("{what}: expected an InvalidOption error, got {:?}", other.map(|o| o.images.len())),
        }
        let again = pipe.generate(&img2img(ImageInput::Encoded(bytes("images/input.png"))), &observer).unwrap();
        assert_eq!(again.images[0].data, good.images[0].data, "{what}: the next call");
    }
}

/// A JPEG stored 16x8 with EXIF orientation 6 is read as PIL's `exif_transpose` shows it: 8x16,
/// red above blue; img2img's output takes that size.
#[test]
fn exif_orientation_is_applied() {
    let jpeg = ImageInput::Encoded(bytes("images/orientation6.jpg"));
    let t = preprocess_image(&jpeg, 8, 16).unwrap();
    let unit = ((t + 1.0).unwrap() * 127.5).unwrap();
    let pixel = |x: usize, y: usize| unit.i((0, .., y, x)).unwrap().to_vec1::<f32>().unwrap();
    let (top, bottom) = (pixel(4, 2), pixel(4, 13));
    assert!(top[0] > 200.0 && top[2] < 60.0, "top is red: {top:?}");
    assert!(bottom[2] > 200.0 && bottom[0] < 60.0, "bottom is blue: {bottom:?}");
    let out = load().generate(&img2img(jpeg), &Observer::new()).unwrap();
    assert_eq!((out.images[0].width, out.images[0].height), (8, 16));
}

/// Resizing 32x32 to 24x40 with the `image` crate's Lanczos3 against PIL's LANCZOS (diffusers'
/// default `resample`): PIL rounds to 8 bits between its two passes, the image crate keeps f32, so
/// values differ by a few levels at most.
#[test]
fn lanczos_resize_is_close_to_pils() {
    let got = preprocess_image(&ImageInput::Encoded(bytes("images/input.png")), 24, 40).unwrap();
    let want = &goldens("image_inputs")["init_image_24x40"];
    let (_, max_diff, _) = rel_error(&got, want);
    eprintln!("resize 32x32 -> 24x40: max |ours - PIL's| = {max_diff} ({} levels of 255)", max_diff * 127.5);
    assert!(max_diff * 127.5 <= 2.0, "resize differs from PIL's by {} levels", max_diff * 127.5);
}

/// Lossless WebP decodes to the PNG's pixels (test/fixtures/images/input.webp, by fixture_images.py).
#[test]
fn webp_decodes_to_the_same_pixels_as_png() {
    let png = preprocess_image(&ImageInput::Encoded(bytes("images/input.png")), 32, 32).unwrap();
    let webp = preprocess_image(&ImageInput::Encoded(bytes("images/input.webp")), 32, 32).unwrap();
    let (_, max_diff, _) = rel_error(&webp, &png);
    assert_eq!(max_diff, 0.0);
}

/// A JPEG whose frame header (SOF0) declares 60000x60000 pixels is refused from the header.
#[test]
fn a_jpeg_declaring_a_huge_size_is_refused_before_decoding() {
    let mut jpeg = bytes("images/orientation6.jpg");
    let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).expect("a baseline JPEG");
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xea, 0x60, 0xea, 0x60]);
    match preprocess_image(&ImageInput::Encoded(jpeg), 8, 8) {
        Err(candlewick_core::Error::InvalidOption(message)) => assert_eq!(
            message,
            "Expected image of 1 to 8192 pixels a side for image but received a JPEG declaring 60000x60000 pixels"
        ),
        other => panic!("expected an InvalidOption error, got {:?}", other.map(|t| t.dims().to_vec())),
    }
}
