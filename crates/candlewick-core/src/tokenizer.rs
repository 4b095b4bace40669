//! STUB (to be replaced): CLIP tokenizer.
use std::path::Path;

use crate::error::Result;

pub struct Encoded {
    pub ids: Vec<u32>,
    pub truncated: Option<String>,
}

pub struct ClipTokenizer;

impl ClipTokenizer {
    pub fn from_folder(_dir: &Path) -> Result<Self> {
        Err(crate::Error::Internal("not written yet".into()))
    }
    pub fn encode(&self, _text: &str) -> Result<Encoded> {
        Err(crate::Error::Internal("not written yet".into()))
    }
    pub fn max_length(&self) -> usize {
        77
    }
}
