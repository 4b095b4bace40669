//! Seeded Gaussian noise for the initial latents and the schedulers' step noise, drawn on the
//! host with ChaCha8 so that a seed gives the same noise on every device: one stream per image,
//! so that an image made in a batch is the image its seed makes alone.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};
use crate::schedulers::StepNoise;

/// Where a call's noise comes from: one stream per image; a draw takes each image's values
/// from its own stream.
pub(crate) struct NoiseSource(Vec<ChaCha8Rng>);

impl NoiseSource {
    /// One stream per seed, in image order.
    pub(crate) fn new(seeds: &[u64]) -> Self {
        Self(seeds.iter().map(|&s| ChaCha8Rng::seed_from_u64(s)).collect())
    }

    /// Standard normal noise of `shape` ([batch, channels, height, width]) on `device`.
    fn draw_images(&mut self, shape: [usize; 4], device: &Device) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let rngs = &mut self.0;
        if rngs.len() != shape[0] {
            return Err(Error::Internal(format!("{} noise streams for a batch of {} images", rngs.len(), shape[0])));
        }
        let per_image = n / shape[0].max(1);
        let data: Vec<f32> = rngs.iter_mut().flat_map(|rng| draw(rng, per_image)).collect();
        Ok(Tensor::from_vec(data, &shape, device)?)
    }
}

impl StepNoise for NoiseSource {
    fn sample_like(&mut self, like: &Tensor) -> Result<Tensor> {
        let shape: [usize; 4] = like.dims4()?.into();
        self.draw_images(shape, like.device())
    }

    fn sample(&mut self, shape: [usize; 4], device: &Device) -> Result<Tensor> {
        self.draw_images(shape, device)
    }
}

fn draw(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}
