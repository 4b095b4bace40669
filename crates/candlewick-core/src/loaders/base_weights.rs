//! The tensors a model was built from, kept by name, so that it can be built again with other
//! weights (LoRA fused in, or taken out) without reading its file again.
//!
//! [`Recorder`] wraps the backend a model loads from and keeps every tensor it hands out (candle
//! tensors share their storage: the model and the record hold the same memory). A tensor the
//! constructor rewrites (the cuDNN channels-last path's 3x3 filters, attention's q/k/v projections
//! concatenated, the resnets' time projections stacked) is kept in host memory instead, so the GPU
//! does not hold it twice (SDXL's attention projections alone are 1.2 GiB in f16).
//! [`Rebuild`] serves a model's constructor from that record, with a delta added to some tensors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::cuda::settings::{self, ConvolutionPath};

/// Tensors by their diffusers name, as the model's constructor received them.
#[derive(Clone, Default)]
pub struct BaseWeights {
    tensors: Arc<Mutex<HashMap<String, Tensor>>>,
}

impl BaseWeights {
    pub fn get(&self, name: &str) -> Option<Tensor> {
        self.tensors.lock().ok()?.get(name).cloned()
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tensors.lock().map(|t| t.keys().cloned().collect()).unwrap_or_default();
        names.sort();
        names
    }

    fn insert(&self, name: &str, tensor: &Tensor) -> candle_core::Result<()> {
        let kept = if rewritten_at_load(name, tensor) { tensor.to_device(&Device::Cpu)? } else { tensor.clone() };
        if let Ok(mut tensors) = self.tensors.lock() {
            tensors.insert(name.to_string(), kept);
        }
        Ok(())
    }

    /// A VarBuilder over these tensors, each plus its entry of `deltas` (computed in f32, then cast
    /// to the tensor's dtype), for the model's constructor.
    pub fn rebuild(&self, deltas: HashMap<String, Tensor>, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(Rebuild { base: self.clone(), deltas }), dtype, device.clone())
    }
}

/// A backend that keeps what another hands out, in a [`BaseWeights`].
pub struct Recorder {
    inner: Box<dyn SimpleBackend>,
    record: BaseWeights,
}

impl Recorder {
    /// `vb`'s backend, recording into a new [`BaseWeights`].
    pub fn wrap(inner: Box<dyn SimpleBackend>, dtype: DType, device: &Device) -> (VarBuilder<'static>, BaseWeights) {
        let record = BaseWeights::default();
        let backend = Recorder { inner, record: record.clone() };
        (VarBuilder::from_backend(Box::new(backend), dtype, device.clone()), record)
    }
}

impl SimpleBackend for Recorder {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.inner.get(s, name, h, dtype, dev)?;
        self.record.insert(name, &t)?;
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.inner.get_unchecked(name, dtype, dev)?;
        self.record.insert(name, &t)?;
        Ok(t)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Whether the model's constructor replaces the GPU tensor `t` by a rewritten copy: the record then
/// keeps it in host memory, not a second time on the GPU.
fn rewritten_at_load(name: &str, t: &Tensor) -> bool {
    let channels_last = settings::current().convolution == ConvolutionPath::CudnnChannelsLast;
    t.device().is_cuda() && rewritten_by_constructor(name, t.dims(), channels_last)
}

/// The tensors the constructors copy into new ones: a kxk filter made channels-last for cuDNN
/// (models/conv.rs), a self-attention's to_q, to_k and to_v concatenated into one projection and a
/// cross-attention's to_k and to_v into another (models/attention.rs `Projections`), the resnets'
/// time_emb_proj stacked into one (models/unet_2d_condition.rs).
fn rewritten_by_constructor(name: &str, dims: &[usize], channels_last: bool) -> bool {
    let filter = channels_last && dims.len() == 4 && dims[2] > 1;
    let concatenated = [".to_q.", ".to_k.", ".to_v.", "time_emb_proj."].iter().any(|p| name.contains(p));
    filter || (concatenated && !name.contains("attn2.to_q."))
}

struct Rebuild {
    base: BaseWeights,
    deltas: HashMap<String, Tensor>,
}

impl Rebuild {
    fn tensor(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let base = self.base.get(name).ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.into() })?;
        let base = base.to_device(dev)?;
        let t = match self.deltas.get(name) {
            Some(delta) => (base.to_dtype(DType::F32)? + delta.to_device(dev)?.to_dtype(DType::F32)?)?,
            None => base,
        };
        t.to_dtype(dtype)
    }
}

impl SimpleBackend for Rebuild {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.tensor(name, dtype, dev)?;
        if t.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: t.shape().clone(),
            });
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.tensor(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.base.get(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::rewritten_by_constructor as rewritten;

    #[test]
    fn the_tensors_constructors_copy_are_the_ones_kept_on_the_host() {
        let block = "down_blocks.1.attentions.0.transformer_blocks.0";
        for part in ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn2.to_k", "attn2.to_v"] {
            assert!(rewritten(&format!("{block}.{part}.weight"), &[640, 640], false), "{part}");
        }
        assert!(rewritten("down_blocks.1.resnets.0.time_emb_proj.bias", &[640], false));
        assert!(rewritten("mid_block.resnets.0.conv1.weight", &[1280, 1280, 3, 3], true));
        // Used as loaded: the cross-attention's queries, the output projections, 1x1 filters,
        // filters on NCHW paths, the text encoders' projections.
        assert!(!rewritten(&format!("{block}.attn2.to_q.weight"), &[640, 640], false));
        assert!(!rewritten(&format!("{block}.attn1.to_out.0.weight"), &[640, 640], false));
        assert!(!rewritten("down_blocks.1.resnets.0.conv_shortcut.weight", &[640, 320, 1, 1], true));
        assert!(!rewritten("mid_block.resnets.0.conv1.weight", &[1280, 1280, 3, 3], false));
        assert!(!rewritten("text_model.encoder.layers.0.self_attn.q_proj.weight", &[768, 768], false));
    }
}
