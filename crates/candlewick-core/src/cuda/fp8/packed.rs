//! The one buffer an FP8 (e4m3) tensor is packed into ([`Packed`]): what the quantizing kernels
//! (`cuda::fused`) and the LayerNorm write, and cuBLASLt's FP8 products (`cuda::cublaslt`) read.

/// A tensor of `n` f16 values quantized to e4m3 in one u8 buffer: the values (byte 0 on), the
/// f32 scale at `scale` (16-byte aligned, as cuBLASLt wants its pointers), then the quantizing
/// kernel's `partials` per-block maxima (f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    pub scale: usize,
    pub partials: usize,
    pub bytes: usize,
}

impl Packed {
    pub const SCALE_BYTES: usize = 16;
    /// Blocks of the quantizing kernels at most (each block of the second pass reads every partial).
    pub const MAX_BLOCKS: usize = 1024;

    pub fn of(n: usize) -> Self {
        let scale = n.div_ceil(16) * 16;
        let partials = (n / 8).div_ceil(256).clamp(1, Self::MAX_BLOCKS);
        Packed { scale, partials, bytes: scale + Self::SCALE_BYTES + 4 * partials }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packed_layout_keeps_the_scale_aligned_and_room_for_every_partial() {
        for n in [8, 16, 320 * 320, 1280 * 10240, 77 * 768, 1 << 30] {
            let p = Packed::of(n);
            assert!(p.scale >= n && p.scale % 16 == 0 && p.scale - n < 16, "{n}: {p:?}");
            assert!((1..=Packed::MAX_BLOCKS).contains(&p.partials), "{n}: {p:?}");
            assert_eq!(p.bytes, p.scale + Packed::SCALE_BYTES + 4 * p.partials);
        }
        // One block of 256 threads a 2,048 values (8 a thread) until the cap.
        assert_eq!(Packed::of(2048 * 3).partials, 3);
        assert_eq!(Packed::of(2048 * 3 + 8).partials, 4);
    }
}
