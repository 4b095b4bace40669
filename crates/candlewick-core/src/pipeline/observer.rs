//! Progress and cancellation, without knowing who listens (the binding, a CLI, a test).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::Tensor;

use super::options::RgbImage;

/// Where the denoising loop stands after a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepProgress {
    /// 1-based: 1 after the first step, `total_steps` after the last.
    pub step: usize,
    pub total_steps: usize,
    /// The scheduler timestep that step denoised.
    pub timestep: f64,
}

type ProgressFn = Box<dyn Fn(StepProgress) + Send + Sync>;
type LatentsFn = Box<dyn Fn(StepProgress, &Tensor) + Send + Sync>;
type PreviewFn = Box<dyn Fn(StepProgress, Option<Vec<RgbImage>>) + Send + Sync>;

/// A progress callback and a cancellation flag, checked between denoising steps.
#[derive(Default)]
pub struct Observer {
    on_step: Option<ProgressFn>,
    on_step_latents: Option<LatentsFn>,
    /// Every how many steps a preview comes with the progress (0: never), and where it goes.
    on_step_preview: Option<(usize, PreviewFn)>,
    cancel: Arc<AtomicBool>,
}

impl Observer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_progress(mut self, f: impl Fn(StepProgress) + Send + Sync + 'static) -> Self {
        self.on_step = Some(Box::new(f));
        self
    }

    /// See the latents after every step (diffusers' `callback_on_step_end`); for parity tests and previews.
    pub fn with_step_latents(mut self, f: impl Fn(StepProgress, &Tensor) + Send + Sync + 'static) -> Self {
        self.on_step_latents = Some(Box::new(f));
        self
    }

    /// Progress after every step, with previews of the latents (one small RGB image per image,
    /// `preview::latents_to_rgb`) every `every` steps and after the last (`every` 0: never).
    pub fn with_progress_previews(
        mut self,
        every: usize,
        f: impl Fn(StepProgress, Option<Vec<RgbImage>>) + Send + Sync + 'static,
    ) -> Self {
        self.on_step_preview = Some((every, Box::new(f)));
        self
    }

    pub fn with_cancel_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = flag;
        self
    }

    /// A handle another thread can set to cancel this call.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub fn step_done(&self, progress: StepProgress, latents: &Tensor) {
        if let Some(f) = &self.on_step_latents {
            f(progress, latents)
        }
        if let Some(f) = &self.on_step {
            f(progress)
        }
        if let Some((every, f)) = &self.on_step_preview {
            let due = *every > 0 && (progress.step % every == 0 || progress.step == progress.total_steps);
            // A preview that cannot be made (another latent layout) is left out, not an error.
            f(progress, if due { super::preview::latents_to_rgb(latents).ok().flatten() } else { None })
        }
    }
}
