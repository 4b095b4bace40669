//! The three networks of Stable Diffusion, after diffusers' files of the same names.

pub mod activations;
pub mod attention;
pub mod attention_processor;
pub mod clip;
pub mod conv;
pub mod embeddings;
pub mod linear;
pub mod norm;
pub mod resnet;
pub mod transformer_2d;
pub mod unet_2d_blocks;
pub mod unet_2d_condition;
pub mod unet_2d_condition_config;
pub mod vae;
pub mod vae_tiling;
