//! cuBLASLt plans for [`super::linear`] and [`super::pointwise_conv_plus`]: one a product's shape
//! and epilogue ([`Key`]), its descriptors and the algorithm chosen for it (heuristics' first, or
//! the fastest of a few when tuning, or the plan cache's from an earlier process), made once on
//! the pipeline thread and run on the device's stream.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::size_of;
use std::path::PathBuf;

use candle_core::cuda::cudarc::cublaslt::{result as lt, sys};
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut};
use candle_core::cuda::{CudaDevice, DeviceId};
use candle_core::{bail, Result};

use crate::cuda::op::timing::{self, capturing};
use crate::cuda::plan_cache;

fn lt_error(e: lt::CublasError) -> candle_core::Error {
    candle_core::Error::Msg(format!("cuBLASLt: {e:?}"))
}

/// cuBLASLt's recommended workspace on Hopper.
const WORKSPACE_BYTES: usize = 32 << 20;

/// The plan for `key` (made on first use), run on the device's stream.
/// `scales`: with FP8, the device addresses of A's (the weight's) and B's (the input's) scales.
pub(super) fn run_plan(
    device: &CudaDevice,
    key: Key,
    xwy: [u64; 3],
    residual: Option<u64>,
    bias: Option<u64>,
    scales: Option<[u64; 2]>,
) -> Result<()> {
    let stream = device.cuda_stream();
    with_thread_state(device, |state| {
        let ThreadState { handle, plans, workspace, plan_folder, .. } = state;
        let (ws_ptr, _ws_sync) = workspace.device_ptr_mut(&stream);
        let cu_stream = stream.cu_stream() as sys::cudaStream_t;
        if !plans.contains_key(&key) {
            // The algorithm an earlier process chose for this shape (and tuning), when the
            // plan cache has it and cuBLASLt still takes it; else heuristics (and tuning).
            let tuned = super::benchmarking() && !capturing(&stream);
            let stored_key = (&key, tuned);
            let stored = plan_folder.as_deref().and_then(|f| plan_cache::read(f, "cublaslt", &stored_key));
            let (mut plan, from_disk) = crate::profile::startup_time("cublaslt_plans", None, || {
                Plan::new(*handle, key, stored.as_deref().and_then(algo_from_bytes))
            })?;
            if !from_disk {
                if tuned {
                    plan.tune(*handle, &stream, xwy, residual, bias, scales, ws_ptr)?;
                }
                if let Some(folder) = plan_folder.as_deref() {
                    plan_cache::write(folder, "cublaslt", &stored_key, &algo_bytes(&plan.algo));
                }
            }
            plans.insert(key, plan);
        }
        plans[&key].run(*handle, xwy, residual, bias, scales, ws_ptr, cu_stream)
    })
}

/// One product's shape: m rows of xs, n outputs, k inputs, and which epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub(super) m: u64,
    pub(super) n: u64,
    pub(super) k: u64,
    pub(super) bias: bool,
    pub(super) residual: bool,
    /// A 1x1 convolution on NCHW tensors (`super::pointwise_conv_plus`) of this many samples: m is
    /// then the pixels, the output m x n column-major a sample, the weight not transposed.
    pub(super) nchw_batch: Option<u64>,
    /// A (the weight) and B (xs) in e4m3, each with its scale (fast accumulation).
    pub(super) fp8: bool,
}

/// A shape's descriptors and the algorithm cuBLASLt's heuristics chose for it (or, when
/// benchmarking, the fastest of their first few), made once.
/// cuBLASLt is column-major: for a linear layer, the row-major [m, n] output is a
/// column-major n x m matrix D = op(A) · B with A the weight (k x n column-major, transposed)
/// and B xs (k x m); for a 1x1 convolution on NCHW tensors, A is xs and B the weight.
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    /// Layouts of A, B and C = D.
    layouts: [sys::cublasLtMatrixLayout_t; 3],
    algo: sys::cublasLtMatmulAlgo_t,
    bias: bool,
    residual: bool,
    fp8: bool,
    /// A is xs (a 1x1 convolution on NCHW tensors) rather than the weight.
    xs_first: bool,
}

impl Plan {
    /// The plan for `key` with the `stored` algorithm when cuBLASLt accepts it for this shape
    /// and workspace (then `true`), else heuristics' first choice.
    fn new(handle: sys::cublasLtHandle_t, key: Key, stored: Option<sys::cublasLtMatmulAlgo_t>) -> Result<(Self, bool)> {
        let desc =
            lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, sys::cudaDataType_t::CUDA_R_32F)
                .map_err(lt_error)?;
        let mut plan = Self {
            desc,
            layouts: [std::ptr::null_mut(); 3],
            algo: unsafe { std::mem::zeroed() },
            bias: key.bias,
            residual: key.residual,
            fp8: key.fp8,
            xs_first: key.nchw_batch.is_some(),
        };
        let half = sys::cudaDataType_t::CUDA_R_16F;
        let inputs = if key.fp8 { sys::cudaDataType_t::CUDA_R_8F_E4M3 } else { half };
        if let Some(batch) = key.nchw_batch {
            // D (m x n) = A (m x k: xs, the sample's pixels x channels) · B (k x n: the
            // weight [n, k] row-major) + C; A, C and D step a sample at a time, B stays.
            plan.layouts[0] = lt::create_matrix_layout(half, key.m, key.k, key.m as i64).map_err(lt_error)?;
            plan.layouts[1] = lt::create_matrix_layout(half, key.k, key.n, key.k as i64).map_err(lt_error)?;
            plan.layouts[2] = lt::create_matrix_layout(half, key.m, key.n, key.m as i64).map_err(lt_error)?;
            for (layout, stride) in plan.layouts.into_iter().zip([key.m * key.k, 0, key.m * key.n]) {
                unsafe { batch_layout(layout, batch as i32, stride as i64)? };
            }
        } else {
            plan.layouts[0] = lt::create_matrix_layout(inputs, key.k, key.n, key.k as i64).map_err(lt_error)?;
            plan.layouts[1] = lt::create_matrix_layout(inputs, key.k, key.m, key.k as i64).map_err(lt_error)?;
            plan.layouts[2] = lt::create_matrix_layout(half, key.n, key.m, key.n as i64).map_err(lt_error)?;
        }
        let transpose: i32 = key.nchw_batch.is_none() as i32;
        let epilogue = if key.bias {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
        } else {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT
        };
        unsafe {
            plan.set(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA, &transpose)?;
            plan.set(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue)?;
            if key.fp8 {
                let (fast, bias_type) = (1i8, half);
                plan.set(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast)?;
                plan.set(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type)?;
            }
        }
        if let Some(algo) = stored.filter(|algo| plan.accepts(handle, algo)) {
            plan.algo = algo;
            return Ok((plan, true));
        }
        let chosen = plan.candidates(handle, 1)?;
        plan.algo = *chosen
            .first()
            .ok_or_else(|| lt_error(lt::CublasError(sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED)))?;
        Ok((plan, false))
    }

    /// Whether cuBLASLt can run `algo` for this plan's shape within the workspace.
    fn accepts(&self, handle: sys::cublasLtHandle_t, algo: &sys::cublasLtMatmulAlgo_t) -> bool {
        let mut result: sys::cublasLtMatmulHeuristicResult_t = unsafe { std::mem::zeroed() };
        let [a, b, c] = self.layouts;
        let status = unsafe { sys::cublasLtMatmulAlgoCheck(handle, self.desc, a, b, c, c, algo, &mut result) };
        status == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS && result.workspaceSize <= WORKSPACE_BYTES
    }

    /// Times cuBLASLt's first few algorithms for this shape on the call's own tensors (the
    /// output is written again by the caller afterwards) and keeps the fastest.
    fn tune(
        &mut self,
        handle: sys::cublasLtHandle_t,
        stream: &std::sync::Arc<CudaStream>,
        xwy: [u64; 3],
        residual: Option<u64>,
        bias: Option<u64>,
        scales: Option<[u64; 2]>,
        workspace: u64,
    ) -> Result<()> {
        let candidates = self.candidates(handle, TUNE_CANDIDATES)?;
        if candidates.len() < 2 {
            return Ok(());
        }
        let cu_stream = stream.cu_stream() as sys::cudaStream_t;
        let fastest = timing::fastest(stream, &candidates, TUNE_RUNS, |algo| {
            self.algo = *algo;
            self.run(handle, xwy, residual, bias, scales, workspace, cu_stream)
        })?;
        self.algo = candidates[fastest.unwrap_or(0)];
        Ok(())
    }

    /// cuBLASLt's heuristics' first `count` algorithms for this plan's shape.
    fn candidates(&self, handle: sys::cublasLtHandle_t, count: usize) -> Result<Vec<sys::cublasLtMatmulAlgo_t>> {
        let pref = lt::create_matmul_pref().map_err(lt_error)?;
        let bytes = WORKSPACE_BYTES as u64;
        let mut results: Vec<sys::cublasLtMatmulHeuristicResult_t> = vec![unsafe { std::mem::zeroed() }; count];
        let mut found = 0i32;
        let [a, b, c] = self.layouts;
        let status = unsafe {
            lt::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&bytes) as *const u64 as *const c_void,
                size_of::<u64>(),
            )
            .and_then(|_| {
                sys::cublasLtMatmulAlgoGetHeuristic(
                    handle,
                    self.desc,
                    a,
                    b,
                    c,
                    c,
                    pref,
                    count as i32,
                    results.as_mut_ptr(),
                    &mut found,
                )
                .result()
            })
        };
        unsafe {
            let _ = lt::destroy_matmul_pref(pref);
        }
        status.map_err(lt_error)?;
        Ok(results
            .into_iter()
            .take(found.max(0) as usize)
            .filter(|r| r.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS)
            .map(|r| r.algo)
            .collect())
    }

    unsafe fn set<T>(&self, attr: sys::cublasLtMatmulDescAttributes_t, value: &T) -> Result<()> {
        lt::set_matmul_desc_attribute(self.desc, attr, value as *const T as *const c_void, size_of::<T>())
            .map_err(lt_error)
    }

    fn run(
        &self,
        handle: sys::cublasLtHandle_t,
        [x, w, y]: [u64; 3],
        residual: Option<u64>,
        bias: Option<u64>,
        scales: Option<[u64; 2]>,
        workspace: u64,
        stream: sys::cudaStream_t,
    ) -> Result<()> {
        if self.bias != bias.is_some() || self.residual != residual.is_some() || self.fp8 != scales.is_some() {
            bail!("cuBLASLt linear: plan and call disagree on the epilogue");
        }
        let alpha = 1f32;
        let beta = if residual.is_some() { 1f32 } else { 0f32 };
        let [a, b, c] = self.layouts;
        unsafe {
            if let Some(bias) = bias {
                self.set(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias)?;
            }
            if let Some([a_scale, b_scale]) = scales {
                self.set(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale)?;
                self.set(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale)?;
            }
            let (first, second) = if self.xs_first { (x, w) } else { (w, x) };
            lt::matmul(
                handle,
                self.desc,
                (&alpha) as *const f32 as *const c_void,
                (&beta) as *const f32 as *const c_void,
                first as *const c_void,
                a,
                second as *const c_void,
                b,
                residual.unwrap_or(y) as *const c_void,
                c,
                y as *mut c_void,
                c,
                &self.algo,
                workspace as *mut c_void,
                WORKSPACE_BYTES,
                stream,
            )
            .map_err(lt_error)
        }
    }
}

/// Algorithms timed per shape when tuning, and runs of each.
const TUNE_CANDIDATES: usize = 8;
const TUNE_RUNS: usize = 5;

/// Makes `layout` a strided batch of `count` matrices `stride` elements apart.
unsafe fn batch_layout(layout: sys::cublasLtMatrixLayout_t, count: i32, stride: i64) -> Result<()> {
    use sys::cublasLtMatrixLayoutAttribute_t::{
        CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
    };
    lt::set_matrix_layout_attribute(
        layout,
        CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
        (&count) as *const i32 as *const c_void,
        size_of::<i32>(),
    )
    .map_err(lt_error)?;
    lt::set_matrix_layout_attribute(
        layout,
        CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
        (&stride) as *const i64 as *const c_void,
        size_of::<i64>(),
    )
    .map_err(lt_error)
}

impl Drop for Plan {
    fn drop(&mut self) {
        unsafe {
            for layout in self.layouts.into_iter().filter(|l| !l.is_null()) {
                let _ = lt::destroy_matrix_layout(layout);
            }
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

/// The pipeline thread's cuBLASLt handle, workspace and plans (as `cuda::cudnn`'s: each
/// pipeline runs on a thread of its own, and its CUDA graphs capture this workspace, which
/// never moves or grows), and the plan cache's folder for this device (None when it is off).
struct ThreadState {
    device: DeviceId,
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    plans: HashMap<Key, Plan>,
    plan_folder: Option<PathBuf>,
}

/// An algorithm as the plan cache stores it: cuBLASLt's opaque struct, 64 bytes little-endian.
fn algo_bytes(algo: &sys::cublasLtMatmulAlgo_t) -> Vec<u8> {
    algo.data.iter().flat_map(|word| word.to_le_bytes()).collect()
}

fn algo_from_bytes(bytes: &[u8]) -> Option<sys::cublasLtMatmulAlgo_t> {
    let mut data = [0u64; 8];
    if bytes.len() != 64 {
        return None;
    }
    for (word, chunk) in data.iter_mut().zip(bytes.chunks_exact(8)) {
        *word = u64::from_le_bytes(chunk.try_into().ok()?);
    }
    Some(sys::cublasLtMatmulAlgo_t { data })
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        self.plans.clear();
        unsafe {
            let _ = lt::destroy_handle(self.handle);
        }
    }
}

thread_local! {
    static STATE: RefCell<Option<ThreadState>> = const { RefCell::new(None) };
}

fn with_thread_state<R>(device: &CudaDevice, f: impl FnOnce(&mut ThreadState) -> Result<R>) -> Result<R> {
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|s| s.device != device.id()) {
            *slot = None;
            let handle = lt::create_handle().map_err(lt_error)?;
            let workspace = unsafe { device.alloc::<u8>(WORKSPACE_BYTES) }?;
            // A cached algorithm is valid for one cuBLASLt version on one kind of GPU.
            let library = format!("cublasLt{}", unsafe { sys::cublasLtGetVersion() });
            let plan_folder = crate::cuda::op::plan_folder(device, &library);
            *slot = Some(ThreadState { device: device.id(), handle, workspace, plans: HashMap::new(), plan_folder });
        }
        f(slot.as_mut().expect("state was just set"))
    })
}
