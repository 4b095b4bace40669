//! The layout kernels (src/cuda/kernels/layout.cu): a batched transpose, 2x nearest upsampling
//! written channels-last, and the concatenation along dim 1. Entry points and their guards: `super`.

use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{DeviceRepr, LaunchConfig};
use candle_core::cuda::{CudaDType, CudaStorage};
use candle_core::{bail, Layout, Result, Shape, Tensor};

use super::launch::*;
use crate::cuda::op::{cuda_only_op, launch};

// ---- concatenation along dim 1 ---------------------------------------------------------

struct CatDim1;

impl CatDim1 {
    fn run<T: CudaDType + DeviceRepr>(
        &self,
        (a, al): (&CudaStorage, &Layout),
        (b, bl): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        let dev = a.device().clone();
        let (mut dims, n) = (al.shape().dims().to_vec(), al.shape().dims()[0]);
        dims[1] += bl.shape().dims()[1];
        let (av, bv) = (view::<T>(a, al)?, view::<T>(b, bl)?);
        let numel = av.len() + bv.len();
        let mut y = unsafe { dev.alloc::<T>(numel) }?;
        if !aligned(&[ptr(&dev, &av), ptr(&dev, &bv), ptr(&dev, &y)], 16) {
            bail!("concatenation: a tensor is not 16-byte aligned");
        }
        let vector = 16 / std::mem::size_of::<T>();
        let (a_vectors, b_vectors) = ((av.len() / n / vector) as u32, (bv.len() / n / vector) as u32);
        let vectors = (numel / vector) as u32;
        let cfg = LaunchConfig {
            grid_dim: (elementwise_grid(numel / vector), 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(dev, LAYOUT, "cat_dim1_vec16", cfg, &av, &bv, &mut y, &a_vectors, &b_vectors, &vectors)?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from(dims)))
    }
}

cuda_only_op!(CustomOp2 for CatDim1, "fused-cat-dim1", run::<f16 | f32>, a al, b bl);

pub fn cat_dim1(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &CatDim1)
}

// ---- transpose --------------------------------------------------------------------------

struct Transpose;

impl Transpose {
    fn run<T: CudaDType + DeviceRepr>(&self, (x, xl): (&CudaStorage, &Layout)) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let (b, rows, cols) = xl.shape().dims3()?;
        let xv = view::<T>(x, xl)?;
        let mut y = unsafe { dev.alloc::<T>(b * rows * cols) }?;
        let (r32, c32) = (rows as u32, cols as u32);
        let cfg = tile_grid(b, rows, cols);
        launch!(dev, LAYOUT, &format!("transpose_{}", suffix(x.dtype())?), cfg, &xv, &mut y, &r32, &c32)?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from((b, cols, rows))))
    }
}

cuda_only_op!(CustomOp1 for Transpose, "fused-transpose", run::<f16 | f32>, x xl);

// ---- 2x nearest upsampling into channels-last -------------------------------------------

struct Upsample2xTokens {
    height: usize,
    width: usize,
}

impl Upsample2xTokens {
    fn run<T: CudaDType + DeviceRepr>(&self, (x, xl): (&CudaStorage, &Layout)) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let (b, c, pixels) = xl.shape().dims3()?;
        let xv = view::<T>(x, xl)?;
        let mut y = unsafe { dev.alloc::<T>(b * c * pixels * 4) }?;
        let (r32, c32, w32) = (c as u32, pixels as u32, self.width as u32);
        launch!(
            dev,
            LAYOUT,
            &format!("upsample2x_tokens_{}", suffix(x.dtype())?),
            tile_grid(b, c, pixels),
            &xv,
            &mut y,
            &r32,
            &c32,
            &w32
        )?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from((b, 2 * self.height, 2 * self.width, c))))
    }
}

cuda_only_op!(CustomOp1 for Upsample2xTokens, "fused-upsample2x-tokens", run::<f16 | f32>, x xl);

pub fn upsample2x_tokens(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.contiguous()?.reshape((b, c, h * w))?.apply_op1_no_bwd(&Upsample2xTokens { height: h, width: w })
}

pub fn transpose(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Transpose)
}
