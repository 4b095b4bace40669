//! diffusers' `nn.Conv2d` layers: a 2-D convolution plus bias, through cuDNN's cached plans on
//! CUDA when the build has them (`crate::cudnn`), otherwise candle's convolution.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::fused;
use crate::cudnn::{self, Conv2dParams};

#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    params: Conv2dParams,
}

impl Conv2d {
    /// A `kernel`x`kernel` convolution from `c_in` to `c_out` channels, with bias.
    pub fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        padding: usize,
        stride: usize,
    ) -> Result<Self> {
        let weight = vb.get((c_out, c_in, kernel, kernel), "weight")?;
        let bias = vb.get(c_out, "bias")?;
        Ok(Self { weight, bias, params: Conv2dParams { padding, stride, dilation: 1 } })
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        crate::profile::scope("conv", || self.forward_unprofiled(xs))
    }
}

impl Conv2d {
    fn forward_unprofiled(&self, xs: &Tensor) -> Result<Tensor> {
        let Conv2dParams { padding, stride, dilation } = self.params;
        let ys = match cudnn::conv2d(xs, &self.weight, self.params)? {
            Some(ys) => ys,
            None => xs.conv2d(&self.weight, padding, stride, dilation, 1)?,
        };
        match fused::bias_add(&ys, &self.bias, 1)? {
            Some(ys) => Ok(ys),
            None => ys.broadcast_add(&self.bias.reshape((1, self.bias.dim(0)?, 1, 1))?),
        }
    }
}
