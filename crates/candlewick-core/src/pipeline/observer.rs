//! Progress and cancellation, without knowing who listens (the binding, a CLI, a test).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where the denoising loop stands after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepProgress {
    /// 1-based: 1 after the first step, `total_steps` after the last.
    pub step: usize,
    pub total_steps: usize,
    /// The scheduler timestep that step denoised.
    pub timestep: usize,
}

type ProgressFn = Box<dyn Fn(StepProgress) + Send + Sync>;

/// A progress callback and a cancellation flag, checked between denoising steps.
#[derive(Default)]
pub struct Observer {
    on_step: Option<ProgressFn>,
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

    pub fn step_done(&self, progress: StepProgress) {
        if let Some(f) = &self.on_step {
            f(progress)
        }
    }
}
