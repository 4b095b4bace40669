//! The one surface every scheduler has, as diffusers' `SchedulerMixin` gives it: timesteps to run
//! the UNet at, the initial noise scale, the model-input scaling, a stateful `step` (multistep
//! solvers keep their history in `self`), forward diffusion for img2img, and the solver order.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// Standard normal noise for a step that draws fresh noise (DDPM, Euler ancestral, DPM++ SDE,
/// LCM, DDIM with eta > 0). The pipeline gives each image its own seeded stream, so an image
/// made in a batch is still the image its seed makes alone; tests replay diffusers' noise.
pub trait StepNoise {
    /// Noise with the shape and device of `like`, f32.
    fn sample_like(&mut self, like: &Tensor) -> Result<Tensor>;

    /// Noise of `shape` ([batch, channels, height, width]) on `device`, f32: the pipeline's draws
    /// (initial latents, img2img's noise, the VAE's latent sample) in the order diffusers makes them.
    fn sample(&mut self, shape: [usize; 4], device: &Device) -> Result<Tensor> {
        self.sample_like(&Tensor::zeros(&shape, DType::F32, device)?)
    }
}

/// A scheduler set up for one run (`set_timesteps` done). Tensors are f32; the UNet's dtype is
/// the pipeline's business.
pub trait Scheduler: Send {
    /// The timestep of each UNet call, in order. One entry per call: PNDM repeats one, Heun
    /// interleaves its second-order evaluations, as diffusers' `scheduler.timesteps` does.
    /// f64: Karras-spaced schedules have fractional timesteps.
    fn timesteps(&self) -> &[f64];

    /// What the initial standard-normal latents are multiplied by (1 for the alpha-based
    /// schedulers; sigma-based ones start at their largest sigma).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// The UNet's input for the call at `timestep`: the sample as is, unless the scheduler scales
    /// it (Euler-like schedulers divide by sqrt(sigma^2 + 1)).
    fn scale_model_input(&self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.clone())
    }

    /// One UNet call's update: the sample for the next call. Advances the scheduler's own
    /// step index and history; `noise` is drawn only by schedulers that need it.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn StepNoise,
    ) -> Result<Tensor>;

    /// Forward diffusion of clean latents to `timestep` (img2img's starting point).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor>;

    /// The solver's order (diffusers' `scheduler.order`): UNet calls per step for Heun (2),
    /// 1 for the others. img2img's `strength` skips `order` calls per skipped step.
    fn order(&self) -> usize {
        1
    }

    /// Start the run at this index of `timesteps()` (diffusers' `set_begin_index`, for img2img).
    fn set_begin_index(&mut self, begin_index: usize);
}

/// Noise that is never asked for: a step of a deterministic scheduler. Asking is a bug.
pub struct NoNoise;

impl StepNoise for NoNoise {
    fn sample_like(&mut self, _like: &Tensor) -> Result<Tensor> {
        Err(crate::error::Error::Internal("a deterministic scheduler step asked for noise".into()))
    }
}
