//! The tensors a model was built from, kept by name, so that it can be built again with other
//! weights (LoRA fused in, or taken out) without reading its file again.
//!
//! [`Recorder`] wraps the backend a model loads from and keeps every tensor it hands out (candle
//! tensors share their storage: the model and the record hold the same memory). A tensor the
//! constructor rewrites (the cuDNN channels-last path's 3x3 filters) is kept in host memory instead,
//! so the GPU does not hold it twice.
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
        let kept = if rewritten_at_load(tensor) { tensor.to_device(&Device::Cpu)? } else { tensor.clone() };
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

/// Whether the model's constructor replaces `t` by a rewritten copy (a kxk filter made channels-last
/// for cuDNN, models/conv.rs): the record then keeps it in host memory, not a second time on the GPU.
fn rewritten_at_load(t: &Tensor) -> bool {
    t.device().is_cuda()
        && t.rank() == 4
        && t.dims()[2] > 1
        && settings::current().convolution == ConvolutionPath::CudnnChannelsLast
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
