//! Attention, after diffusers' `attention_processor.py`: `Attention` (to_q, to_k, to_v,
//! to_out.0) as `AttnProcessor2_0` runs it, and the attention product itself.
//!
//! Every attention product of the three networks goes through [`scaled_dot_product`] (or its
//! causal twin for CLIP), so a CUDA build can swap in flash attention in one place.

use candle_core::{bail, DType, Result, Tensor};
use candle_nn::{Module, VarBuilder};

use super::linear::{self, Linear};
use super::norm::{group_norm, GroupNorm};
use crate::cuda::{self, fp8, fused};

/// Upper bound on one f32 score block (batch*heads x queries x keys); larger products are
/// computed in blocks, along batch*heads first and then along queries (the VAE's one-head
/// attention over 256x256 latents, 65536 keys, would otherwise make a 17 GB block), to bound memory.
const MAX_SCORE_ELEMENTS: usize = 1 << 27;

/// softmax(q kᵀ / sqrt(head_dim)) v on [batch, heads, seq, head_dim] tensors (keys and values
/// may have another seq length). Matmuls run in the inputs' dtypes (q and k may be f32 while v
/// is f16, for `upcast_attention`); the softmax runs in f32; the result has v's dtype.
pub fn scaled_dot_product(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    attend(q, k, v, false, MAX_SCORE_ELEMENTS)
}

/// [`scaled_dot_product`] where query i sees keys 0..=i only (CLIP's causal mask).
pub fn causal_scaled_dot_product(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    attend(q, k, v, true, MAX_SCORE_ELEMENTS)
}

fn attend(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool, max_block: usize) -> Result<Tensor> {
    let (b, h, sq, d) = q.dims4()?;
    let (kb, kh, sk, kd) = k.dims4()?;
    let (vb, vh, vs, dv) = v.dims4()?;
    if (kb, kh, kd) != (b, h, d) || (vb, vh, vs) != (b, h, sk) {
        bail!("scaled_dot_product: shapes do not match: q {:?}, k {:?}, v {:?}", q.dims(), k.dims(), v.dims());
    }
    if b * h == 0 || d == 0 || sk == 0 {
        bail!("scaled_dot_product: empty batch, heads, head dimension or keys: q {:?}, k {:?}", q.dims(), k.dims());
    }
    let dtype = v.dtype();
    // The affine op writes a contiguous copy, so scaling q first costs no extra copy.
    let q = (q * (1.0 / (d as f64).sqrt()))?.reshape((b * h, sq, d))?;
    let k = k.contiguous()?.reshape((b * h, sk, d))?;
    let v = v.contiguous()?.reshape((b * h, sk, dv))?;
    let mask = if causal { Some(causal_mask(sq, sk, q.device())?) } else { None };
    // Blocks of `heads` batch*heads slices by `rows` queries, at most `max_block` scores each.
    let heads = usize::max(1, max_block / usize::max(1, sq * sk)).min(b * h);
    let rows = if heads > 1 { sq } else { usize::max(1, max_block / sk).min(sq) };
    let block = |start: usize, n: usize, row: usize, m: usize| -> Result<Tensor> {
        let qs = q.narrow(0, start, n)?.narrow(1, row, m)?;
        let (ks, vs) = (k.narrow(0, start, n)?, v.narrow(0, start, n)?);
        let mut scores = qs.matmul(&ks.t()?)?.to_dtype(DType::F32)?;
        if let Some(mask) = &mask {
            scores = scores.broadcast_add(&mask.narrow(0, row, m)?)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
        probs.matmul(&vs)
    };
    let mut outs = Vec::new();
    let mut start = 0;
    while start < b * h {
        let n = usize::min(heads, b * h - start);
        if rows == sq {
            outs.push(block(start, n, 0, sq)?);
        } else {
            let mut parts = Vec::with_capacity(sq.div_ceil(rows));
            let mut row = 0;
            while row < sq {
                let m = usize::min(rows, sq - row);
                parts.push(block(start, n, row, m)?);
                row += m;
            }
            outs.push(Tensor::cat(&parts, 1)?);
        }
        start += n;
    }
    let out = if outs.len() == 1 { outs.remove(0) } else { Tensor::cat(&outs, 0)? };
    out.reshape((b, h, sq, dv))
}

thread_local! {
    /// Causal masks made on this thread, by size and device: made once, so that a captured CUDA
    /// graph (the text encoder's) reads the mask instead of uploading it, which capture forbids.
    static CAUSAL_MASKS: std::cell::RefCell<Vec<((usize, usize), candle_core::Device, Tensor)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// [sq, sk] f32: 0 where key j <= query i, -inf above the diagonal.
fn causal_mask(sq: usize, sk: usize, device: &candle_core::Device) -> Result<Tensor> {
    let cached = CAUSAL_MASKS.with(|m| {
        m.borrow().iter().find(|(size, d, _)| *size == (sq, sk) && d.same_device(device)).map(|e| e.2.clone())
    });
    if let Some(mask) = cached {
        return Ok(mask);
    }
    let data: Vec<f32> =
        (0..sq).flat_map(|i| (0..sk).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    let mask = Tensor::from_vec(data, (sq, sk), device)?;
    CAUSAL_MASKS.with(|m| m.borrow_mut().push(((sq, sk), device.clone(), mask.clone())));
    Ok(mask)
}

/// The text conditioning that cross-attention reads: the text encoder's hidden states
/// [b, seq, cross_attention_dim] and, when the UNet has made them ([`Attention::use_context_index`]),
/// every cross-attention layer's keys and values of them ([b, seq, 2 * inner] each, in the
/// UNet's layer order): the same at every denoising step, so made once a generation instead of
/// once a layer and step.
///
/// It also carries what the UNet reads besides the text, made once a generation as well
/// (`UNet2DConditionModel::condition`): LCM's guidance condition, added to the timestep's
/// projection, and SDXL's added embedding [b, time_embed_dim], added to the time embedding.
#[derive(Debug, Clone)]
pub struct Context {
    pub hidden: Tensor,
    pub keys_values: Vec<Tensor>,
    pub time_condition: Option<Tensor>,
    pub added_embedding: Option<Tensor>,
}

/// The shape of one [`Attention`] layer.
#[derive(Debug, Clone, Copy)]
pub struct AttentionConfig {
    pub query_dim: usize,
    /// Channels of the context for cross-attention; None for self-attention.
    pub cross_attention_dim: Option<usize>,
    pub heads: usize,
    pub dim_head: usize,
    /// Bias on to_q/to_k/to_v.
    pub bias: bool,
    /// (groups, eps) of the `group_norm` the VAE's attention applies first.
    pub group_norm: Option<(usize, f64)>,
    /// Add the input back (the VAE's attention).
    pub residual_connection: bool,
    pub rescale_output_factor: f64,
    /// Compute q kᵀ in f32 when the model runs in f16 (diffusers' `upcast_attention`, set by
    /// SD 2.1, whose scores overflow f16).
    pub upcast_attention: bool,
}

/// diffusers' `Attention` (to_q, to_k, to_v, to_out.0) as run by `AttnProcessor2_0`.
#[derive(Debug, Clone)]
pub struct Attention {
    group_norm: Option<GroupNorm>,
    projections: Projections,
    to_out: Linear,
    heads: usize,
    residual_connection: bool,
    rescale_output_factor: f64,
    upcast_attention: bool,
    /// This layer's entry in [`Context::keys_values`], for a cross-attention layer of a UNet.
    context_index: Option<usize>,
}

impl AttentionConfig {
    /// A transformer block's attention (diffusers' `BasicTransformerBlock`): no bias on
    /// to_q/to_k/to_v, no group norm, residual or rescale of its own.
    pub fn transformer(dim: usize, cross: Option<usize>, heads: usize, dim_head: usize, upcast: bool) -> Self {
        AttentionConfig {
            query_dim: dim,
            cross_attention_dim: cross,
            heads,
            dim_head,
            bias: false,
            group_norm: None,
            residual_connection: false,
            rescale_output_factor: 1.0,
            upcast_attention: upcast,
        }
    }
}

impl Attention {
    pub fn new(vb: VarBuilder, cfg: &AttentionConfig) -> Result<Self> {
        if cfg.heads == 0 || cfg.dim_head == 0 {
            bail!("Attention: heads ({}) and head dim ({}) must be positive", cfg.heads, cfg.dim_head);
        }
        let inner = cfg.heads * cfg.dim_head;
        let group_norm = match cfg.group_norm {
            Some((groups, eps)) => Some(group_norm(vb.pp("group_norm"), groups, cfg.query_dim, eps)?),
            None => None,
        };
        Ok(Self {
            group_norm,
            projections: Projections::new(&vb, cfg.query_dim, cfg.cross_attention_dim, inner, cfg.bias)?,
            to_out: linear::token_linear(inner, cfg.query_dim, vb.pp("to_out").pp("0"))?,
            heads: cfg.heads,
            residual_connection: cfg.residual_connection,
            rescale_output_factor: cfg.rescale_output_factor,
            upcast_attention: cfg.upcast_attention,
            context_index: None,
        })
    }

    /// A cross-attention's key and value projection [2 * inner, cross_attention_dim] (the UNet
    /// keeps it to make [`Context::keys_values`]); None for a self-attention.
    pub fn context_projection(&self) -> Option<&Linear> {
        match &self.projections {
            Projections::Separate { kv, .. } => Some(kv),
            Projections::Stacked(_) => None,
        }
    }

    /// Read keys and values from entry `index` of [`Context::keys_values`] when a context has them.
    pub fn use_context_index(&mut self, index: usize) {
        self.context_index = Some(index);
    }

    /// `xs`: [b, seq, query_dim]; `context`: the text ([`Context::hidden`]: [b, ctx_seq,
    /// cross_attention_dim]) or None for self-attention. The group norm, residual and rescale
    /// apply when configured.
    pub fn forward(&self, xs: &Tensor, context: Option<&Context>) -> Result<Tensor> {
        let normed = match &self.group_norm {
            Some(norm) => norm.forward(&xs.transpose(1, 2)?.contiguous()?)?.transpose(1, 2)?.contiguous()?,
            None => xs.clone(),
        };
        let out = self.attend(Input::Half(&normed), context, None)?;
        self.finish(out, xs)
    }

    /// `residual + forward(xs, context)`, the addition fused into to_out's bias on CUDA (a
    /// transformer block's residual connection).
    pub fn forward_residual(&self, xs: &Tensor, context: Option<&Context>, residual: &Tensor) -> Result<Tensor> {
        if !self.residual_in_to_out() {
            return residual + self.forward(xs, context)?;
        }
        self.attend(Input::Half(xs), context, Some(residual))
    }

    /// The VAE's spatial self-attention: [b, c, h, w] in and out.
    pub fn forward_spatial(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let flat = xs.reshape((b, c, h * w))?;
        let normed = match &self.group_norm {
            Some(norm) => norm.forward(&flat)?,
            None => flat,
        };
        let out = self.attend(Input::Half(&fused::to_tokens(&normed.reshape((b, c, h, w))?)?), None, None)?;
        self.finish(fused::from_tokens(&out, h, w)?, xs)
    }

    /// The layer that reads this attention's input (q/k/v stacked for self-attention, to_q for
    /// cross-attention), when [`Self::forward_residual_quantized`] can take that input quantized.
    pub fn input_projection(&self, cross: bool) -> Option<&Linear> {
        if !self.residual_in_to_out() {
            return None;
        }
        match (cross, &self.projections) {
            (false, Projections::Stacked(qkv)) => Some(qkv),
            (true, Projections::Separate { q, .. }) => Some(q),
            _ => None,
        }
    }

    /// Whether a residual after this layer can be added in to_out's epilogue: no group norm before
    /// the projections, no residual connection or rescale of its own after them.
    fn residual_in_to_out(&self) -> bool {
        self.group_norm.is_none() && !self.residual_connection && self.rescale_output_factor == 1.0
    }

    /// [`Self::forward_residual`] from an input a LayerNorm wrote in e4m3 for
    /// [`Self::input_projection`] (which said it takes it).
    pub fn forward_residual_quantized(
        &self,
        xs: &fp8::Quantized,
        context: Option<&Context>,
        residual: &Tensor,
    ) -> Result<Tensor> {
        self.attend(Input::Fp8(xs), context, Some(residual))
    }

    /// to_q/to_k/to_v, attention over heads, to_out.0 (+ `residual`): [b, seq, query_dim] out.
    fn attend(&self, xs: Input, context: Option<&Context>, residual: Option<&Tensor>) -> Result<Tensor> {
        crate::profile::scope("attention", || self.attend_unprofiled(xs, context, residual))
    }

    fn attend_unprofiled(&self, xs: Input, context: Option<&Context>, residual: Option<&Tensor>) -> Result<Tensor> {
        let to_out = |out: &Tensor| match residual {
            Some(r) => self.to_out.forward_residual(out, r),
            None => self.to_out.forward(out),
        };
        let (q, k, v) = crate::profile::scope("attention_qkv", || self.project(xs, context))?;
        let fused = crate::profile::scope("attention_flash", || cuda::attention(&q, &k, &v))?;
        if let Some(out) = fused {
            let (b, s, h, d) = out.dims4()?;
            return to_out(&out.reshape((b, s, h * d))?);
        }
        let (q, k, v) = (q.transpose(1, 2)?, k.transpose(1, 2)?, v.transpose(1, 2)?);
        let (q, k) = if self.upcast_attention && q.dtype() != DType::F32 {
            (q.to_dtype(DType::F32)?, k.to_dtype(DType::F32)?)
        } else {
            (q, k)
        };
        let out = crate::profile::scope("attention_unfused", || scaled_dot_product(&q, &k, &v))?;
        let (b, h, s, d) = out.dims4()?;
        to_out(&out.transpose(1, 2)?.reshape((b, s, h * d))?)
    }

    /// The residual connection and output rescale.
    fn finish(&self, out: Tensor, input: &Tensor) -> Result<Tensor> {
        let out = if self.residual_connection { (out + input)? } else { out };
        if self.rescale_output_factor == 1.0 {
            Ok(out)
        } else {
            out / self.rescale_output_factor
        }
    }

    /// q, k and v as [b, seq, heads, d] (flash attention's layout), views of one matrix
    /// product's output for self-attention (two for cross-attention: q, then k and v, or q and
    /// this layer's columns of the context's stacked keys and values).
    fn project(&self, xs: Input, context: Option<&Context>) -> Result<(Tensor, Tensor, Tensor)> {
        let (q, kv) = match &self.projections {
            Projections::Stacked(qkv) => {
                let [q, k, v] = self.unstack::<3>(&xs.through(qkv)?)?;
                let Some(c) = context else { return Ok((q, k, v)) };
                // A self-attention given a context anyway reads its keys and values from it.
                let [_, k, v] = self.unstack::<3>(&qkv.forward(&c.hidden)?)?;
                return Ok((q, k, v));
            }
            Projections::Separate { q, kv } => (q, kv),
        };
        let [q] = self.unstack::<1>(&xs.through(q)?)?;
        let kv = match (context, self.context_index) {
            (Some(c), Some(i)) if i < c.keys_values.len() => c.keys_values[i].clone(),
            (Some(c), _) => kv.forward(&c.hidden)?,
            (None, _) => xs.through(kv)?,
        };
        let [k, v] = self.unstack::<2>(&kv)?;
        Ok((q, k, v))
    }

    /// [b, s, N * heads * d] (N projections side by side) -> N views [b, s, heads, d].
    fn unstack<const N: usize>(&self, xs: &Tensor) -> Result<[Tensor; N]> {
        let (b, s, width) = xs.dims3()?;
        let all = xs.reshape((b, s, N, self.heads, width / N / self.heads))?;
        let mut parts = Vec::with_capacity(N);
        for i in 0..N {
            parts.push(all.narrow(2, i, 1)?.squeeze(2)?);
        }
        parts.try_into().map_err(|_| candle_core::Error::Msg("attention: projection split".into()))
    }
}

/// What an attention's projections read: f16 activations, or a LayerNorm's output it wrote in
/// e4m3 for them (`LayerNorm::forward_fp8`).
#[derive(Clone, Copy)]
pub(super) enum Input<'a> {
    Half(&'a Tensor),
    Fp8(&'a fp8::Quantized),
}

impl Input<'_> {
    /// `linear` of this input (bias included).
    pub(super) fn through(self, linear: &Linear) -> Result<Tensor> {
        match self {
            Input::Half(xs) => linear.forward(xs),
            Input::Fp8(xs) => linear.forward_quantized(xs)?.ok_or_else(refused),
        }
    }
}

/// A layer that had said it takes a quantized input and then refused it: a bug, not bad input.
pub(super) fn refused() -> candle_core::Error {
    candle_core::Error::Msg("an FP8 layer refused the quantized input it was given for it".into())
}

/// to_q, to_k and to_v, stacked so that one matrix product makes several of them.
#[derive(Debug, Clone)]
enum Projections {
    /// A self-attention's three, weight [3 * inner, query_dim]: one product over the image's tokens.
    Stacked(Linear),
    /// A cross-attention's to_q (over the image's tokens) and its to_k and to_v, weight
    /// [2 * inner, cross_attention_dim], over the text (f16 under `fp8`: a few rows, once a call).
    Separate { q: Linear, kv: Linear },
}

impl Projections {
    fn new(vb: &VarBuilder, query_dim: usize, cross_dim: Option<usize>, inner: usize, bias: bool) -> Result<Self> {
        let kv_dim = cross_dim.unwrap_or(query_dim);
        let weight = |name: &str, in_dim| vb.pp(name).get((inner, in_dim), "weight");
        let bias_of = |name: &str| if bias { vb.pp(name).get(inner, "bias").map(Some) } else { Ok(None) };
        let (wq, wk, wv) = (weight("to_q", query_dim)?, weight("to_k", kv_dim)?, weight("to_v", kv_dim)?);
        let (bq, bk, bv) = (bias_of("to_q")?, bias_of("to_k")?, bias_of("to_v")?);
        let stack = |parts: &[&Option<Tensor>]| -> Result<Option<Tensor>> {
            match parts.iter().map(|b| b.as_ref()).collect::<Option<Vec<_>>>() {
                Some(bs) => Tensor::cat(&bs, 0).map(Some),
                None => Ok(None),
            }
        };
        if cross_dim.is_some() {
            let kv = Linear::new(Tensor::cat(&[&wk, &wv], 0)?, stack(&[&bk, &bv])?);
            return Ok(Self::Separate { q: Linear::over_tokens(wq, bq)?, kv });
        }
        let qkv = Linear::over_tokens(Tensor::cat(&[&wq, &wk, &wv], 0)?, stack(&[&bq, &bk, &bv])?)?;
        Ok(Self::Stacked(qkv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Blocking along batch*heads and along queries changes no value: the VAE's one-head
    /// attention at 2048x2048 (65536 queries and keys) runs in query blocks on every device.
    #[test]
    fn blocked_attention_equals_one_block() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, sq, sk, d) = (2, 3, 37, 37, 8);
        let q = Tensor::randn(0f32, 1.0, (b, h, sq, d), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (b, h, sk, d), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (b, h, sk, d), &dev)?;
        for causal in [false, true] {
            let whole = attend(&q, &k, &v, causal, usize::MAX)?;
            // 4 slices of heads a block (6 = 4 + 2), one slice in query blocks of 5, of 1 query.
            for max_block in [4 * sq * sk, 5 * sk, sk, 1] {
                let blocked = attend(&q, &k, &v, causal, max_block)?;
                let diff = (&whole - &blocked)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-6, "causal {causal}, block {max_block}: differs by {diff}");
            }
        }
        Ok(())
    }

    /// A self-attention's stacked q/k/v gives what separate to_q and to_k/to_v give (a
    /// cross-attention's layout, made from the same weights): over its own tokens, and given a
    /// context anyway (keys and values then read from the context, as diffusers' `Attention`).
    #[test]
    fn stacked_projections_equal_separate_ones() -> Result<()> {
        let dev = Device::Cpu;
        let (dim, heads, dim_head) = (16, 2, 8);
        let mut weights = std::collections::HashMap::new();
        for (i, name) in ["to_q", "to_k", "to_v", "to_out.0"].iter().enumerate() {
            let w = (Tensor::randn(0f32, 1.0, (dim, dim), &dev)? * (0.2 + 0.1 * i as f64))?;
            weights.insert(format!("{name}.weight"), w);
        }
        weights.insert("to_out.0.bias".to_string(), Tensor::randn(0f32, 1.0, dim, &dev)?);
        let vb = VarBuilder::from_tensors(weights, DType::F32, &dev);
        let cfg = |cross| AttentionConfig::transformer(dim, cross, heads, dim_head, false);
        let (stacked, separate) = (Attention::new(vb.clone(), &cfg(None))?, Attention::new(vb, &cfg(Some(dim)))?);
        assert!(matches!(stacked.projections, Projections::Stacked(_)));
        assert!(matches!(separate.projections, Projections::Separate { .. }));
        let xs = Tensor::randn(0f32, 1.0, (2, 5, dim), &dev)?;
        let context = Context {
            hidden: Tensor::randn(0f32, 1.0, (2, 7, dim), &dev)?,
            keys_values: Vec::new(),
            time_condition: None,
            added_embedding: None,
        };
        for context in [None, Some(&context)] {
            let (a, b) = (stacked.forward(&xs, context)?, separate.forward(&xs, context)?);
            let diff = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "context {}: differs by {diff}", context.is_some());
        }
        let with_context = stacked.forward(&xs, Some(&context))?;
        let own = (&with_context - stacked.forward(&xs, None)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(own > 1e-3, "the context changed nothing");
        Ok(())
    }
}
