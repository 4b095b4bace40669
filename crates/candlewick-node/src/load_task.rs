//! Loading and disposing of a pipeline without blocking JavaScript: AsyncTasks on the libuv pool
//! that start the pipeline's own thread and wait for it to finish loading, or to end.

use std::path::PathBuf;
use std::sync::Arc;

use candlewick_core::loaders::lora::LoraSpec;
use candlewick_core::loaders::single_file_convert::{convert, Converted};
use candlewick_core::pipeline::{LoadOptions, PipelineInfo, PipelineWorker};
use napi::bindgen_prelude::{Env, Result, Task};

use crate::error::{catch_panic_off_thread, into_js_error, CoreError};
use crate::options::RawPipelineInfo;
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

/// `pipe.setLoras`: queued on the pipeline thread after the calls before it; waits for it here.
pub struct SetLorasTask {
    pub worker: Arc<PipelineWorker>,
    pub loras: Vec<LoraSpec>,
}

impl Task for SetLorasTask {
    type Output = candlewick_core::Result<PipelineInfo>;
    type JsValue = RawPipelineInfo;

    fn compute(&mut self) -> Result<Self::Output> {
        Ok(catch_panic_off_thread(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            self.worker.set_loras(std::mem::take(&mut self.loras), move |r| {
                let _ = tx.send(r);
            });
            rx.recv()
                .map_err(|_| candlewick_core::Error::Internal("the pipeline thread ended during setLoras".into()))?
        }))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<RawPipelineInfo> {
        output.map(|info| RawPipelineInfo::from(&info)).map_err(|e| into_js_error(&env, CoreError(e)))
    }
}

/// `convert(checkpoint, out, config)`: a single-file checkpoint written as a diffusers folder.
pub struct ConvertTask {
    pub checkpoint: PathBuf,
    pub out: PathBuf,
    pub config: Option<PathBuf>,
}

impl Task for ConvertTask {
    type Output = candlewick_core::Result<Converted>;
    type JsValue = RawConverted;

    fn compute(&mut self) -> Result<Self::Output> {
        Ok(catch_panic_off_thread(|| convert(&self.checkpoint, self.config.as_deref(), &self.out)))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<RawConverted> {
        output
            .map(|c| RawConverted {
                folder: c.folder.display().to_string(),
                model_type: c.model_type,
                files: c.files.iter().map(|f| f.display().to_string()).collect(),
            })
            .map_err(|e| into_js_error(&env, CoreError(e)))
    }
}

/// What `convert` wrote.
#[napi_derive::napi(object)]
pub struct RawConverted {
    pub folder: String,
    /// diffusers' inferred model type: "v1", "inpainting", "v2", "inpainting_v2".
    pub model_type: String,
    pub files: Vec<String>,
}
