//! cuDNN's fused scaled-dot-product attention, through its frontend's graph API (sdpa.cpp, a
//! C interface over the C++ headers): on Hopper its kernels use the tensor-core instructions
//! FlashAttention-2 (written for Ampere) does not, and take SD's head dims 40 and 80 as they
//! are where FlashAttention-2 pads them to 64 and 96.
//!
//! A graph is built per shape and strides on first use (cuDNN compiles its kernel then, a
//! few hundred milliseconds the first time in a process) and cached on the pipeline's thread
//! with the convolution plans; serialized with its kernel into the plan cache on disk
//! (`crate::cuda::plan_cache`), a later process loads it instead of compiling again. A shape
//! cuDNN refuses is remembered, and its calls go to FlashAttention-2.

use std::collections::{HashMap, HashSet};
use std::ffi::{c_char, c_int, c_void, CStr};

use candle_core::backend::BackendStorage;
use candle_core::cuda::{CudaDevice, CudaStorage};
use candle_core::{bail, Device, Layout, Result, Shape, Tensor};
use cudarc::cudnn::sys;
use cudarc::driver::{CudaView, DevicePtr, DevicePtrMut};
use half::f16;

use super::op::{grow, own_workspace, with_thread_state};
use crate::cuda::plan_cache;

extern "C" {
    fn candlewick_sdpa_cache_new() -> *mut c_void;
    fn candlewick_sdpa_cache_free(cache: *mut c_void);
    fn candlewick_sdpa_prepare(
        cache: *mut c_void,
        handle: sys::cudnnHandle_t,
        dims: *const i64,
        strides: *const i64,
        stored: *const u8,
        stored_len: usize,
        workspace: *mut i64,
        built: *mut c_int,
        message: *mut c_char,
        message_len: usize,
    ) -> c_int;
    fn candlewick_sdpa_serialized(
        cache: *mut c_void,
        dims: *const i64,
        strides: *const i64,
        data: *mut *const u8,
        len: *mut usize,
        message: *mut c_char,
        message_len: usize,
    ) -> c_int;
    fn candlewick_sdpa_execute(
        cache: *mut c_void,
        handle: sys::cudnnHandle_t,
        dims: *const i64,
        strides: *const i64,
        q: *mut c_void,
        k: *mut c_void,
        v: *mut c_void,
        o: *mut c_void,
        workspace: *mut c_void,
        message: *mut c_char,
        message_len: usize,
    ) -> c_int;
}

/// One attention's shape as cuDNN sees it: dims (b, h, s_q, s_kv, d) and the strides of q, k,
/// v and the output in (b, h, s, d) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    dims: [i64; 5],
    strides: [[i64; 4]; 4],
}

/// This thread's attention graphs (the C++ cache), the workspace of each shape prepared, and the
/// shapes cuDNN refused.
pub(super) struct Graphs {
    cache: *mut c_void,
    prepared: HashMap<Key, usize>,
    refused: HashSet<Key>,
}

impl Graphs {
    pub fn new() -> Result<Self> {
        let cache = unsafe { candlewick_sdpa_cache_new() };
        if cache.is_null() {
            bail!("cuDNN attention: out of host memory");
        }
        Ok(Self { cache, prepared: HashMap::new(), refused: HashSet::new() })
    }

    /// Frees the graphs (before the cuDNN handle they were built with).
    pub fn clear(&mut self) {
        if !self.cache.is_null() {
            unsafe { candlewick_sdpa_cache_free(self.cache) };
            self.cache = std::ptr::null_mut();
            self.prepared.clear();
        }
    }
}

impl Drop for Graphs {
    fn drop(&mut self) {
        self.clear();
    }
}

/// softmax(q kᵀ / sqrt(d)) v for q [b, s_q, h, d], k and v [b, s_kv, h, d] (views with a dense
/// last dim), f16 on CUDA; None when cuDNN refuses the shape (the caller takes another path).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
    let Device::Cuda(device) = q.device() else { return Ok(None) };
    let (b, s_q, h, d) = q.dims4()?;
    let (_, s_kv, _, _) = k.dims4()?;
    let dense = |t: &Tensor| if t.stride()[3] == 1 { Ok(t.clone()) } else { t.contiguous() };
    let (q, k, v) = (dense(q)?, dense(k)?, dense(v)?);
    // (b, s, h, d) strides to cuDNN's (b, h, s, d) order.
    let order = |t: &Tensor| {
        let s = t.stride();
        [s[0] as i64, s[2] as i64, s[1] as i64, 1]
    };
    let out_strides = [(s_q * h * d) as i64, d as i64, (h * d) as i64, 1];
    let key =
        Key { dims: [b, h, s_q, s_kv, d].map(|v| v as i64), strides: [order(&q), order(&k), order(&v), out_strides] };
    let Some(workspace) = prepare(device, key)? else { return Ok(None) };
    q.apply_op3_no_bwd(&k, &v, &Sdpa { key, workspace }).map(Some)
}

/// Builds (or finds, in this thread or on disk) the shape's graph; its workspace size, or None
/// when cuDNN refuses it.
fn prepare(device: &CudaDevice, key: Key) -> Result<Option<usize>> {
    with_thread_state(device, |state| {
        if state.attention.refused.contains(&key) {
            return Ok(None);
        }
        // Every call after a shape's first: no look-up on disk, nothing across the C interface.
        if let Some(&workspace) = state.attention.prepared.get(&key) {
            return Ok(Some(workspace));
        }
        let stored = state.plan_folder.as_deref().and_then(|folder| plan_cache::read(folder, "sdpa", &key));
        let (stored_ptr, stored_len) = stored.as_deref().map_or((std::ptr::null(), 0), |s| (s.as_ptr(), s.len()));
        let mut workspace = 0i64;
        let mut built: c_int = 0;
        let mut message = [0 as c_char; 512];
        let status = crate::profile::startup_time("cudnn_attention_graphs", None, || {
            Ok::<_, ()>(unsafe {
                candlewick_sdpa_prepare(
                    state.attention.cache,
                    state.handle,
                    key.dims.as_ptr(),
                    key.strides.as_ptr() as *const i64,
                    stored_ptr,
                    stored_len,
                    &mut workspace,
                    &mut built,
                    message.as_mut_ptr(),
                    message.len(),
                )
            })
        })
        .unwrap_or(1);
        if status != 0 {
            // Not an error for the caller: FlashAttention-2 takes this shape. Profiling runs say why.
            if crate::profile::requested() || crate::profile::startup_requested() {
                let why = unsafe { CStr::from_ptr(message.as_ptr()) }.to_string_lossy();
                eprintln!("candlewick: cuDNN attention refused {:?}: {why}", key.dims);
            }
            state.attention.refused.insert(key);
            return Ok(None);
        }
        if let (Some(folder), 1) = (state.plan_folder.as_deref(), built) {
            let (mut data, mut len) = (std::ptr::null(), 0usize);
            let serialized = unsafe {
                candlewick_sdpa_serialized(
                    state.attention.cache,
                    key.dims.as_ptr(),
                    key.strides.as_ptr() as *const i64,
                    &mut data,
                    &mut len,
                    message.as_mut_ptr(),
                    message.len(),
                )
            };
            // Best effort, as the whole cache: a graph the frontend cannot serialize is built
            // again by the next process.
            if serialized == 0 && !data.is_null() {
                plan_cache::write(folder, "sdpa", &key, unsafe { std::slice::from_raw_parts(data, len) });
            }
        }
        let workspace = workspace.max(0) as usize;
        state.attention.prepared.insert(key, workspace);
        Ok(Some(workspace))
    })
}

fn view<'a>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, f16>> {
    Ok(s.as_cuda_slice::<f16>()?.slice(l.start_offset()..))
}

struct Sdpa {
    key: Key,
    workspace: usize,
}

crate::cuda::op::cuda_only_op!(CustomOp3 for Sdpa, "cudnn-sdpa", run, q ql, k kl, v vl);

impl Sdpa {
    fn run(
        &self,
        (q, ql): (&CudaStorage, &Layout),
        (k, kl): (&CudaStorage, &Layout),
        (v, vl): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        let device = q.device().clone();
        let stream = device.cuda_stream();
        let [b, h, s_q, _, d] = self.key.dims.map(|v| v as usize);
        let (qv, kv, vv) = (view(q, ql)?, view(k, kl)?, view(v, vl)?);
        let mut o = unsafe { device.alloc::<f16>(b * s_q * h * d) }?;
        {
            let (q_ptr, _q_sync) = qv.device_ptr(&stream);
            let (k_ptr, _k_sync) = kv.device_ptr(&stream);
            let (v_ptr, _v_sync) = vv.device_ptr(&stream);
            let (o_ptr, _o_sync) = o.device_ptr_mut(&stream);
            with_thread_state(&device, |state| {
                // While a CUDA graph is captured the workspace is the graph's own (see `op`).
                let mut own = match own_workspace(&stream) && self.workspace > 0 {
                    true => Some(unsafe { device.alloc::<u8>(self.workspace) }?),
                    false => None,
                };
                let workspace = match own.as_mut() {
                    Some(own) => Some(own),
                    None => grow(&mut state.workspace, &device, self.workspace)?,
                };
                let (ws_ptr, _ws_sync) = match workspace {
                    Some(ws) => {
                        let (ptr, sync) = ws.device_ptr_mut(&stream);
                        (ptr as *mut c_void, Some(sync))
                    }
                    None => (std::ptr::null_mut(), None),
                };
                let mut message = [0 as c_char; 512];
                let status = unsafe {
                    candlewick_sdpa_execute(
                        state.attention.cache,
                        state.handle,
                        self.key.dims.as_ptr(),
                        self.key.strides.as_ptr() as *const i64,
                        q_ptr as *mut c_void,
                        k_ptr as *mut c_void,
                        v_ptr as *mut c_void,
                        o_ptr as *mut c_void,
                        ws_ptr,
                        message.as_mut_ptr(),
                        message.len(),
                    )
                };
                if status != 0 {
                    bail!("{}", unsafe { CStr::from_ptr(message.as_ptr()) }.to_string_lossy());
                }
                Ok(())
            })?;
        }
        Ok((CudaStorage::wrap_cuda_slice(o, device), Shape::from((b, s_q, h, d))))
    }
}
