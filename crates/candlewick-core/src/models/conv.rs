//! diffusers' `nn.Conv2d` layers: a 2-D convolution plus bias, through cuDNN's cached plans on
//! CUDA when the build has them (`crate::cudnn`), otherwise candle's convolution.
//!
//! Tensors stay NCHW between layers, as in diffusers. On CUDA with cuDNN, a kxk convolution
//! (k > 1) keeps its filter channels-last (KRSC, converted once at load) and runs on cuDNN's NHWC
//! kernels: the input goes through one tiled transpose on the way in, and the way out is one
//! kernel that transposes back and adds the bias, a resnet's time embedding and its shortcut
//! (`forward_fused`). Given NCHW tensors, cuDNN would convert the input and the filter itself on
//! every call, more slowly (bench/NOTES.md, run 12).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::fused;
use crate::cudnn::{self, Conv2dParams};

#[derive(Debug, Clone)]
pub struct Conv2d {
    /// [k, c, r, s], or [k, r, s, c] when `channels_last`.
    weight: Tensor,
    bias: Tensor,
    params: Conv2dParams,
    channels_last: bool,
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
        let channels_last = kernel > 1
            && c_in % 8 == 0
            && c_out % 8 == 0
            && vb.device().is_cuda()
            && matches!(vb.dtype(), DType::F16 | DType::F32)
            && cudnn::compiled()
            && cudnn::enabled()
            && cudnn::channels_last();
        let weight = if channels_last { weight.permute((0, 2, 3, 1))?.contiguous()? } else { weight };
        Ok(Self { weight, bias, params: Conv2dParams { padding, stride, dilation: 1 }, channels_last })
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_fused(xs, None, None)
    }
}

impl Conv2d {
    /// `residual + (conv(xs) + bias + per_sample)`: `per_sample` [b or 1, c_out] is added to
    /// every pixel of a sample (a resnet's time embedding), `residual` [b, c_out, p, q] is the
    /// resnet's shortcut. Each addition rounds as PyTorch's separate ops do.
    pub fn forward_fused(&self, xs: &Tensor, per_sample: Option<&Tensor>, residual: Option<&Tensor>) -> Result<Tensor> {
        crate::profile::scope("conv", || {
            if self.channels_last {
                if let Some(ys) = self.forward_channels_last(xs, per_sample, residual)? {
                    return Ok(ys);
                }
            }
            self.forward_nchw(xs, per_sample, residual)
        })
    }

    /// `residual + conv(x)` for a 1x1 convolution whose input `x` comes as tokens [b, h*w, c]
    /// (a transformer's proj_out): on CUDA a matrix product on the tokens, then one kernel back to
    /// NCHW [b, k, h, w] with the bias and the residual, instead of a transpose, the convolution,
    /// the bias and the addition.
    pub fn forward_tokens_residual(&self, tokens: &Tensor, h: usize, w: usize, residual: &Tensor) -> Result<Tensor> {
        let (k, c, r, s) = self.weight.dims4()?;
        let pointwise = !self.channels_last && r == 1 && s == 1 && self.params.stride == 1 && self.params.padding == 0;
        if !pointwise || !tokens.device().is_cuda() {
            return self.forward_fused(&fused::from_tokens(tokens, h, w)?, None, Some(residual));
        }
        crate::profile::scope("conv", || {
            let b = tokens.dim(0)?;
            let product = candle_nn::Linear::new(self.weight.reshape((k, c))?, None);
            let ys = product.forward(tokens)?.reshape((b, h, w, k))?;
            match fused::conv_epilogue(&ys, &self.bias, None, Some(residual))? {
                Some(out) => Ok(out),
                None => self.finish(ys.permute((0, 3, 1, 2))?.contiguous()?, None, Some(residual)),
            }
        })
    }

    fn forward_channels_last(
        &self,
        xs: &Tensor,
        per_sample: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        let (b, c, h, w) = xs.dims4()?;
        let xs = fused::to_tokens(xs)?.reshape((b, h, w, c))?;
        let Some(ys) = cudnn::conv2d_channels_last(&xs, &self.weight, self.params)? else {
            return Ok(None);
        };
        if let Some(out) = fused::conv_epilogue(&ys, &self.bias, per_sample, residual)? {
            return Ok(Some(out));
        }
        let ys = ys.permute((0, 3, 1, 2))?.contiguous()?;
        self.finish(ys, per_sample, residual).map(Some)
    }

    fn forward_nchw(&self, xs: &Tensor, per_sample: Option<&Tensor>, residual: Option<&Tensor>) -> Result<Tensor> {
        let Conv2dParams { padding, stride, dilation } = self.params;
        // A channels-last filter where cuDNN cannot run after all: back to [k, c, r, s].
        let weight = match self.channels_last {
            true => self.weight.permute((0, 3, 1, 2))?.contiguous()?,
            false => self.weight.clone(),
        };
        let ys = match cudnn::conv2d(xs, &weight, self.params)? {
            Some(ys) => ys,
            None => xs.conv2d(&weight, padding, stride, dilation, 1)?,
        };
        self.finish(ys, per_sample, residual)
    }

    /// Bias, per-sample values and residual, composed from separate ops.
    fn finish(&self, ys: Tensor, per_sample: Option<&Tensor>, residual: Option<&Tensor>) -> Result<Tensor> {
        let channels = self.bias.dim(0)?;
        let mut ys = match fused::bias_add(&ys, &self.bias, 1)? {
            Some(ys) => ys,
            None => ys.broadcast_add(&self.bias.reshape((1, channels, 1, 1))?)?,
        };
        if let Some(t) = per_sample {
            ys = ys.broadcast_add(&t.unsqueeze(2)?.unsqueeze(3)?)?;
        }
        match residual {
            Some(r) => r + ys,
            None => Ok(ys),
        }
    }
}
