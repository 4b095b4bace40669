//! 8-bit pixels and the few PIL operations that `padding_mask_crop` goes through, computed as
//! Pillow's C code computes them, to the byte: `Image.crop`, `Image.paste` (with its clipping),
//! and `Image.resize(size, filter, box)` with `LANCZOS` and `BICUBIC` (Resample.c: separable passes,
//! coefficients in 22-bit fixed point, rows first, a zero-size box allowed: diffusers' "fill"
//! stretches an edge with it, through `Image.resize`'s default filter, bicubic).

/// An 8-bit image: `channels` bytes a pixel (1 gray, 3 RGB), rows top to bottom.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pixels {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// PIL's resampling filters that diffusers' resizes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    /// `Image.LANCZOS` (`VaeImageProcessor`'s `resample`): support 3.
    Lanczos,
    /// `Image.BICUBIC` (`Image.resize`'s default): support 2, a = -0.5.
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Lanczos => 3.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Lanczos => lanczos(x),
            Filter::Bicubic => bicubic(x),
        }
    }
}

/// Resample.c's `PRECISION_BITS` for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;

impl Pixels {
    /// `Image.new(mode, (width, height))`: black.
    pub fn new(width: usize, height: usize, channels: usize) -> Self {
        Self { width, height, channels, data: vec![0; width * height * channels] }
    }

    fn at(&self, x: usize, y: usize) -> &[u8] {
        let i = (y * self.width + x) * self.channels;
        &self.data[i..i + self.channels]
    }

    /// `Image.crop((x0, y0, x1, y1))`, the box inside the image.
    pub fn crop(&self, x0: usize, y0: usize, x1: usize, y1: usize) -> Self {
        let mut out = Self::new(x1 - x0, y1 - y0, self.channels);
        let row = out.width * self.channels;
        for y in y0..y1 {
            let from = (y * self.width + x0) * self.channels;
            out.data[(y - y0) * row..(y - y0 + 1) * row].copy_from_slice(&self.data[from..from + row]);
        }
        out
    }

    /// `Image.paste(src, (x, y))` of an image of the same mode: what falls outside is dropped.
    pub fn paste(&mut self, src: &Pixels, x: i64, y: i64) {
        for sy in 0..src.height {
            let dy = y + sy as i64;
            if dy < 0 || dy >= self.height as i64 {
                continue;
            }
            for sx in 0..src.width {
                let dx = x + sx as i64;
                if dx < 0 || dx >= self.width as i64 {
                    continue;
                }
                let i = (dy as usize * self.width + dx as usize) * self.channels;
                self.data[i..i + self.channels].copy_from_slice(src.at(sx, sy));
            }
        }
    }

    /// `Image.resize((width, height), Image.LANCZOS)`.
    pub fn resize(&self, width: usize, height: usize) -> Self {
        self.resize_box(width, height, Filter::Lanczos, [0.0, 0.0, self.width as f32, self.height as f32])
    }

    /// `Image.resize((width, height), filter, box)`: the box (x0, y0, x1, y1) of the source,
    /// inside it, possibly of zero width or height, resampled to width x height.
    pub fn resize_box(&self, width: usize, height: usize, filter: Filter, b: [f32; 4]) -> Self {
        let whole = b == [0.0, 0.0, self.width as f32, self.height as f32];
        if whole && (width, height) == (self.width, self.height) {
            return self.clone();
        }
        // _imaging.c: an integer box of the requested size is a crop.
        if b.iter().all(|v| v.fract() == 0.0) && b[2] - b[0] == width as f32 && b[3] - b[1] == height as f32 {
            return self.crop(b[0] as usize, b[1] as usize, b[2] as usize, b[3] as usize);
        }
        let need_horizontal = width != self.width || b[0] != 0.0 || b[2] != width as f32;
        let need_vertical = height != self.height || b[1] != 0.0 || b[3] != height as f32;
        let horizontal = coefficients(filter, self.width, b[0], b[2], width);
        let vertical = coefficients(filter, self.height, b[1], b[3], height);
        let mut image = self.clone();
        if need_horizontal {
            // Only the rows the vertical pass reads (ImagingResampleInner's ybox); the others stay black.
            let first = vertical.first().map_or(0, |c| c.start);
            let last = vertical.last().map_or(0, |c| c.start + c.weights.len());
            let mut out = Self::new(width, self.height, self.channels);
            for y in first..last {
                for (x, c) in horizontal.iter().enumerate() {
                    for ch in 0..self.channels {
                        let sum = c.weights.iter().enumerate().fold(1i32 << (PRECISION_BITS - 1), |s, (k, w)| {
                            s + i32::from(image.at(c.start + k, y)[ch]) * w
                        });
                        out.data[(y * width + x) * self.channels + ch] = clip8(sum);
                    }
                }
            }
            image = out;
        }
        if need_vertical {
            let mut out = Self::new(image.width, height, self.channels);
            for (y, c) in vertical.iter().enumerate() {
                for x in 0..image.width {
                    for ch in 0..self.channels {
                        let sum = c.weights.iter().enumerate().fold(1i32 << (PRECISION_BITS - 1), |s, (k, w)| {
                            s + i32::from(image.at(x, c.start + k)[ch]) * w
                        });
                        out.data[(y * image.width + x) * self.channels + ch] = clip8(sum);
                    }
                }
            }
            image = out;
        }
        image
    }
}

/// One output pixel's taps: the first source index and the fixed-point weights.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// Resample.c's `precompute_coeffs` and `normalize_coeffs_8bpc`, for `out_size` pixels from
/// [in0, in1) of `in_size`.
fn coefficients(filter: Filter, in_size: usize, in0: f32, in1: f32, out_size: usize) -> Vec<Taps> {
    let scale = f64::from(in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(xmin as i64) as usize;
            let weights: Vec<f64> = (xmin..xmax).map(|x| filter.weight((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = weights.iter().sum();
            let weights = weights
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    let fixed = w * f64::from(1u32 << PRECISION_BITS);
                    (if w < 0.0 { -0.5 + fixed } else { 0.5 + fixed }) as i32
                })
                .collect();
            Taps { start: xmin, weights }
        })
        .collect()
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Resample.c's `bicubic_filter` (a = -0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Resample.c's `clip8`: the sum shifted down, clamped to 0..=255.
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_integer_box_of_the_output_size_is_a_crop_and_the_same_size_a_copy() {
        let p = Pixels { width: 3, height: 2, channels: 1, data: vec![1, 2, 3, 4, 5, 6] };
        assert_eq!(p.resize(3, 2), p);
        assert_eq!(p.resize_box(2, 1, Filter::Lanczos, [1.0, 1.0, 3.0, 2.0]).data, vec![5, 6]);
    }

    #[test]
    fn a_zero_width_box_blends_the_edge_columns_with_the_filters_taps() {
        // PIL: Image.new("L", (3, 1)) with pixels 38, 47, 46; .resize((1, 1), box=(0, 0, 0, 1)) is 37
        // (bicubic: 1.125 x 38 - 0.125 x 47) and with Image.LANCZOS 36.
        let p = Pixels { width: 3, height: 1, channels: 1, data: vec![38, 47, 46] };
        assert_eq!(p.resize_box(1, 1, Filter::Bicubic, [0.0, 0.0, 0.0, 1.0]).data, vec![37]);
        assert_eq!(p.resize_box(1, 1, Filter::Lanczos, [0.0, 0.0, 0.0, 1.0]).data, vec![36]);
    }
}
