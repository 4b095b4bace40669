//! The convolution as a candle op, and this thread's cuDNN handle, plans and workspace.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};

use candle_core::backend::BackendStorage;
use candle_core::cuda::{CudaDType, CudaDevice, CudaStorage, DeviceId};
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape};
use cudarc::cudnn::{result as cudnn_result, sys};
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use half::f16;

use super::backend::check;
use super::plan::{ConvKey, ConvPlan};
use super::Conv2dParams;
use crate::cuda::plan_cache;

/// The convolution; `channels_last`: input [n, h, w, c], filter [k, r, s, c], output [n, p, q, k]
/// (otherwise NCHW, KCRS, NCHW).
pub(super) struct CudnnConv2d {
    pub params: Conv2dParams,
    pub channels_last: bool,
}

impl CustomOp2 for CudnnConv2d {
    fn name(&self) -> &'static str {
        "cudnn-conv2d"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("cuDNN convolution called on CPU tensors")
    }

    fn cuda_fwd(&self, x: &CudaStorage, x_l: &Layout, w: &CudaStorage, w_l: &Layout) -> Result<(CudaStorage, Shape)> {
        if !x_l.is_contiguous() || !w_l.is_contiguous() {
            bail!("cuDNN convolution needs contiguous tensors");
        }
        let ((n, c, h, wd), (k, c_w, r, s)) = match self.channels_last {
            false => (x_l.shape().dims4()?, w_l.shape().dims4()?),
            true => {
                let ((n, h, wd, c), (k, r, s, c_w)) = (x_l.shape().dims4()?, w_l.shape().dims4()?);
                ((n, c, h, wd), (k, c_w, r, s))
            }
        };
        if c != c_w {
            bail!("cuDNN convolution: input has {c} channels, the filter {c_w}");
        }
        let Conv2dParams { padding, stride, dilation } = self.params;
        let out = |size: usize, kernel: usize| {
            (size + 2 * padding).checked_sub(dilation * (kernel - 1) + 1).map(|v| v / stride + 1)
        };
        let (Some(p), Some(q)) = (out(h, r), out(wd, s)) else {
            bail!("cuDNN convolution: a {r}x{s} filter does not fit a {h}x{wd} input padded by {padding}")
        };
        let dims = Dims { x: [n, c, h, wd], w: [k, c, r, s], y: [n, k, p, q] };
        crate::cuda::op::sync_check(x.device(), "before", "cudnn-conv2d")?;
        let storage = match x.dtype() {
            DType::F16 => self.run::<f16>(x, x_l, w, w_l, &dims)?,
            DType::F32 => self.run::<f32>(x, x_l, w, w_l, &dims)?,
            other => bail!("cuDNN convolution: {other:?} tensors are not supported"),
        };
        crate::cuda::op::sync_check(x.device(), "after", "cudnn-conv2d")?;
        let [n, k, p, q] = dims.y;
        Ok((storage, if self.channels_last { Shape::from((n, p, q, k)) } else { Shape::from((n, k, p, q)) }))
    }
}

struct Dims {
    x: [usize; 4],
    w: [usize; 4],
    y: [usize; 4],
}

impl CudnnConv2d {
    fn run<T: CudaDType + cudarc::driver::DeviceRepr>(
        &self,
        x: &CudaStorage,
        x_l: &Layout,
        w: &CudaStorage,
        w_l: &Layout,
        dims: &Dims,
    ) -> Result<CudaStorage> {
        let device = x.device.clone();
        let stream = device.cuda_stream();
        let x_view = x.as_cuda_slice::<T>()?.slice(x_l.start_offset()..);
        let w_view = w.as_cuda_slice::<T>()?.slice(w_l.start_offset()..);
        let mut y = unsafe { device.alloc::<T>(dims.y.iter().product()) }?;
        {
            let (x_ptr, _x_sync) = x_view.device_ptr(&stream);
            let (w_ptr, _w_sync) = w_view.device_ptr(&stream);
            let (y_ptr, _y_sync) = y.device_ptr_mut(&stream);
            let Conv2dParams { padding, stride, dilation } = self.params;
            let i64s = |d: [usize; 4]| d.map(|v| v as i64);
            let key = ConvKey {
                dtype: x.dtype(),
                x: i64s(dims.x),
                w: i64s(dims.w),
                y: i64s(dims.y),
                padding: [padding as i64; 2],
                stride: [stride as i64; 2],
                dilation: [dilation as i64; 2],
                alignment: [alignment(x_ptr), alignment(w_ptr), alignment(y_ptr)],
                tf32: candle_core::cuda::gemm_reduced_precision_f32() || super::tf32_convolutions(),
                channels_last: self.channels_last,
            };
            with_thread_state(&device, |state| {
                let ThreadState { handle, plans, workspace, plan_folder, .. } = state;
                if !plans.contains_key(&key) {
                    let ptrs = [x_ptr, w_ptr, y_ptr].map(|p| p as *mut c_void);
                    let plan = crate::profile::startup_time("cudnn_plans", None, || {
                        choose_plan(*handle, &key, &device, &stream, ptrs, plan_folder.as_deref())
                    })?;
                    plans.insert(key.clone(), plan);
                }
                let plan = &plans[&key];
                // While a CUDA graph is being captured, the workspace is the graph's own (allocated
                // and freed inside it): the shared one may grow, and move, after the capture.
                let mut own_workspace = match own_workspace(&stream) && plan.workspace_bytes > 0 {
                    true => Some(unsafe { device.alloc::<u8>(plan.workspace_bytes) }?),
                    false => None,
                };
                let workspace = match own_workspace.as_mut() {
                    Some(own) => Some(own),
                    None => grow(workspace, &device, plan.workspace_bytes)?,
                };
                let (ws_ptr, _ws_sync) = match workspace {
                    Some(ws) => {
                        let (ptr, sync) = ws.device_ptr_mut(&stream);
                        (ptr as *mut c_void, Some(sync))
                    }
                    None => (std::ptr::null_mut(), None),
                };
                plan.execute(*handle, x_ptr as *mut c_void, w_ptr as *mut c_void, y_ptr as *mut c_void, ws_ptr)
            })?;
        }
        Ok(CudaStorage::wrap_cuda_slice(y, device))
    }
}

/// The largest power of two up to 16 that divides the address.
fn alignment(ptr: u64) -> i64 {
    let mut a = 16i64;
    while a > 1 && ptr % a as u64 != 0 {
        a /= 2;
    }
    a
}

pub(super) struct ThreadState {
    device: DeviceId,
    pub handle: sys::cudnnHandle_t,
    plans: HashMap<ConvKey, ConvPlan>,
    pub workspace: Option<CudaSlice<u8>>,
    /// The fused attention's graphs (`super::sdpa`), one per shape.
    pub attention: super::sdpa::Graphs,
    /// Where plans and graphs built on this device are kept for later processes
    /// (`crate::cuda::plan_cache`); None when that cache is off.
    pub plan_folder: Option<PathBuf>,
}

impl ThreadState {
    fn new(device: &CudaDevice) -> Result<Self> {
        let handle = cudnn_result::create_handle()
            .map_err(|e| candle_core::Error::Msg(format!("cuDNN create handle: {e:?}")))?;
        let stream = device.cuda_stream();
        check(unsafe { sys::cudnnSetStream(handle, stream.cu_stream() as sys::cudaStream_t) }, "set stream")?;
        let attention = super::sdpa::Graphs::new()?;
        // A cached plan is valid for one cuDNN version on one kind of GPU.
        let plan_folder = crate::cuda::op::plan_folder(device, &format!("cudnn{}", unsafe { sys::cudnnGetVersion() }));
        Ok(Self { device: device.id(), handle, plans: HashMap::new(), workspace: None, attention, plan_folder })
    }
}

/// The shape's plan: cuDNN's first choice, or with benchmarking on (`autotune.cudnn` in the thread's `CudaSettings`, as
/// PyTorch's `torch.backends.cudnn.benchmark`) the fastest of its first few choices, timed on the
/// call's own tensors (the output is written again by the caller afterwards). Read from `folder`
/// when an earlier process chose it there, and written there when chosen here.
fn choose_plan(
    handle: sys::cudnnHandle_t,
    key: &ConvKey,
    device: &CudaDevice,
    stream: &Arc<CudaStream>,
    pointers: [*mut c_void; 3],
    folder: Option<&Path>,
) -> Result<ConvPlan> {
    let limit = if super::benchmarking() && !capturing(stream) { BENCHMARK_CANDIDATES } else { 1 };
    let stored_key = (key, limit > 1);
    if let Some(json) = folder.and_then(|folder| plan_cache::read(folder, "conv", &stored_key)) {
        if let Ok(plan) =
            crate::profile::startup_time("cudnn_plans_from_disk", None, || ConvPlan::from_json(handle, &json))
        {
            return Ok(plan);
        }
    }
    let plan = choose_new_plan(handle, key, device, stream, pointers, limit)?;
    if let (Some(folder), Ok(json)) = (folder, plan.json()) {
        plan_cache::write(folder, "conv", &stored_key, &json);
    }
    Ok(plan)
}

fn choose_new_plan(
    handle: sys::cudnnHandle_t,
    key: &ConvKey,
    device: &CudaDevice,
    stream: &Arc<CudaStream>,
    [x, w, y]: [*mut c_void; 3],
    limit: usize,
) -> Result<ConvPlan> {
    let mut candidates = ConvPlan::candidates(handle, key, limit)?;
    if candidates.len() == 1 {
        return Ok(candidates.remove(0));
    }
    let most = candidates.iter().map(|c| c.workspace_bytes).max().unwrap_or(0);
    let mut workspace = if most > 0 { Some(unsafe { device.alloc::<u8>(most) }?) } else { None };
    let fastest = crate::cuda::op::timing::fastest(stream, &candidates, BENCHMARK_RUNS, |candidate| {
        let (ws, _ws_sync) = match workspace.as_mut() {
            Some(ws) => {
                let (ptr, sync) = ws.device_ptr_mut(stream);
                (ptr as *mut c_void, Some(sync))
            }
            None => (std::ptr::null_mut(), None),
        };
        candidate.execute(handle, x, w, y, ws)
    })?;
    Ok(candidates.swap_remove(fastest.unwrap_or(0)))
}

/// Plans timed per shape when benchmarking, and runs of each.
const BENCHMARK_CANDIDATES: usize = 8;
const BENCHMARK_RUNS: usize = 3;

pub(super) use crate::cuda::op::timing::capturing;

/// Whether a call allocates a workspace of its own, given back to the pool when it returns (as
/// PyTorch's caching allocator does): always while a CUDA graph is captured, and by default.
/// `CANDLEWICK_CUDNN_WORKSPACE=shared` keeps one a thread instead, grown to the largest any call
/// asked for: 80 MiB more in use after an SDXL call at batch 4, for no measurable speed (H200,
/// bench/NOTES.md, session 19; the pool makes a stream-ordered allocation cheap).
pub(super) fn own_workspace(stream: &CudaStream) -> bool {
    static SHARED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    capturing(stream)
        || !*SHARED.get_or_init(|| std::env::var("CANDLEWICK_CUDNN_WORKSPACE").is_ok_and(|v| v.trim() == "shared"))
}

/// The thread's workspace, grown to at least `bytes`; None when no workspace is needed.
pub(super) fn grow<'a>(
    slot: &'a mut Option<CudaSlice<u8>>,
    device: &CudaDevice,
    bytes: usize,
) -> Result<Option<&'a mut CudaSlice<u8>>> {
    if bytes == 0 {
        return Ok(None);
    }
    if slot.as_ref().is_none_or(|ws| ws.len() < bytes) {
        *slot = None;
        *slot = Some(unsafe { device.alloc::<u8>(bytes) }?);
    }
    Ok(slot.as_mut())
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        self.plans.clear();
        self.attention.clear();
        unsafe { sys::cudnnDestroy(self.handle) };
    }
}

thread_local! {
    static STATE: RefCell<Option<ThreadState>> = const { RefCell::new(None) };
}

pub(super) fn release_workspace() {
    STATE.with(|cell| {
        if let Some(state) = cell.borrow_mut().as_mut() {
            state.workspace = None;
        }
    });
}

pub(super) fn with_thread_state<R>(device: &CudaDevice, f: impl FnOnce(&mut ThreadState) -> Result<R>) -> Result<R> {
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|s| s.device != device.id()) {
            *slot = None;
            *slot = Some(crate::profile::startup_time("cudnn_handle", None, || ThreadState::new(device))?);
        }
        f(slot.as_mut().expect("state was just set"))
    })
}
