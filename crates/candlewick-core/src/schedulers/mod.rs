//! Noise schedulers. Each algorithm has its own file and the same small surface as diffusers'.

pub mod betas;
pub mod ddim;
