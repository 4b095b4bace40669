//! GroupNorm with diffusers' semantics (statistics in f32, per-channel affine).
//!
//! On the CPU it is candle_nn's GroupNorm (exact: the parity tests' bound is 1e-4). On CUDA,
//! candle_nn's version is about 13 kernels and as many passes over the activations in f32; here
//! it is 3: candle's fused layer-norm kernel over each group (f32 accumulation), then the
//! channel-wise scale and shift.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::{bail, Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: candle_nn::GroupNorm,
    /// weight and bias as [1, channels, 1, ...] for the CUDA path.
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
    /// Ones and zeros as long as one group (the layer-norm kernel's identity affine), by length.
    identity: RefCell<HashMap<usize, (Tensor, Tensor)>>,
}

pub fn group_norm(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<GroupNorm> {
    if groups == 0 || channels % groups != 0 {
        bail!("GroupNorm: norm_num_groups ({groups}) must be at least 1 and divide the {channels} channels");
    }
    let (weight, bias) = (vb.get(channels, "weight")?, vb.get(channels, "bias")?);
    let inner = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?;
    Ok(GroupNorm {
        inner,
        weight: weight.reshape((1, channels, 1))?,
        bias: bias.reshape((1, channels, 1))?,
        groups,
        eps,
        identity: RefCell::default(),
    })
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if !xs.device().is_cuda() {
            return self.inner.forward(xs);
        }
        crate::profile::scope("group_norm", xs, || self.forward_fused(xs))
    }
}

impl GroupNorm {
    /// The fused path (used on CUDA; public to the crate so CPU tests can check it).
    pub(crate) fn forward_fused(&self, xs: &Tensor) -> Result<Tensor> {
        let dims = xs.dims().to_vec();
        if dims.len() < 3 {
            bail!("GroupNorm: expected [batch, channels, ...], got {dims:?}");
        }
        let (b, c) = (dims[0], dims[1]);
        let spatial: usize = dims[2..].iter().product();
        let per_group = c / self.groups * spatial;
        let (ones, zeros) = self.identity(per_group, xs)?;
        let grouped = xs.contiguous()?.reshape((b * self.groups, per_group))?;
        let normed = candle_nn::ops::layer_norm(&grouped, &ones, &zeros, self.eps as f32)?;
        normed.reshape((b, c, spatial))?.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?.reshape(dims)
    }

    fn identity(&self, len: usize, like: &Tensor) -> Result<(Tensor, Tensor)> {
        if let Some(pair) = self.identity.borrow().get(&len) {
            if pair.0.dtype() == like.dtype() {
                return Ok(pair.clone());
            }
        }
        let pair = (Tensor::ones(len, like.dtype(), like.device())?, Tensor::zeros(len, like.dtype(), like.device())?);
        self.identity.borrow_mut().insert(len, pair.clone());
        Ok(pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// The fused path computes what candle_nn's GroupNorm computes (f32, random affine).
    #[test]
    fn fused_path_matches_candle_nn() -> Result<()> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let norm = group_norm(vb, 4, 8, 1e-5)?;
        for var in varmap.all_vars() {
            var.set(&Tensor::randn(0.5f32, 1.0, var.shape(), &Device::Cpu)?)?;
        }
        let xs = (Tensor::randn(0f32, 3.0, (2, 8, 5, 7), &Device::Cpu)? + 1.5)?;
        let want = norm.inner.forward(&xs)?;
        let got = norm.forward_fused(&xs)?;
        let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "max |fused - candle_nn| = {diff}");
        Ok(())
    }
}
