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
/// `w_q` (n x k) into its packed layout (`fp8::packed::Packed`: the values, then their scale) and checked
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
mod plan;

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda::cudarc::driver::{CudaView, DevicePtr, DevicePtrMut};
    use candle_core::cuda::CudaStorage;
    use candle_core::{bail, Layout, Result, Shape, Storage, Tensor};
    use half::f16;

    use super::plan::{run_plan, Key};

    pub fn linear(
        xs: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
        out_dims: &[usize],
    ) -> Result<Tensor> {
        LinearOp::new(bias, out_dims, None)?.apply(&xs.contiguous()?, &weight.contiguous()?, residual)
    }

    pub fn linear_fp8(
        xs_q: &Tensor,
        w_q: &Tensor,
        mnk: (usize, usize, usize),
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
        out_dims: &[usize],
    ) -> Result<Tensor> {
        LinearOp::new(bias, out_dims, Some(mnk))?.apply(xs_q, w_q, residual)
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
        /// FP8 (m, n, k): x and the weight are u8 tensors packed as `crate::cuda::fp8::packed::Packed`.
        fp8: Option<(usize, usize, usize)>,
    }

    impl LinearOp {
        fn new(bias: Option<&Tensor>, out_dims: &[usize], fp8: Option<(usize, usize, usize)>) -> Result<Self> {
            Ok(Self { bias: bias.map(|b| b.contiguous()).transpose()?, out_dims: out_dims.to_vec(), fp8 })
        }

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
                    use crate::cuda::fp8::packed::Packed;
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
}
