//! STUB (to be replaced): AutoencoderKL.
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone, serde::Deserialize)]
pub struct AutoencoderKLConfig {
    pub block_out_channels: Vec<usize>,
    pub latent_channels: usize,
    pub scaling_factor: f64,
}

impl AutoencoderKLConfig {
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

pub struct DiagonalGaussian {
    pub mean: Tensor,
    pub logvar: Tensor,
}

pub struct AutoencoderKL;

impl AutoencoderKL {
    pub fn new(_vb: VarBuilder, _cfg: &AutoencoderKLConfig) -> Result<Self> {
        candle_core::bail!("not written yet")
    }
    pub fn decode(&self, _z: &Tensor) -> Result<Tensor> {
        candle_core::bail!("not written yet")
    }
    pub fn encode(&self, _x: &Tensor) -> Result<DiagonalGaussian> {
        candle_core::bail!("not written yet")
    }
}
