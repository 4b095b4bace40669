//! diffusers' `nn.Conv2d` layers: a 2-D convolution plus bias, through cuDNN's cached plans on
//! CUDA when the build has them (`crate::cuda::cudnn`), otherwise candle's convolution.
//!
//! Tensors stay NCHW between layers, as in diffusers. On CUDA with cuDNN, a kxk convolution
//! (k > 1) keeps its filter channels-last (KRSC, converted once at load) and runs on cuDNN's NHWC
//! kernels: the input goes through one tiled transpose on the way in, and the way out is one
//! kernel that transposes back and adds the bias, a resnet's time embedding and its shortcut
//! (`forward_fused`). Given NCHW tensors, cuDNN would convert the input and the filter itself on
//! every call, more slowly (bench/NOTES.md's channels-last convolution timings).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::activations::Activation;
use super::norm::GroupNorm;
use crate::cuda::cudnn::{self, Conv2dParams};
use crate::cuda::settings::{self, ConvolutionPath};
use crate::cuda::{cublaslt, fused};

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
            && settings::current().convolution == ConvolutionPath::CudnnChannelsLast;
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

    /// `conv(act(norm(xs)))`, plus `per_sample` and `residual` as in [`Self::forward_fused`]. A
    /// channels-last convolution takes the norm's output channels-last from the norm's kernel
    /// on CUDA (no transpose in between).
    pub fn forward_normed(
        &self,
        norm: &GroupNorm,
        act: Activation,
        xs: &Tensor,
        per_sample: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        if self.channels_last {
            if let Some(tokens) = norm.forward_tokens(Some(act), xs)? {
                let (b, c, h, w) = xs.dims4()?;
                let nhwc = tokens.reshape((b, h, w, c))?;
                let out = crate::profile::scope("conv", || self.conv_channels_last(&nhwc, per_sample, residual))?;
                if let Some(out) = out {
                    return Ok(out);
                }
            }
        }
        self.forward_fused(&norm.forward_then(act, xs)?, per_sample, residual)
    }

    /// A 1x1 convolution of `norm(xs)` as tokens [b, h*w, c_out] (a transformer's proj_in): on
    /// CUDA the norm writes tokens and the convolution is a matrix product on them.
    pub fn forward_normed_to_tokens(&self, norm: &GroupNorm, xs: &Tensor) -> Result<Tensor> {
        if self.pointwise() && xs.device().is_cuda() {
            if let Some(tokens) = norm.forward_tokens(None, xs)? {
                return crate::profile::scope("conv", || {
                    if let Some(ys) = cublaslt::linear(&tokens, &self.pointwise_weight()?, Some(&self.bias), None)? {
                        return Ok(ys);
                    }
                    let ys = self.pointwise_product(&tokens)?;
                    match fused::bias_add(&ys, &self.bias, 2)? {
                        Some(ys) => Ok(ys),
                        None => ys.broadcast_add(&self.bias),
                    }
                });
            }
        }
        fused::to_tokens(&self.forward(&norm.forward(xs)?)?)
    }

    /// The bias, for a layer that takes it over ([`Self::add_to_bias`]).
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// Adds `extra` [c_out] to the bias: the bias of another convolution whose output is added
    /// to this one's (a resnet's shortcut, then run by [`Self::forward_unbiased_plus`]).
    pub fn add_to_bias(&mut self, extra: &Tensor) -> Result<()> {
        self.bias = (&self.bias + extra)?;
        Ok(())
    }

    /// `conv(xs) + addend` without this layer's bias (another layer has added it to its own):
    /// a 1x1 convolution is one cuBLASLt product on CUDA with `addend` as its C matrix, instead
    /// of a product, a bias kernel and an addition in the next layer's tail.
    pub fn forward_unbiased_plus(&self, xs: &Tensor, addend: &Tensor) -> Result<Tensor> {
        crate::profile::scope("conv", || {
            if self.pointwise() {
                if let Some(out) = cublaslt::pointwise_conv_plus(xs, &self.pointwise_weight()?, addend)? {
                    return Ok(out);
                }
            }
            self.conv_nchw(xs)? + addend
        })
    }

    /// A [`Self::pointwise`] convolution of tokens [b, h*w, c] without its bias: [b, h*w, k].
    fn pointwise_product(&self, tokens: &Tensor) -> Result<Tensor> {
        candle_nn::Linear::new(self.pointwise_weight()?, None).forward(tokens)
    }

    /// A [`Self::pointwise`] convolution's filter [k, c, 1, 1] as a linear layer's weight [k, c].
    fn pointwise_weight(&self) -> Result<Tensor> {
        let (k, c, _, _) = self.weight.dims4()?;
        self.weight.reshape((k, c))
    }

    /// A 1x1 convolution, stride 1, no padding: a matrix product over the channels.
    fn pointwise(&self) -> bool {
        let dims = self.weight.dims();
        !self.channels_last && dims[2] == 1 && dims[3] == 1 && self.params.stride == 1 && self.params.padding == 0
    }

    /// `residual + conv(x)` for a 1x1 convolution whose input `x` comes as tokens [b, h*w, c]
    /// (a transformer's proj_out): on CUDA a matrix product on the tokens, then one kernel back to
    /// NCHW [b, k, h, w] with the bias and the residual, instead of a transpose, the convolution,
    /// the bias and the addition.
    pub fn forward_tokens_residual(&self, tokens: &Tensor, h: usize, w: usize, residual: &Tensor) -> Result<Tensor> {
        if !self.pointwise() || !tokens.device().is_cuda() {
            return self.forward_fused(&fused::from_tokens(tokens, h, w)?, None, Some(residual));
        }
        crate::profile::scope("conv", || {
            let (b, k) = (tokens.dim(0)?, self.weight.dim(0)?);
            let ys = self.pointwise_product(tokens)?.reshape((b, h, w, k))?;
            match fused::conv_epilogue(&ys, &self.bias, None, Some(residual))? {
                Some(out) => Ok(out),
                None => self.finish(ys.permute((0, 3, 1, 2))?.contiguous()?, None, Some(residual)),
            }
        })
    }

    /// The convolution of `xs` [b, c, h, w] upsampled 2x (nearest), when it runs channels-last:
    /// the upsampling writes the convolution's NHWC input directly. None otherwise.
    pub fn forward_upsampled_2x(&self, xs: &Tensor) -> Result<Option<Tensor>> {
        if !self.channels_last {
            return Ok(None);
        }
        let Some(nhwc) = crate::profile::scope("upsample_nearest", || fused::upsample2x_tokens(xs))? else {
            return Ok(None);
        };
        crate::profile::scope("conv", || self.conv_channels_last(&nhwc, None, None))
    }

    fn forward_channels_last(
        &self,
        xs: &Tensor,
        per_sample: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        let (b, c, h, w) = xs.dims4()?;
        self.conv_channels_last(&fused::to_tokens(xs)?.reshape((b, h, w, c))?, per_sample, residual)
    }

    /// The channels-last convolution of `xs` [b, h, w, c], back to NCHW with its tail (None
    /// where cuDNN does not run it).
    pub fn conv_channels_last(
        &self,
        xs: &Tensor,
        per_sample: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        let Some(ys) = cudnn::conv2d_channels_last(xs, &self.weight, self.params)? else {
            return Ok(None);
        };
        self.tail_channels_last(&ys, per_sample, residual).map(Some)
    }

    /// `conv(act(norm(xs)))` as cuDNN's raw channels-last output [b, p, q, k], without the bias
    /// (for a layer that applies the tail itself: `fused::group_norm_of_conv_tail`); None where
    /// the convolution does not run channels-last.
    pub fn forward_normed_raw(&self, norm: &GroupNorm, act: Activation, xs: &Tensor) -> Result<Option<Tensor>> {
        if !self.channels_last {
            return Ok(None);
        }
        let Some(tokens) = norm.forward_tokens(Some(act), xs)? else { return Ok(None) };
        let (b, c, h, w) = xs.dims4()?;
        crate::profile::scope("conv", || {
            cudnn::conv2d_channels_last(&tokens.reshape((b, h, w, c))?, &self.weight, self.params)
        })
    }

    /// The tail of a channels-last convolution's raw output `ys` [b, p, q, k]: back to NCHW with
    /// the bias, `per_sample` and `residual` as in [`Self::forward_fused`].
    pub fn tail_channels_last(
        &self,
        ys: &Tensor,
        per_sample: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        if let Some(out) = fused::conv_epilogue(ys, &self.bias, per_sample, residual)? {
            return Ok(out);
        }
        let ys = ys.permute((0, 3, 1, 2))?.contiguous()?;
        self.finish(ys, per_sample, residual)
    }

    fn forward_nchw(&self, xs: &Tensor, per_sample: Option<&Tensor>, residual: Option<&Tensor>) -> Result<Tensor> {
        self.finish(self.conv_nchw(xs)?, per_sample, residual)
    }

    /// The convolution on NCHW tensors without the bias: cuDNN's NCHW kernels, or candle's.
    fn conv_nchw(&self, xs: &Tensor) -> Result<Tensor> {
        let Conv2dParams { padding, stride, dilation } = self.params;
        // A channels-last filter where cuDNN cannot run after all: back to [k, c, r, s].
        let weight = match self.channels_last {
            true => self.weight.permute((0, 3, 1, 2))?.contiguous()?,
            false => self.weight.clone(),
        };
        match cudnn::conv2d(xs, &weight, self.params)? {
            Some(ys) => Ok(ys),
            None => xs.conv2d(&weight, padding, stride, dilation, 1),
        }
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
