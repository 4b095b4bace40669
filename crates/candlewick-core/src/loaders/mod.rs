//! What users bring on top of a model folder, loaded into its components (diffusers' `loaders/`).

pub mod textual_inversion;
