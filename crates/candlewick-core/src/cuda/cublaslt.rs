//! diffusers' `nn.Linear` on CUDA as one cuBLASLt matrix product whose epilogue adds the bias
//! and, after a residual connection, the residual: `residual + xs · weightᵀ + bias`.
//!
//! candle's product is a cuBLAS call without an epilogue; the bias (and the residual) then take
//! a kernel of their own that reads the whole output again and writes it once more. Here cuBLASLt
//! reads the residual as its C matrix (D = A·B + 1·C) and adds the bias as it writes D.
//!
//! [`linear`] returns None where it does not apply (not CUDA, not f16, unaligned or oddly shaped
//! tensors) and the caller takes candle's path; both compute the same function with f32
//! accumulation (checked against diffusers on the GPU machine: bench/gpu/parity.mjs).

use candle_core::{DType, Result, Tensor};

/// Whether each new product shape's algorithm is the fastest of cuBLASLt's first few candidates
/// (autotune.gemm), timed on its first call, instead of its heuristics' first choice.
#[cfg(feature = "cuda")]
fn benchmarking() -> bool {
    crate::cuda::settings::current().autotune.gemm
}

/// `residual + xs · weightᵀ + bias` for `xs` [..., k], `weight` [n, k], `bias` [n] and
/// `residual` [..., n] (each optional but the weight), or None where cuBLASLt is not used.
pub fn linear(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    if !cfg!(feature = "cuda") || !f16_on_cuda(xs) || !f16_on_cuda(weight) || xs.rank() < 2 || weight.rank() != 2 {
        return Ok(None);
    }
    let (n, k) = weight.dims2()?;
    let mut out_dims = xs.dims().to_vec();
    if out_dims.pop() != Some(k) || bias.is_some_and(|b| !f16_on_cuda(b) || b.dims() != [n]) {
        return Ok(None);
    }
    out_dims.push(n);
    if residual.is_some_and(|r| !f16_on_cuda(r) || r.dims() != out_dims.as_slice()) {
        return Ok(None);
    }
    if k % 8 != 0
        || n % 8 != 0
        || xs.elem_count() / k > i32::MAX as usize
        || ![Some(xs), Some(weight), bias, residual].into_iter().flatten().all(starts_aligned)
    {
        return Ok(None);
    }
    crate::cuda::features::built!("cuda", imp::linear(xs, weight, bias, residual, &out_dims))
}

/// `addend + conv(xs)` for a 1x1 convolution without bias on NCHW tensors: `xs` [b, c, h, w],
/// `weight` [k, c], `addend` [b, k, h, w]. One cuBLASLt product a sample (strided-batched):
/// column-major, a sample's output [k, h*w] is the h*w x k matrix X·Wᵀ, X being the sample's
/// input read as h*w x c, and the addend comes in as C. None where cuBLASLt is not used.
pub fn pointwise_conv_plus(xs: &Tensor, weight: &Tensor, addend: &Tensor) -> Result<Option<Tensor>> {
    if !cfg!(feature = "cuda") || !f16_on_cuda(xs) || !f16_on_cuda(weight) || !f16_on_cuda(addend) || xs.rank() != 4 {
        return Ok(None);
    }
    let (b, c, h, w) = xs.dims4()?;
    let (k, wc) = weight.dims2()?;
    let pixels = h * w;
    if wc != c || addend.dims() != [b, k, h, w] || c % 8 != 0 || k % 8 != 0 || pixels % 8 != 0 {
        return Ok(None);
    }
    if b * c * pixels > i32::MAX as usize
        || b * k * pixels > i32::MAX as usize
        || ![xs, weight, addend].into_iter().all(starts_aligned)
    {
        return Ok(None);
    }
    crate::cuda::features::built!("cuda", imp::pointwise_conv_plus(xs, weight, addend))
}

/// `residual + x · wᵀ + bias` in FP8 for `crate::cuda::fp8`, which quantized `xs_q` (m x k) and
/// `w_q` (n x k) into its packed layout (`fp8::Packed`: the values, then their scale) and checked
/// the shapes; f16 out, shaped `out_dims`.
#[cfg(feature = "cuda")]
pub fn linear_fp8(
    xs_q: &Tensor,
    w_q: &Tensor,
    mnk: (usize, usize, usize),
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    out_dims: &[usize],
) -> Result<Tensor> {
    imp::linear_fp8(xs_q, w_q, mnk, bias, residual, out_dims)
}

fn f16_on_cuda(t: &Tensor) -> bool {
    t.device().is_cuda() && t.dtype() == DType::F16
}

/// cuBLASLt's 16-byte alignment: every view starting on a multiple of 8 halves (candle's
/// allocations themselves are 256-byte aligned; the callers check that rows are multiples of 8).
pub(crate) fn starts_aligned(t: &Tensor) -> bool {
    t.layout().start_offset().is_multiple_of(8)
}

#[cfg(feature = "cuda")]
mod imp {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::ffi::c_void;
    use std::mem::size_of;
    use std::path::PathBuf;

    use candle_core::backend::BackendStorage;
    use candle_core::cuda::cudarc::cublaslt::{result as lt, sys};
    use candle_core::cuda::cudarc::driver::{CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut};
    use candle_core::cuda::{CudaDevice, CudaStorage, DeviceId};
    use candle_core::{bail, Layout, Result, Shape, Storage, Tensor};
    use half::f16;

    use crate::cuda::op::timing::{self, capturing};
    use crate::cuda::plan_cache;

    fn lt_error(e: lt::CublasError) -> candle_core::Error {
        candle_core::Error::Msg(format!("cuBLASLt: {e:?}"))
    }

    /// cuBLASLt's recommended workspace on Hopper.
    const WORKSPACE_BYTES: usize = 32 << 20;

    pub fn linear(
        xs: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
        out_dims: &[usize],
    ) -> Result<Tensor> {
        let op = LinearOp { bias: bias.map(|b| b.contiguous()).transpose()?, out_dims: out_dims.to_vec(), fp8: None };
        op.apply(&xs.contiguous()?, &weight.contiguous()?, residual)
    }

    pub fn linear_fp8(
        xs_q: &Tensor,
        w_q: &Tensor,
        mnk: (usize, usize, usize),
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
        out_dims: &[usize],
    ) -> Result<Tensor> {
        let op =
            LinearOp { bias: bias.map(|b| b.contiguous()).transpose()?, out_dims: out_dims.to_vec(), fp8: Some(mnk) };
        op.apply(xs_q, w_q, residual)
    }

    pub fn pointwise_conv_plus(xs: &Tensor, weight: &Tensor, addend: &Tensor) -> Result<Tensor> {
        xs.contiguous()?.apply_op3_no_bwd(&weight.contiguous()?, &addend.contiguous()?, &PointwiseConvOp)
    }

    fn view<'a>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, f16>> {
        crate::cuda::op::contiguous_view(s, l, "cuBLASLt linear")
    }

    struct LinearOp {
        bias: Option<Tensor>,
        out_dims: Vec<usize>,
        /// FP8 (m, n, k): x and the weight are u8 tensors packed as `crate::cuda::fp8::Packed`.
        fp8: Option<(usize, usize, usize)>,
    }

    impl LinearOp {
        /// The op on contiguous `xs` and `weight`, with the residual as a third input when given.
        fn apply(&self, xs: &Tensor, weight: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
            match residual {
                Some(r) => xs.apply_op3_no_bwd(weight, &r.contiguous()?, self),
                None => xs.apply_op2_no_bwd(weight, self),
            }
        }

        fn run(
            &self,
            (x, xl): (&CudaStorage, &Layout),
            (w, wl): (&CudaStorage, &Layout),
            residual: Option<(&CudaStorage, &Layout)>,
        ) -> Result<(CudaStorage, Shape)> {
            let device = x.device().clone();
            let stream = device.cuda_stream();
            // The inputs' addresses, and with FP8 their scales' (A's is the weight's, B's the input's).
            let (m, n, k, x_ptr, w_ptr, scales) = match self.fp8 {
                None => {
                    let (n, k) = wl.shape().dims2()?;
                    let m = xl.shape().elem_count() / k;
                    (m, n, k, view(x, xl)?.device_ptr(&stream).0, view(w, wl)?.device_ptr(&stream).0, None)
                }
                Some((m, n, k)) => {
                    use crate::cuda::fp8::Packed;
                    let what = "cuBLASLt FP8 linear";
                    let xv = crate::cuda::op::contiguous_view::<u8>(x, xl, what)?;
                    let wv = crate::cuda::op::contiguous_view::<u8>(w, wl, what)?;
                    let (xp, wp) = (Packed::of(m * k), Packed::of(n * k));
                    if xv.len() != xp.bytes || wv.len() != wp.bytes {
                        bail!("{what}: packed inputs of {} and {} bytes for m={m} n={n} k={k}", xv.len(), wv.len());
                    }
                    let (x_ptr, w_ptr) = (xv.device_ptr(&stream).0, wv.device_ptr(&stream).0);
                    (m, n, k, x_ptr, w_ptr, Some([w_ptr + wp.scale as u64, x_ptr + xp.scale as u64]))
                }
            };
            let rv = residual.map(|(r, rl)| view(r, rl)).transpose()?;
            let bias_guard = self.bias.as_ref().map(|b| b.storage_and_layout());
            let bv = match &bias_guard {
                Some((storage, layout)) => match &**storage {
                    Storage::Cuda(s) => Some(view(s, layout)?),
                    _ => bail!("cuBLASLt linear: the bias is not on the GPU"),
                },
                None => None,
            };
            let mut y = unsafe { device.alloc::<f16>(m * n) }?;
            {
                let (y_ptr, _y_sync) = y.device_ptr_mut(&stream);
                let r = rv.as_ref().map(|r| r.device_ptr(&stream));
                let b = bv.as_ref().map(|b| b.device_ptr(&stream));
                let r_ptr = r.as_ref().map(|(p, _)| *p);
                let b_ptr = b.as_ref().map(|(p, _)| *p);
                if [Some(x_ptr), Some(w_ptr), Some(y_ptr), r_ptr, b_ptr].iter().flatten().any(|p| p % 16 != 0) {
                    bail!("cuBLASLt linear: a tensor is not 16-byte aligned");
                }
                let key = Key {
                    m: m as u64,
                    n: n as u64,
                    k: k as u64,
                    bias: b_ptr.is_some(),
                    residual: r_ptr.is_some(),
                    nchw_batch: None,
                    fp8: scales.is_some(),
                };
                run_plan(&device, key, [x_ptr, w_ptr, y_ptr], r_ptr, b_ptr, scales)?;
            }
            Ok((CudaStorage::wrap_cuda_slice(y, device), Shape::from(self.out_dims.clone())))
        }
    }

    /// The plan for `key` (made on first use), run on the device's stream.
    /// `scales`: with FP8, the device addresses of A's (the weight's) and B's (the input's) scales.
    fn run_plan(
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

    /// Inputs: xs [b, c, h, w], the weight [k, c], the addend [b, k, h, w] (contiguous).
    struct PointwiseConvOp;

    crate::cuda::op::cuda_only_op!(CustomOp3 for PointwiseConvOp, "cublaslt-pointwise-conv-plus", run, x xl, w wl, a al);

    impl PointwiseConvOp {
        fn run(
            &self,
            (x, xl): (&CudaStorage, &Layout),
            (w, wl): (&CudaStorage, &Layout),
            (a, al): (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            let device = x.device().clone();
            let stream = device.cuda_stream();
            let (b, c, h, wd) = xl.shape().dims4()?;
            let (k, _) = wl.shape().dims2()?;
            let (xv, wv, av) = (view(x, xl)?, view(w, wl)?, view(a, al)?);
            let mut y = unsafe { device.alloc::<f16>(b * k * h * wd) }?;
            {
                let (x_ptr, _x_sync) = xv.device_ptr(&stream);
                let (w_ptr, _w_sync) = wv.device_ptr(&stream);
                let (a_ptr, _a_sync) = av.device_ptr(&stream);
                let (y_ptr, _y_sync) = y.device_ptr_mut(&stream);
                if [x_ptr, w_ptr, a_ptr, y_ptr].iter().any(|p| p % 16 != 0) {
                    bail!("cuBLASLt pointwise convolution: a tensor is not 16-byte aligned");
                }
                // Per sample: m = pixels rows, n = k outputs, k = c inputs.
                let key = Key {
                    m: (h * wd) as u64,
                    n: k as u64,
                    k: c as u64,
                    bias: false,
                    residual: true,
                    nchw_batch: Some(b as u64),
                    fp8: false,
                };
                run_plan(&device, key, [x_ptr, w_ptr, y_ptr], Some(a_ptr), None, None)?;
            }
            Ok((CudaStorage::wrap_cuda_slice(y, device), Shape::from((b, k, h, wd))))
        }
    }

    impl LinearOp {
        fn run_product(&self, x: (&CudaStorage, &Layout), w: (&CudaStorage, &Layout)) -> Result<(CudaStorage, Shape)> {
            self.run(x, w, None)
        }

        fn run_with_residual(
            &self,
            x: (&CudaStorage, &Layout),
            w: (&CudaStorage, &Layout),
            r: (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            self.run(x, w, Some(r))
        }
    }

    crate::cuda::op::cuda_only_op!(CustomOp2 for LinearOp, "cublaslt-linear", run_product, x xl, w wl);
    crate::cuda::op::cuda_only_op!(CustomOp3 for LinearOp, "cublaslt-linear-residual", run_with_residual, x xl, w wl, r rl);

    /// One product's shape: m rows of xs, n outputs, k inputs, and which epilogue.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    struct Key {
        m: u64,
        n: u64,
        k: u64,
        bias: bool,
        residual: bool,
        /// A 1x1 convolution on NCHW tensors ([`PointwiseConvOp`]) of this many samples: m is
        /// then the pixels, the output m x n column-major a sample, the weight not transposed.
        nchw_batch: Option<u64>,
        /// A (the weight) and B (xs) in e4m3, each with its scale (fast accumulation).
        fp8: bool,
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
        fn new(
            handle: sys::cublasLtHandle_t,
            key: Key,
            stored: Option<sys::cublasLtMatmulAlgo_t>,
        ) -> Result<(Self, bool)> {
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
                *slot =
                    Some(ThreadState { device: device.id(), handle, workspace, plans: HashMap::new(), plan_folder });
            }
            f(slot.as_mut().expect("state was just set"))
        })
    }
}
