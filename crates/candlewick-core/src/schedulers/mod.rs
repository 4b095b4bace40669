//! Noise schedulers: one file per diffusers scheduler, named after diffusers' file
//! (`scheduling_ddim.rs` is `schedulers/scheduling_ddim.py`), behind one trait ([`Scheduler`]).
//!
//! A scheduler is chosen as diffusers chooses it: scheduler_config.json's `_class_name` picks the
//! class, and a call's `{ type, ...fields }` changes the class and/or fields merged over the
//! folder's config, like `Class.from_config(config, **overrides)` ([`SchedulerChoice`]).

mod alphas;
pub mod betas;
mod choice;
pub mod config;
mod multistep;
mod scheduler;
pub mod scheduling_ddim;
pub mod scheduling_ddpm;
pub mod scheduling_dpmsolver_multistep;
pub mod scheduling_euler_ancestral_discrete;
pub mod scheduling_euler_discrete;
pub mod scheduling_heun_discrete;
pub mod scheduling_lcm;
pub mod scheduling_pndm;
pub mod scheduling_unipc_multistep;
pub mod sigmas;

pub use choice::{SchedulerChoice, SchedulerKind};
pub use config::{
    BetaSchedule, FinalSigmasType, InterpolationType, NoiseSchedule, PredictionType, TimestepSpacing, TimestepType,
    VarianceType,
};
pub use scheduler::{NoNoise, Scheduler, StepNoise};
