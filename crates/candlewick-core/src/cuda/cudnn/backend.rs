//! Owned descriptors of cuDNN's backend ("graph") API: create, set attributes, finalize, read
//! attributes back, destroy on drop. Just what a cached convolution plan needs.

use std::ffi::c_void;
use std::fmt::Debug;
use std::ptr::null_mut;

use candle_core::{Error, Result};
use cudarc::cudnn::sys::{
    self, cudnnBackendAttributeName_t as Attr, cudnnBackendAttributeType_t as Type,
    cudnnBackendDescriptorType_t as Kind,
};

/// Turns a cuDNN status into candle's error, naming the call that failed.
pub(super) fn check(status: sys::cudnnStatus_t, what: impl Debug) -> Result<()> {
    status.result().map_err(|e| Error::Msg(format!("cuDNN {what:?}: {e:?}")))
}

pub(super) struct Descriptor(sys::cudnnBackendDescriptor_t);

impl Descriptor {
    pub fn new(kind: Kind) -> Result<Self> {
        let mut raw = null_mut();
        check(unsafe { sys::cudnnBackendCreateDescriptor(kind, &mut raw) }, kind)?;
        Ok(Self(raw))
    }

    pub fn raw(&self) -> sys::cudnnBackendDescriptor_t {
        self.0
    }

    /// Sets an attribute to `values`, whose element type must be the one `ty` names.
    fn set<T>(&mut self, name: Attr, ty: Type, values: &[T]) -> Result<()> {
        let status = unsafe {
            sys::cudnnBackendSetAttribute(self.0, name, ty, values.len() as i64, values.as_ptr() as *const c_void)
        };
        check(status, name)
    }

    pub fn set_i64s(&mut self, name: Attr, values: &[i64]) -> Result<()> {
        self.set(name, Type::CUDNN_TYPE_INT64, values)
    }

    pub fn set_f32(&mut self, name: Attr, value: f32) -> Result<()> {
        self.set(name, Type::CUDNN_TYPE_FLOAT, &[value])
    }

    pub fn set_data_type(&mut self, name: Attr, value: sys::cudnnDataType_t) -> Result<()> {
        self.set(name, Type::CUDNN_TYPE_DATA_TYPE, &[value])
    }

    pub fn set_conv_mode(&mut self, name: Attr, value: sys::cudnnConvolutionMode_t) -> Result<()> {
        self.set(name, Type::CUDNN_TYPE_CONVOLUTION_MODE, &[value])
    }

    pub fn set_heur_mode(&mut self, name: Attr, value: sys::cudnnBackendHeurMode_t) -> Result<()> {
        self.set(name, Type::CUDNN_TYPE_HEUR_MODE, &[value])
    }

    pub fn set_handle(&mut self, name: Attr, handle: sys::cudnnHandle_t) -> Result<()> {
        self.set(name, Type::CUDNN_TYPE_HANDLE, &[handle])
    }

    pub fn set_pointers(&mut self, name: Attr, pointers: &[*mut c_void]) -> Result<()> {
        self.set(name, Type::CUDNN_TYPE_VOID_PTR, pointers)
    }

    /// A text attribute (a plan's JSON) from bytes.
    pub fn set_chars(&mut self, name: Attr, text: &[u8]) -> Result<()> {
        self.set(name, Type::CUDNN_TYPE_CHAR, text)
    }

    pub fn set_descriptors(&mut self, name: Attr, descriptors: &[&Descriptor]) -> Result<()> {
        let raw: Vec<_> = descriptors.iter().map(|d| d.0).collect();
        self.set(name, Type::CUDNN_TYPE_BACKEND_DESCRIPTOR, &raw)
    }

    pub fn finalize(&mut self) -> Result<()> {
        check(unsafe { sys::cudnnBackendFinalize(self.0) }, "finalize")
    }

    /// Reads up to `max` elements of an attribute into `out`; returns how many there were.
    fn get<T>(&self, name: Attr, ty: Type, out: &mut [T]) -> Result<usize> {
        let mut count = 0i64;
        let status = unsafe {
            sys::cudnnBackendGetAttribute(
                self.0,
                name,
                ty,
                out.len() as i64,
                &mut count,
                out.as_mut_ptr() as *mut c_void,
            )
        };
        check(status, name)?;
        Ok(count.max(0) as usize)
    }

    pub fn get_i64(&self, name: Attr) -> Result<i64> {
        let mut value = [0i64];
        self.get(name, Type::CUDNN_TYPE_INT64, &mut value)?;
        Ok(value[0])
    }

    /// A text attribute (a plan's JSON) as bytes: its length asked first, then its contents.
    pub fn get_chars(&self, name: Attr) -> Result<Vec<u8>> {
        let mut count = 0i64;
        let status =
            unsafe { sys::cudnnBackendGetAttribute(self.0, name, Type::CUDNN_TYPE_CHAR, 0, &mut count, null_mut()) };
        check(status, name)?;
        let mut text = vec![0u8; count.max(0) as usize];
        let n = self.get(name, Type::CUDNN_TYPE_CHAR, &mut text)?;
        text.truncate(n);
        Ok(text)
    }

    /// An attribute that holds descriptors of `kind` (heuristics' engine configs, a config's
    /// engine): cuDNN fills descriptors the caller has created, at most `max` of them.
    pub fn get_descriptors(&self, name: Attr, kind: Kind, max: usize) -> Result<Vec<Descriptor>> {
        let mut owned = (0..max).map(|_| Descriptor::new(kind)).collect::<Result<Vec<_>>>()?;
        let mut raw: Vec<_> = owned.iter().map(|d| d.0).collect();
        let n = self.get(name, Type::CUDNN_TYPE_BACKEND_DESCRIPTOR, &mut raw)?;
        owned.truncate(n.min(max));
        Ok(owned)
    }

    /// An engine's numerical notes as raw values (compare with `cudnnBackendNumericalNote_t as
    /// i32`; newer cuDNN versions may report notes this binding has no name for).
    pub fn numerical_notes(&self) -> Result<Vec<i32>> {
        let mut notes = [0i32; 32];
        let n = self.get(Attr::CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, Type::CUDNN_TYPE_NUMERICAL_NOTE, &mut notes)?;
        Ok(notes[..n.min(notes.len())].to_vec())
    }
}

impl Drop for Descriptor {
    fn drop(&mut self) {
        if !self.0.is_null() {
            unsafe { sys::cudnnBackendDestroyDescriptor(self.0) };
        }
    }
}
