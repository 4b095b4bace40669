//! STUB (to be replaced): UNet2DConditionModel.
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone, serde::Deserialize)]
pub struct UNet2DConditionConfig {
    pub in_channels: usize,
    pub sample_size: usize,
}

pub struct UNet2DConditionModel;

impl UNet2DConditionModel {
    pub fn new(_vb: VarBuilder, _cfg: &UNet2DConditionConfig) -> Result<Self> {
        candle_core::bail!("not written yet")
    }
    pub fn forward(&self, _sample: &Tensor, _timestep: f64, _encoder_hidden_states: &Tensor) -> Result<Tensor> {
        candle_core::bail!("not written yet")
    }
}
