//! The tensors a model was built from, kept by name, so that it can be built again with other
//! weights (LoRA fused in, or taken out).
//!
//! [`Recorder`] wraps the backend a model loads from and keeps every tensor it hands out (candle
//! tensors share their storage: the model and the record hold the same memory). A tensor the
//! constructor rewrites on the GPU (the cuDNN channels-last path's 3x3 filters, attention's q/k/v
//! projections concatenated, the resnets' time projections stacked) is not kept: only its shape
//! and dtype are, and a rebuild reads it again from the component's file ([`WeightsSource`], as
//! the f32 VAE is read). Keeping a host copy instead cost a GPU-to-host copy of about half the
//! UNet at every load (SD1.5's ~0.9 GB, SDXL's several) and that much host memory for as long as
//! the pipeline lived. A file changed or removed since the load makes the rebuild fail with the
//! file's name, and the models stay as they were.
//! [`Rebuild`] serves a model's constructor from that record, with a delta added to some tensors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{DType, Device, Shape, Tensor, TensorId};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use super::WeightsSource;
use crate::cuda::settings::{self, ConvolutionPath};

/// Tensors by their diffusers name, as the model's constructor received them.
#[derive(Clone, Default)]
pub struct BaseWeights {
    tensors: Arc<Mutex<HashMap<String, Tensor>>>,
    /// The rewritten tensors' shapes and dtypes as loaded, read again from `source` when needed.
    deferred: Arc<Mutex<HashMap<String, (Shape, DType)>>>,
    source: Option<WeightsSource>,
}

impl BaseWeights {
    /// A tensor kept in memory (None for one the record reads again from the file: a rebuild does).
    pub fn get(&self, name: &str) -> Option<Tensor> {
        self.tensors.lock().ok()?.get(name).cloned()
    }

    /// The tensor's shape, whether it is kept or read again on need.
    pub fn dims(&self, name: &str) -> Option<Vec<usize>> {
        if let Some(t) = self.tensors.lock().ok()?.get(name) {
            return Some(t.dims().to_vec());
        }
        self.deferred.lock().ok()?.get(name).map(|(shape, _)| shape.dims().to_vec())
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tensors.lock().map(|t| t.keys().cloned().collect()).unwrap_or_default();
        names.extend(self.deferred.lock().map(|t| t.keys().cloned().collect::<Vec<_>>()).unwrap_or_default());
        names.sort();
        names
    }

    /// Stop holding the tensors among `ids` (the model dropped them: a UNet's FP8 layers keep
    /// their weights in e4m3 only) and read them again from the file when a rebuild needs them,
    /// as the rewritten ones. Without a file to read they stay.
    pub fn read_again(&self, ids: &[TensorId]) {
        if ids.is_empty() || self.source.is_none() {
            return;
        }
        let (Ok(mut tensors), Ok(mut deferred)) = (self.tensors.lock(), self.deferred.lock()) else { return };
        let names: Vec<String> =
            tensors.iter().filter(|(_, t)| ids.contains(&t.id())).map(|(n, _)| n.clone()).collect();
        for name in names {
            if let Some(t) = tensors.remove(&name) {
                deferred.insert(name, (t.shape().clone(), t.dtype()));
            }
        }
    }

    fn insert(&self, name: &str, tensor: &Tensor, dtype: DType, defer: bool) {
        if defer && self.source.is_some() {
            if let Ok(mut deferred) = self.deferred.lock() {
                deferred.insert(name.to_string(), (tensor.shape().clone(), dtype));
            }
        } else if let Ok(mut tensors) = self.tensors.lock() {
            tensors.insert(name.to_string(), tensor.clone());
        }
    }

    /// A VarBuilder over these tensors, each plus its entry of `deltas` (computed in f32, then cast
    /// to the tensor's dtype), for the model's constructor.
    pub fn rebuild(&self, deltas: HashMap<String, Tensor>, dtype: DType, device: &Device) -> VarBuilder<'static> {
        let rebuild = Rebuild { base: self.clone(), deltas, file: OnceLock::new() };
        VarBuilder::from_backend(Box::new(rebuild), dtype, device.clone())
    }
}

/// A backend that keeps what another hands out, in a [`BaseWeights`].
pub struct Recorder {
    inner: Box<dyn SimpleBackend>,
    record: BaseWeights,
    /// Which tensors are read again from the file rather than kept.
    defer: fn(&str, &Tensor) -> bool,
}

impl Recorder {
    /// `inner` (opened from `source`), recording into a new [`BaseWeights`].
    pub fn wrap(
        inner: Box<dyn SimpleBackend>,
        source: &WeightsSource,
        dtype: DType,
        device: &Device,
    ) -> (VarBuilder<'static>, BaseWeights) {
        Self::wrap_deferring(inner, source, dtype, device, rewritten_at_load)
    }

    fn wrap_deferring(
        inner: Box<dyn SimpleBackend>,
        source: &WeightsSource,
        dtype: DType,
        device: &Device,
        defer: fn(&str, &Tensor) -> bool,
    ) -> (VarBuilder<'static>, BaseWeights) {
        let record = BaseWeights { source: Some(source.clone()), ..BaseWeights::default() };
        let backend = Recorder { inner, record: record.clone(), defer };
        (VarBuilder::from_backend(Box::new(backend), dtype, device.clone()), record)
    }
}

impl SimpleBackend for Recorder {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.inner.get(s, name, h, dtype, dev)?;
        self.record.insert(name, &t, dtype, (self.defer)(name, &t));
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.inner.get_unchecked(name, dtype, dev)?;
        self.record.insert(name, &t, dtype, (self.defer)(name, &t));
        Ok(t)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Whether the model's constructor replaces the GPU tensor `t` by a rewritten copy: the record then
/// reads it again from the file when needed rather than hold it a second time on the GPU.
fn rewritten_at_load(name: &str, t: &Tensor) -> bool {
    let channels_last = settings::current().convolution == ConvolutionPath::CudnnChannelsLast;
    t.device().is_cuda() && rewritten_by_constructor(name, t.dims(), channels_last)
}

/// The tensors the constructors copy into new ones: a kxk filter made channels-last for cuDNN
/// (models/conv.rs), a self-attention's to_q, to_k and to_v concatenated into one projection and a
/// cross-attention's to_k and to_v into another (models/attention_processor.rs `Projections`), the resnets'
/// time_emb_proj stacked into one (models/unet_2d_condition.rs).
fn rewritten_by_constructor(name: &str, dims: &[usize], channels_last: bool) -> bool {
    let filter = channels_last && dims.len() == 4 && dims[2] > 1;
    let concatenated = [".to_q.", ".to_k.", ".to_v.", "time_emb_proj."].iter().any(|p| name.contains(p));
    filter || (concatenated && !name.contains("attn2.to_q."))
}

struct Rebuild {
    base: BaseWeights,
    deltas: HashMap<String, Tensor>,
    /// The component's file, opened on the first deferred tensor (once a rebuild).
    file: OnceLock<candle_core::Result<Box<dyn SimpleBackend>>>,
}

impl Rebuild {
    /// A recorded tensor: kept, or read again from the file (on the host, as loaded).
    fn base(&self, name: &str) -> candle_core::Result<Tensor> {
        let missing = || candle_core::Error::CannotFindTensor { path: name.into() };
        if let Some(t) = self.base.get(name) {
            return Ok(t);
        }
        let (shape, dtype) = self.base.deferred.lock().ok().and_then(|d| d.get(name).cloned()).ok_or_else(missing)?;
        let source = self.base.source.as_ref().ok_or_else(missing)?;
        let file = self.file.get_or_init(|| {
            // The caller names the component's file (weights::with_file): its own errors say only what is wrong.
            source.backend().map_err(|e| {
                candle_core::Error::Msg(match e {
                    crate::error::Error::Model { path, message } if path == source.path => {
                        format!("reading the weights again: {message}")
                    }
                    other => format!("reading the weights again: {other}"),
                })
            })
        });
        match file {
            Ok(file) => file.get(shape, name, Init::Const(0.), dtype, &Device::Cpu),
            Err(e) => Err(candle_core::Error::Msg(e.to_string())),
        }
    }

    fn tensor(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let base = self.base(name)?.to_device(dev)?;
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
        self.base.dims(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::rewritten_by_constructor as rewritten;
    use super::*;

    /// A record that reads "a.to_q.weight" again from its file and keeps "b.weight"; a rebuild
    /// gives both back (the delta added to the first), and fails by name once the file is gone.
    #[test]
    fn deferred_tensors_are_read_again_from_the_file() -> candle_core::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("unet.safetensors");
        let cpu = Device::Cpu;
        let a = Tensor::arange(0f32, 6., &cpu)?.reshape((2, 3))?;
        let b = Tensor::arange(10f32, 14., &cpu)?;
        candle_core::safetensors::save(&HashMap::from([("a.to_q.weight", a.clone()), ("b.weight", b.clone())]), &path)?;
        let source = WeightsSource::file(&path);
        let backend = source.backend().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let (vb, base) =
            Recorder::wrap_deferring(backend, &source, DType::F32, &cpu, |name, _| name.contains(".to_q."));
        vb.get((2, 3), "a.to_q.weight")?;
        vb.get(4, "b.weight")?;
        assert_eq!(base.names(), ["a.to_q.weight", "b.weight"]);
        assert_eq!(base.dims("a.to_q.weight"), Some(vec![2, 3]));
        assert!(base.get("a.to_q.weight").is_none(), "a deferred tensor was kept");

        let delta = Tensor::ones((2, 3), DType::F32, &cpu)?;
        let rebuilt = base.rebuild(HashMap::from([("a.to_q.weight".to_string(), delta.clone())]), DType::F32, &cpu);
        let got = rebuilt.get((2, 3), "a.to_q.weight")?;
        assert_eq!(got.to_vec2::<f32>()?, (a + delta)?.to_vec2::<f32>()?);
        assert_eq!(rebuilt.get(4, "b.weight")?.to_vec1::<f32>()?, b.to_vec1::<f32>()?);

        std::fs::remove_file(&path)?;
        let again = base.rebuild(HashMap::new(), DType::F32, &cpu);
        // As set_loras reports it: the file named once, then what is wrong.
        let e = crate::weights::with_file(&path, || again.get((2, 3), "a.to_q.weight")).unwrap_err().to_string();
        assert_eq!(e.matches("unet.safetensors").count(), 1, "{e}");
        assert!(e.contains("reading the weights again: file not found"), "{e}");
        assert_eq!(again.get(4, "b.weight")?.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
        Ok(())
    }

    /// What a UNet's FP8 layers dropped (`read_again` with their ids) leaves the record and comes
    /// back from the file in a rebuild; the rest stays held, and a record without a file keeps all.
    #[test]
    fn tensors_the_model_dropped_are_let_go_and_read_again() -> candle_core::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("unet.safetensors");
        let cpu = Device::Cpu;
        let (a, b) = (Tensor::arange(0f32, 4., &cpu)?, Tensor::arange(10f32, 12., &cpu)?);
        candle_core::safetensors::save(&HashMap::from([("ff.weight", a.clone()), ("norm.weight", b.clone())]), &path)?;
        let source = WeightsSource::file(&path);
        let backend = source.backend().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let (vb, base) = Recorder::wrap_deferring(backend, &source, DType::F32, &cpu, |_, _| false);
        let (ff, norm) = (vb.get(4, "ff.weight")?, vb.get(2, "norm.weight")?);
        base.read_again(&[ff.id()]);
        assert!(base.get("ff.weight").is_none(), "the dropped tensor is still held");
        assert_eq!(base.get("norm.weight").map(|t| t.id()), Some(norm.id()));
        assert_eq!(base.names(), ["ff.weight", "norm.weight"]);
        assert_eq!(base.dims("ff.weight"), Some(vec![4]));
        let rebuilt = base.rebuild(HashMap::new(), DType::F32, &cpu);
        assert_eq!(rebuilt.get(4, "ff.weight")?.to_vec1::<f32>()?, a.to_vec1::<f32>()?);

        let fileless = BaseWeights::default();
        fileless.insert("ff.weight", &ff, DType::F32, false);
        fileless.read_again(&[ff.id()]);
        assert!(fileless.get("ff.weight").is_some(), "nothing could read it again");
        Ok(())
    }

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
