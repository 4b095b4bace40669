//! A safetensors file checked before any tensor is read, and read one tensor at a time.
//!
//! [`SafetensorsFile::parse`] runs the safetensors crate's own checks (`SafeTensors::read_metadata`:
//! the header length against the file and its 100 MB limit, the JSON, every tensor's offsets
//! back to back, each span equal to shape x dtype, the last one ending at the file's end) and,
//! when one fails, says which tensor and what is wrong. Nothing is allocated from a number in the
//! header before those checks pass, so no allocation is larger than the file.
//!
//! As a candle `SimpleBackend` it then hands out tensors that a model asks for by name, checking
//! the shape before reading any data and refusing non-float tensors (an i64 weight is an error,
//! not a silent cast).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The bytes before the JSON header: its length, a little-endian u64.
const N_LEN: usize = 8;
/// safetensors' limit on the JSON header (`MAX_HEADER_SIZE` in the safetensors crate).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// A whole safetensors file in memory (memory-mapped or a byte buffer), its header checked.
pub struct SafetensorsFile<B> {
    path: PathBuf,
    buffer: B,
    /// Where tensor data starts: 8 + the header's length.
    data_start: usize,
    metadata: Metadata,
}

impl<B: AsRef<[u8]>> SafetensorsFile<B> {
    /// Check the header of `buffer` (the contents of `path`). Errors name `path` and what is wrong.
    pub fn parse(path: &Path, buffer: B) -> Result<Self> {
        let bytes = buffer.as_ref();
        match SafeTensors::read_metadata(bytes) {
            Ok((header_len, metadata)) => {
                Ok(Self { path: path.to_path_buf(), data_start: N_LEN + header_len, buffer, metadata })
            }
            Err(e) => Err(Error::model(path, describe(&e, bytes))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A tensor's stored shape, if the file has it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.metadata.info(name).map(|info| info.shape.as_slice())
    }

    /// A tensor's stored dtype, if the file has it and it is a float dtype.
    pub fn dtype(&self, name: &str) -> Option<DType> {
        self.metadata.info(name).and_then(|info| float_dtype(name, info).ok())
    }

    /// A `__metadata__` entry of the header (free text the writer chose).
    pub fn user_metadata(&self, key: &str) -> Option<&str> {
        self.metadata.metadata().as_ref()?.get(key).map(String::as_str)
    }

    /// Tensor names, in file order.
    pub fn names(&self) -> Vec<String> {
        self.metadata.offset_keys()
    }

    /// The tensor `name` as a candle tensor of `dtype` on `device`, after checking that it exists,
    /// has `shape` (when given) and holds floats. Errors name the tensor (the caller adds the file).
    pub fn tensor(
        &self,
        name: &str,
        shape: Option<&Shape>,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let info =
            self.metadata.info(name).ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.into() })?;
        if let Some(shape) = shape {
            if info.shape.as_slice() != shape.dims() {
                return Err(candle_core::Error::UnexpectedShape {
                    msg: format!("shape mismatch for {name}"),
                    expected: shape.clone(),
                    got: Shape::from(info.shape.clone()),
                });
            }
        }
        let stored = float_dtype(name, info)?;
        let data = self.data(name, info)?;
        let tensor = match crate::cuda::upload::tensor(data, stored, &info.shape, device)? {
            Some(tensor) => tensor,
            None => Tensor::from_raw_buffer(data, stored, &info.shape, device)?,
        };
        tensor.to_dtype(dtype)
    }

    /// The tensor's bytes. `parse` has checked the offsets; this checks again rather than index.
    fn data(&self, name: &str, info: &TensorInfo) -> candle_core::Result<&[u8]> {
        let (start, end) = info.data_offsets;
        let span = self.data_start.checked_add(start).zip(self.data_start.checked_add(end));
        span.and_then(|(s, e)| self.buffer.as_ref().get(s..e)).ok_or_else(|| {
            candle_core::Error::Msg(format!("tensor {name}: data_offsets [{start}, {end}] are outside the file"))
        })
    }
}

/// The candle dtype of a stored tensor, if it is a float one.
fn float_dtype(name: &str, info: &TensorInfo) -> candle_core::Result<DType> {
    match info.dtype {
        Dtype::F16 => Ok(DType::F16),
        Dtype::BF16 => Ok(DType::BF16),
        Dtype::F32 => Ok(DType::F32),
        Dtype::F64 => Ok(DType::F64),
        other => Err(candle_core::Error::Msg(format!(
            "tensor {name} is stored as {other:?}; model weights must be F32, F16, BF16 or F64 (an integer tensor is not converted)"
        ))),
    }
}

impl<B: AsRef<[u8]> + Send + Sync> SimpleBackend for SafetensorsFile<B> {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.tensor(name, Some(&s), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.tensor(name, None, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.metadata.info(name).is_some()
    }
}

/// What is wrong with a file that safetensors refused, in words a user can act on.
fn describe(e: &SafeTensorError, bytes: &[u8]) -> String {
    let file_len = bytes.len();
    let header_len = bytes.get(..N_LEN).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; N_LEN])));
    match (e, header_len) {
        (SafeTensorError::HeaderTooSmall, _) => format!(
            "is not a safetensors file: it has {file_len} bytes, fewer than the 8 that give the header's length"
        ),
        (SafeTensorError::HeaderTooLarge, Some(n)) => format!(
            "is not a valid safetensors file: its header length is {n} bytes, over safetensors' limit of {MAX_HEADER_BYTES}"
        ),
        (SafeTensorError::InvalidHeaderLength, Some(n)) => format!(
            "is truncated or not a safetensors file: its header length ({n} bytes) goes past the end of the file ({file_len} bytes)"
        ),
        (SafeTensorError::InvalidHeader(_), _)
        | (SafeTensorError::InvalidHeaderStart, _)
        | (SafeTensorError::InvalidHeaderDeserialization(_), _)
        | (SafeTensorError::JsonError(_), _) => format!("has a malformed safetensors header: {e}"),
        (SafeTensorError::InvalidOffset(name), _) => format!(
            "tensor {name}: its data_offsets overlap another tensor's or leave a gap (safetensors stores tensors back to back from 0)"
        ),
        (SafeTensorError::TensorInvalidInfo, Some(n)) | (SafeTensorError::MetadataIncompleteBuffer, Some(n)) => {
            diagnose_spans(bytes, n).unwrap_or_else(|| format!("is not a valid safetensors file: {e}"))
        }
        (SafeTensorError::ValidationOverflow, _) => {
            "is not a valid safetensors file: a tensor's shape is too large (its size overflows)".into()
        }
        _ => format!("is not a valid safetensors file: {e}"),
    }
}

/// For a header whose offsets do not fit the tensors or the file: which tensor, or how many bytes
/// are missing. Reads the header (already known to lie inside the file) as plain JSON.
fn diagnose_spans(bytes: &[u8], header_len: u64) -> Option<String> {
    let header_end = N_LEN.checked_add(usize::try_from(header_len).ok()?)?;
    let header: Map<String, Value> = serde_json::from_slice(bytes.get(N_LEN..header_end)?).ok()?;
    let mut data_len = 0u64;
    for (name, entry) in header.iter().filter(|(name, _)| name.as_str() != "__metadata__") {
        let offsets = entry.get("data_offsets")?.as_array()?;
        let (start, end) = (offsets.first()?.as_u64()?, offsets.get(1)?.as_u64()?);
        let dtype: Dtype = serde_json::from_value(entry.get("dtype")?.clone()).ok()?;
        let shape = entry.get("shape")?.as_array()?;
        let elements = shape.iter().try_fold(1u64, |n, d| n.checked_mul(d.as_u64()?))?;
        let needed = elements.checked_mul(dtype.bitsize() as u64)? / 8;
        if end.checked_sub(start) != Some(needed) {
            let dims: Vec<u64> = shape.iter().filter_map(Value::as_u64).collect();
            return Some(format!(
                "tensor {name}: shape {dims:?} of {dtype:?} takes {needed} bytes but its data_offsets [{start}, {end}] span {}",
                end.saturating_sub(start)
            ));
        }
        data_len = data_len.max(end);
    }
    let present = (bytes.len() as u64).saturating_sub(header_end as u64);
    Some(if present < data_len {
        format!(
            "is truncated: its header describes {data_len} bytes of tensor data but only {present} follow the header"
        )
    } else {
        format!(
            "has {} bytes after the last tensor's data (the header describes {data_len} bytes, {present} follow it)",
            present - data_len
        )
    })
}
