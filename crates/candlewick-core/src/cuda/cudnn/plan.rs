//! One convolution's cuDNN execution plan: an operation graph with a single forward
//! convolution over packed NCHW tensors (or NHWC ones with a KRSC filter: channels-last), the first engine cuDNN's heuristics rank that our
//! numerical rules accept, finalized once and executed for every call of that shape.

use std::ffi::c_void;

use std::rc::Rc;

use candle_core::{bail, DType, Result};
use cudarc::cudnn::sys::{
    self, cudnnBackendAttributeName_t as Attr, cudnnBackendDescriptorType_t as Kind,
    cudnnBackendNumericalNote_t as Note,
};

use super::backend::{check, Descriptor};

const X: i64 = 1;
const W: i64 = 2;
const Y: i64 = 3;

/// Engines asking for more scratch memory than this are passed over (PyTorch's heuristics
/// path has no such cap; SD1.5's convolutions need far less with the engines cuDNN ranks first).
const MAX_WORKSPACE_BYTES: i64 = 1 << 30;

/// Everything that makes two convolutions need different plans.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ConvKey {
    pub dtype: DType,
    /// Input [n, c, h, w], filter [k, c, r, s], output [n, k, p, q].
    pub x: [i64; 4],
    pub w: [i64; 4],
    pub y: [i64; 4],
    pub padding: [i64; 2],
    pub stride: [i64; 2],
    pub dilation: [i64; 2],
    /// Byte alignment of the input, filter and output pointers (16 at most).
    pub alignment: [i64; 3],
    /// Whether f32 convolutions may run on TF32 tensor cores.
    pub tf32: bool,
    /// Channels-last memory: input and output NHWC, filter KRSC (the dims above stay NCHW/KCRS).
    pub channels_last: bool,
}

pub(super) struct ConvPlan {
    plan: Descriptor,
    /// Descriptors the plan was built from (shared by a shape's candidate plans), kept alive beside
    /// it; none for a plan read back from its JSON.
    _parts: Option<(Rc<Vec<Descriptor>>, Descriptor)>,
    pub workspace_bytes: usize,
}

impl ConvPlan {
    /// Up to `limit` plans for the key's convolution, in the order cuDNN's heuristics rank them
    /// (at least one, or an error).
    pub fn candidates(handle: sys::cudnnHandle_t, key: &ConvKey, limit: usize) -> Result<Vec<Self>> {
        let data_type = match key.dtype {
            DType::F16 => sys::cudnnDataType_t::CUDNN_DATA_HALF,
            DType::F32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            other => bail!("cuDNN convolution: {other:?} tensors are not supported"),
        };
        let x = tensor(X, key.x, data_type, key.alignment[0], key.channels_last)?;
        let w = tensor(W, key.w, data_type, key.alignment[1], key.channels_last)?;
        let y = tensor(Y, key.y, data_type, key.alignment[2], key.channels_last)?;

        let mut conv = Descriptor::new(Kind::CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR)?;
        // f16 convolutions accumulate in f32, as PyTorch's do.
        conv.set_data_type(Attr::CUDNN_ATTR_CONVOLUTION_COMP_TYPE, sys::cudnnDataType_t::CUDNN_DATA_FLOAT)?;
        conv.set_conv_mode(
            Attr::CUDNN_ATTR_CONVOLUTION_CONV_MODE,
            sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        )?;
        conv.set_i64s(Attr::CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, &[2])?;
        conv.set_i64s(Attr::CUDNN_ATTR_CONVOLUTION_DILATIONS, &key.dilation)?;
        conv.set_i64s(Attr::CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, &key.stride)?;
        conv.set_i64s(Attr::CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, &key.padding)?;
        conv.set_i64s(Attr::CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, &key.padding)?;
        conv.finalize()?;

        let mut op = Descriptor::new(Kind::CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR)?;
        op.set_f32(Attr::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, 1.0)?;
        op.set_f32(Attr::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, 0.0)?;
        op.set_descriptors(Attr::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, &[&conv])?;
        op.set_descriptors(Attr::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, &[&x])?;
        op.set_descriptors(Attr::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, &[&w])?;
        op.set_descriptors(Attr::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, &[&y])?;
        op.finalize()?;

        let mut graph = Descriptor::new(Kind::CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR)?;
        graph.set_handle(Attr::CUDNN_ATTR_OPERATIONGRAPH_HANDLE, handle)?;
        graph.set_descriptors(Attr::CUDNN_ATTR_OPERATIONGRAPH_OPS, &[&op])?;
        graph.finalize()?;
        let parts = Rc::new(vec![x, w, y, conv, op, graph]);
        let graph = &parts[5];

        let mut found = Vec::new();
        let mut tried = 0;
        for mode in
            [sys::cudnnBackendHeurMode_t::CUDNN_HEUR_MODE_A, sys::cudnnBackendHeurMode_t::CUDNN_HEUR_MODE_FALLBACK]
        {
            let mut heuristics = Descriptor::new(Kind::CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR)?;
            heuristics.set_descriptors(Attr::CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, &[graph])?;
            heuristics.set_heur_mode(Attr::CUDNN_ATTR_ENGINEHEUR_MODE, mode)?;
            heuristics.finalize()?;
            let configs = heuristics.get_descriptors(
                Attr::CUDNN_ATTR_ENGINEHEUR_RESULTS,
                Kind::CUDNN_BACKEND_ENGINECFG_DESCRIPTOR,
                32,
            )?;
            for config in configs {
                tried += 1;
                if !acceptable(&config, key)? {
                    continue;
                }
                let mut plan = Descriptor::new(Kind::CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR)?;
                plan.set_handle(Attr::CUDNN_ATTR_EXECUTION_PLAN_HANDLE, handle)?;
                plan.set_descriptors(Attr::CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, &[&config])?;
                if plan.finalize().is_err() {
                    continue;
                }
                let workspace = plan.get_i64(Attr::CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE)?;
                if !(0..=MAX_WORKSPACE_BYTES).contains(&workspace) {
                    continue;
                }
                found.push(Self { plan, _parts: Some((parts.clone(), config)), workspace_bytes: workspace as usize });
                if found.len() == limit {
                    return Ok(found);
                }
            }
            if !found.is_empty() {
                return Ok(found);
            }
        }
        bail!("cuDNN has no usable engine for the convolution {key:?} ({tried} engine configs tried)")
    }

    /// The plan as cuDNN serializes it (JSON naming the engine and its knobs), for
    /// [`ConvPlan::from_json`] in a later process.
    pub fn json(&self) -> Result<Vec<u8>> {
        self.plan.get_chars(Attr::CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION)
    }

    /// A plan from the JSON [`ConvPlan::json`] gave, finalized on `handle` without the operation
    /// graph or heuristics; an error when this cuDNN cannot build it.
    pub fn from_json(handle: sys::cudnnHandle_t, json: &[u8]) -> Result<Self> {
        let mut plan = Descriptor::new(Kind::CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR)?;
        plan.set_chars(Attr::CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, json)?;
        plan.set_handle(Attr::CUDNN_ATTR_EXECUTION_PLAN_HANDLE, handle)?;
        plan.finalize()?;
        let workspace = plan.get_i64(Attr::CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE)?;
        if !(0..=MAX_WORKSPACE_BYTES).contains(&workspace) {
            bail!("cuDNN convolution plan from JSON asks for {workspace} bytes of workspace");
        }
        Ok(Self { plan, _parts: None, workspace_bytes: workspace as usize })
    }

    /// Runs the convolution on the handle's stream. The pointers must be device memory of the
    /// key's shapes and dtype; `workspace` at least `workspace_bytes` long (or null if 0).
    pub fn execute(
        &self,
        handle: sys::cudnnHandle_t,
        x: *mut c_void,
        w: *mut c_void,
        y: *mut c_void,
        workspace: *mut c_void,
    ) -> Result<()> {
        let mut pack = Descriptor::new(Kind::CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)?;
        pack.set_i64s(Attr::CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, &[X, W, Y])?;
        pack.set_pointers(Attr::CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, &[x, w, y])?;
        pack.set_pointers(Attr::CUDNN_ATTR_VARIANT_PACK_WORKSPACE, &[workspace])?;
        pack.finalize()?;
        check(unsafe { sys::cudnnBackendExecute(handle, self.plan.raw(), pack.raw()) }, "execute")
    }
}

/// A packed tensor of NCHW dims, stored NCHW or, `channels_last`, NHWC (KRSC for a filter).
fn tensor(
    uid: i64,
    dims: [i64; 4],
    data_type: sys::cudnnDataType_t,
    alignment: i64,
    channels_last: bool,
) -> Result<Descriptor> {
    let [_, c, h, w] = dims;
    let strides = if channels_last { [h * w * c, 1, w * c, c] } else { [c * h * w, h * w, w, 1] };
    let mut t = Descriptor::new(Kind::CUDNN_BACKEND_TENSOR_DESCRIPTOR)?;
    t.set_data_type(Attr::CUDNN_ATTR_TENSOR_DATA_TYPE, data_type)?;
    t.set_i64s(Attr::CUDNN_ATTR_TENSOR_DIMENSIONS, &dims)?;
    t.set_i64s(Attr::CUDNN_ATTR_TENSOR_STRIDES, &strides)?;
    t.set_i64s(Attr::CUDNN_ATTR_TENSOR_UNIQUE_ID, &[uid])?;
    t.set_i64s(Attr::CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, &[alignment])?;
    t.finalize()?;
    Ok(t)
}

/// Engines whose results could differ from run to run (a seed must reproduce its image) or
/// that round inputs down are refused; f32 runs on tensor cores (TF32) only when allowed,
/// as PyTorch's `allow_tf32` filter does.
fn acceptable(config: &Descriptor, key: &ConvKey) -> Result<bool> {
    let engine = config.get_descriptors(Attr::CUDNN_ATTR_ENGINECFG_ENGINE, Kind::CUDNN_BACKEND_ENGINE_DESCRIPTOR, 1)?;
    let Some(engine) = engine.first() else { return Ok(false) };
    let notes = engine.numerical_notes()?;
    let has = |note: Note| notes.contains(&(note as i32));
    if has(Note::CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) || has(Note::CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) {
        return Ok(false);
    }
    Ok(!(key.dtype == DType::F32 && !key.tf32 && has(Note::CUDNN_NUMERICAL_NOTE_TENSOR_CORE)))
}
