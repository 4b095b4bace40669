//! Seeded Gaussian noise for the initial latents and DDIM's eta noise, drawn on the host with
//! ChaCha8 so that a seed gives the same noise on every device: one stream for the whole batch
//! (`seed`), or one stream per image (`seeds`), so that an image made in a batch is the image its
//! seed makes alone.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};

/// Where a call's noise comes from.
pub(crate) enum NoiseSource {
    /// One stream; a draw of a batch takes its values image after image.
    Shared(Box<ChaCha8Rng>),
    /// One stream per image; a draw takes each image's values from its own stream.
    PerImage(Vec<ChaCha8Rng>),
}

impl NoiseSource {
    /// One stream seeded with `seed`, or, when `seeds` is given, one stream per seed.
    pub(crate) fn new(seed: u64, seeds: Option<&[u64]>) -> Self {
        match seeds {
            Some(seeds) => Self::PerImage(seeds.iter().map(|&s| ChaCha8Rng::seed_from_u64(s)).collect()),
            None => Self::Shared(Box::new(ChaCha8Rng::seed_from_u64(seed))),
        }
    }

    /// Standard normal noise of `shape` ([batch, channels, height, width]) on `device`.
    pub(crate) fn sample(&mut self, shape: [usize; 4], device: &Device) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match self {
            Self::Shared(rng) => draw(rng, n),
            Self::PerImage(rngs) => {
                if rngs.len() != shape[0] {
                    return Err(Error::Internal(format!(
                        "{} noise streams for a batch of {} images",
                        rngs.len(),
                        shape[0]
                    )));
                }
                let per_image = n / shape[0].max(1);
                rngs.iter_mut().flat_map(|rng| draw(rng, per_image)).collect()
            }
        };
        Ok(Tensor::from_vec(data, &shape, device)?)
    }
}

fn draw(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}
