//! Loading and disposing of a pipeline without blocking JavaScript: AsyncTasks on the libuv pool
//! that start the pipeline's own thread and wait for it to finish loading, or to end.

use std::path::PathBuf;
use std::sync::Arc;

use candlewick_core::pipeline::{LoadOptions, PipelineWorker};
use napi::bindgen_prelude::{Env, Result, Task};

use crate::error::{catch_panic_off_thread, into_js_error, CoreError};
use crate::pipeline::Pipeline;

pub struct LoadTask {
    pub model_dir: PathBuf,
    pub options: LoadOptions,
}

impl Task for LoadTask {
    /// The core's result is kept as it is, so `resolve` (on the JS thread) can turn an error
    /// into a JS error carrying the core's `code`.
    type Output = candlewick_core::Result<PipelineWorker>;
    type JsValue = Pipeline;

    fn compute(&mut self) -> Result<Self::Output> {
        Ok(catch_panic_off_thread(|| PipelineWorker::load(self.model_dir.clone(), self.options.clone())))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<Pipeline> {
        output.map(Pipeline::new).map_err(|e| into_js_error(&env, CoreError(e)))
    }
}

pub struct DisposeTask {
    pub worker: Arc<PipelineWorker>,
}

impl Task for DisposeTask {
    type Output = candlewick_core::Result<()>;
    type JsValue = ();

    fn compute(&mut self) -> Result<Self::Output> {
        Ok(catch_panic_off_thread(|| {
            self.worker.close();
            Ok(())
        }))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<()> {
        output.map_err(|e| into_js_error(&env, CoreError(e)))
    }
}
