//! The elementwise kernels (src/cuda/kernels/elementwise.cu): a per-channel bias add, with a
//! residual after it, and diffusers' GEGLU. Entry points and their guards: `super`.

use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{DeviceRepr, LaunchConfig};
use candle_core::cuda::{CudaDType, CudaStorage};
use candle_core::{bail, DType, Layout, Result, Shape, Tensor};

use super::launch::*;
use crate::cuda::op::{cuda_only_op, launch};

// ---- bias add -------------------------------------------------------------------------

struct BiasAdd {
    inner: u32,
    channels: u32,
}

impl BiasAdd {
    fn run<T: CudaDType + DeviceRepr>(
        &self,
        (x, xl): (&CudaStorage, &Layout),
        (b, bl): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let (xv, bv) = (view::<T>(x, xl)?, view::<T>(b, bl)?);
        let numel = xl.shape().elem_count();
        let mut y = unsafe { dev.alloc::<T>(numel) }?;
        let (n, inner, channels) = (numel as u64, self.inner, self.channels);
        let cfg =
            LaunchConfig { grid_dim: (elementwise_grid(numel), 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        launch!(
            dev,
            ELEMENTWISE,
            &format!("bias_add_{}", suffix(x.dtype())?),
            cfg,
            &xv,
            &bv,
            &mut y,
            &n,
            &inner,
            &channels
        )?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev), xl.shape().clone()))
    }
}

cuda_only_op!(CustomOp2 for BiasAdd, "fused-bias-add", run::<f16 | f32>, x xl, a al);

pub fn bias_add(x: &Tensor, bias: &Tensor, channel_dim: usize) -> Result<Tensor> {
    let dims = x.dims();
    if channel_dim >= dims.len() || bias.elem_count() != dims[channel_dim] {
        bail!("bias_add: a bias of {} values does not match dim {channel_dim} of {:?}", bias.elem_count(), dims);
    }
    let inner: usize = dims[channel_dim + 1..].iter().product();
    let op = BiasAdd { inner: inner as u32, channels: dims[channel_dim] as u32 };
    x.contiguous()?.apply_op2_no_bwd(&bias.contiguous()?, &op)
}

struct BiasAddResidual(BiasAdd);

impl BiasAddResidual {
    fn run<T: CudaDType + DeviceRepr>(
        &self,
        (x, xl): (&CudaStorage, &Layout),
        (b, bl): (&CudaStorage, &Layout),
        (r, rl): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let (xv, bv, rv) = (view::<T>(x, xl)?, view::<T>(b, bl)?, view::<T>(r, rl)?);
        let numel = xl.shape().elem_count();
        let mut y = unsafe { dev.alloc::<T>(numel) }?;
        let (n, inner, channels) = (numel as u64, self.0.inner, self.0.channels);
        let cfg =
            LaunchConfig { grid_dim: (elementwise_grid(numel), 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        launch!(
            dev,
            ELEMENTWISE,
            &format!("bias_add_residual_{}", suffix(x.dtype())?),
            cfg,
            &xv,
            &bv,
            &rv,
            &mut y,
            &n,
            &inner,
            &channels
        )?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev), xl.shape().clone()))
    }
}

cuda_only_op!(CustomOp3 for BiasAddResidual, "fused-bias-add-residual", run::<f16 | f32>, x xl, a al, b bl);

pub fn bias_add_residual(x: &Tensor, bias: &Tensor, channel_dim: usize, residual: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    if channel_dim >= dims.len() || bias.elem_count() != dims[channel_dim] {
        bail!("bias_add: a bias of {} values does not match dim {channel_dim} of {:?}", bias.elem_count(), dims);
    }
    let inner: usize = dims[channel_dim + 1..].iter().product();
    let op = BiasAddResidual(BiasAdd { inner: inner as u32, channels: dims[channel_dim] as u32 });
    x.contiguous()?.apply_op3_no_bwd(&bias.contiguous()?, &residual.contiguous()?, &op)
}

// ---- GEGLU ----------------------------------------------------------------------------

struct Geglu {
    has_bias: bool,
}

impl Geglu {
    fn run<T: CudaDType + DeviceRepr>(
        &self,
        (h, hl): (&CudaStorage, &Layout),
        (b, bl): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        let dev = h.device().clone();
        let mut dims = hl.shape().dims().to_vec();
        let last = dims.pop().unwrap_or(0);
        if last % 2 != 0 || last == 0 {
            bail!("GEGLU: the projection's last dim ({last}) must be even");
        }
        if self.has_bias && bl.shape().elem_count() != last {
            bail!("GEGLU: a bias of {} values for {last} features", bl.shape().elem_count());
        }
        dims.push(last / 2);
        let numel: usize = dims.iter().product();
        let (hv, bv) = (view::<T>(h, hl)?, view::<T>(b, bl)?);
        let mut y = unsafe { dev.alloc::<T>(numel) }?;
        let vec8 = aligned(&[ptr(&dev, &hv), ptr(&dev, &bv), ptr(&dev, &y)], 16);
        if h.dtype() == DType::F16 && (last / 2) % 8 == 0 && vec8 && numel / 8 < u32::MAX as usize {
            let (vectors, n_vectors, has_bias) = ((numel / 8) as u32, (last / 16) as u32, self.has_bias as i32);
            let cfg = LaunchConfig {
                grid_dim: (elementwise_grid(numel / 8), 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            launch!(dev, ELEMENTWISE, "geglu_vec8_f16", cfg, &hv, &bv, &mut y, &vectors, &n_vectors, &has_bias)?;
            return Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from(dims)));
        }
        let (n64, half, has_bias) = (numel as u64, (last / 2) as u32, self.has_bias as i32);
        let cfg =
            LaunchConfig { grid_dim: (elementwise_grid(numel), 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        launch!(
            dev,
            ELEMENTWISE,
            &format!("geglu_{}", suffix(h.dtype())?),
            cfg,
            &hv,
            &bv,
            &mut y,
            &n64,
            &half,
            &has_bias
        )?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from(dims)))
    }
}

cuda_only_op!(CustomOp2 for Geglu, "fused-geglu", run::<f16 | f32>, x xl, a al);

/// `bias` None: any tensor stands in for the kernel's unused pointer.
pub fn geglu(h: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let h = h.contiguous()?;
    let b = bias.unwrap_or(&h).contiguous()?;
    h.apply_op2_no_bwd(&b, &Geglu { has_bias: bias.is_some() })
}
