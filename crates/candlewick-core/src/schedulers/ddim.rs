//! STUB (to be replaced): DDIM.
use candle_core::Tensor;

use crate::error::Result;

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct DdimSchedulerConfig {
    pub num_train_timesteps: usize,
}

#[derive(Debug, Clone, Default)]
pub struct DdimOverrides {
    pub eta: Option<f64>,
}

impl DdimSchedulerConfig {
    pub fn with_overrides(&self, _o: &DdimOverrides) -> Result<Self> {
        Ok(self.clone())
    }
}

pub struct DdimScheduler {
    timesteps: Vec<usize>,
}

impl DdimScheduler {
    pub fn new(_cfg: DdimSchedulerConfig, _num_inference_steps: usize) -> Result<Self> {
        Err(crate::Error::Internal("not written yet".into()))
    }
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }
    pub fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    pub fn scale_model_input(&self, x: Tensor, _t: usize) -> Tensor {
        x
    }
    pub fn step(&self, _eps: &Tensor, _t: usize, _x: &Tensor, _eta: f64, _noise: Option<&Tensor>) -> candle_core::Result<Tensor> {
        candle_core::bail!("not written yet")
    }
}
