//! STUB (to be replaced): CLIP text encoder.
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone, serde::Deserialize)]
pub struct ClipTextConfig {
    pub hidden_size: usize,
}

pub struct ClipTextTransformer;

impl ClipTextTransformer {
    pub fn new(_vb: VarBuilder, _cfg: &ClipTextConfig) -> Result<Self> {
        candle_core::bail!("not written yet")
    }
    pub fn forward(&self, _input_ids: &Tensor) -> Result<Tensor> {
        candle_core::bail!("not written yet")
    }
}
