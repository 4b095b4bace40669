//! The `Pipeline` class: a loaded model on its own thread, and `GenerateCall`, the handle that
//! cancels one call.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candlewick_core::pipeline::{GenerateOptions, LoadOptions, Observer, PipelineWorker};
use napi::bindgen_prelude::{AsyncTask, Env, Result};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use crate::error::{catch_panic, into_js_error, CoreError, ErrorCode};
use crate::events::RawGenerateEvent;
use crate::load_task::{ConvertTask, DisposeTask, LoadTask, SetLorasTask};
use crate::options::{RawGenerateOptions, RawLoadOptions, RawLora, RawPipelineInfo};

/// `(err, event) => void`, called on the JS thread: progress events, then one result or one error
/// (whose `code` is the core's). One queue, so progress never arrives after the result.
type EventCallback = ThreadsafeFunction<RawGenerateEvent, (), RawGenerateEvent, ErrorCode, true>;

/// Load a diffusers model folder on a new pipeline thread. Rejects with `code` set
/// (ERR_CANDLEWICK_MODEL names the file, ERR_CANDLEWICK_DEVICE, ...).
#[napi(catch_unwind, ts_return_type = "Promise<Pipeline>")]
pub fn load_pipeline(env: Env, model_dir: String, options: Option<RawLoadOptions>) -> Result<AsyncTask<LoadTask>> {
    catch_panic(&env, || {
        let options = match options {
            Some(raw) => LoadOptions::try_from(raw).map_err(|e| into_js_error(&env, CoreError(e)))?,
            None => LoadOptions::default(),
        };
        Ok(AsyncTask::new(LoadTask { model_dir: PathBuf::from(model_dir), options }))
    })
}

/// Write a single-file checkpoint (`.safetensors`, original layout) as a diffusers folder `out`
/// (new or empty), configs and tokenizer from `config` (a diffusers folder). Resolves with what was
/// written.
#[napi(catch_unwind, ts_return_type = "Promise<RawConverted>")]
pub fn convert_single_file(
    env: Env,
    checkpoint: String,
    out: String,
    config: Option<String>,
) -> Result<AsyncTask<ConvertTask>> {
    catch_panic(&env, || {
        Ok(AsyncTask::new(ConvertTask {
            checkpoint: checkpoint.into(),
            out: out.into(),
            config: config.map(Into::into),
        }))
    })
}

/// A loaded Stable Diffusion pipeline. Made by `loadPipeline`; calls queue and run one at a time.
#[napi]
pub struct Pipeline {
    worker: Arc<PipelineWorker>,
}

impl Pipeline {
    pub fn new(worker: PipelineWorker) -> Self {
        Pipeline { worker: Arc::new(worker) }
    }
}

#[napi]
impl Pipeline {
    #[napi(getter)]
    pub fn info(&self) -> RawPipelineInfo {
        self.worker.info().into()
    }

    /// Let queued calls finish, end the pipeline's thread and free its memory (GPU memory
    /// included). Later calls fail with ERR_CANDLEWICK_DISPOSED.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn dispose(&self) -> AsyncTask<DisposeTask> {
        AsyncTask::new(DisposeTask { worker: self.worker.clone() })
    }

    /// Fuse `loras` in place of the LoRAs fused now (an empty list restores the base weights),
    /// after the calls queued before. Resolves with the pipeline's new info; on error the
    /// pipeline keeps its weights.
    #[napi(ts_return_type = "Promise<RawPipelineInfo>")]
    pub fn set_loras(&self, loras: Vec<RawLora>) -> AsyncTask<SetLorasTask> {
        let loras = loras.into_iter().map(Into::into).collect();
        AsyncTask::new(SetLorasTask { worker: self.worker.clone(), loras })
    }

    /// Queue a text-to-image call. Returns at once; `onEvent` reports progress and the outcome.
    /// Throws (synchronously) only when the options cannot be converted.
    #[napi(
        catch_unwind,
        ts_args_type = "options: RawGenerateOptions, onEvent: (err: Error | null, event: RawGenerateEvent) => void"
    )]
    pub fn generate(&self, env: Env, options: RawGenerateOptions, on_event: EventCallback) -> Result<GenerateCall> {
        catch_panic(&env, || {
            let preview_every = options.preview_every.unwrap_or(0) as usize;
            let options = GenerateOptions::try_from(options).map_err(|e| into_js_error(&env, CoreError(e)))?;
            Ok(self.queue(options, on_event, Observer::new(), preview_every))
        })
    }

    /// Test hook, not part of the API: queue a small call whose progress callback panics on the
    /// pipeline thread, to prove that the panic comes back as ERR_CANDLEWICK_INTERNAL and the
    /// pipeline takes the next call (test/reliability.test.ts).
    #[napi(
        js_name = "__panicInJobForTest",
        catch_unwind,
        ts_args_type = "onEvent: (err: Error | null, event: RawGenerateEvent) => void"
    )]
    pub fn panic_in_job_for_test(&self, env: Env, on_event: EventCallback) -> Result<GenerateCall> {
        catch_panic(&env, || {
            let options = GenerateOptions {
                prompt: vec!["a panic".into()],
                num_inference_steps: 1,
                width: Some(16),
                height: Some(16),
                ..Default::default()
            };
            let observer =
                Observer::new().with_step_latents(|_, _| panic!("a panic on the pipeline thread, for a test"));
            Ok(self.queue(options, on_event, observer, 0))
        })
    }
}

impl Pipeline {
    /// Queue a call on the pipeline thread: progress (with previews every `preview_every` steps)
    /// and the outcome go to `on_event`.
    fn queue(
        &self,
        options: GenerateOptions,
        on_event: EventCallback,
        observer: Observer,
        preview_every: usize,
    ) -> GenerateCall {
        let cancelled = Arc::new(AtomicBool::new(false));
        let on_done = Arc::new(on_event);
        let on_step = on_done.clone();
        let observer =
            observer.with_cancel_flag(cancelled.clone()).with_progress_previews(preview_every, move |p, preview| {
                // Non-blocking: the denoising loop never waits for JavaScript.
                let _ =
                    on_step.call(Ok(RawGenerateEvent::progress(p, preview)), ThreadsafeFunctionCallMode::NonBlocking);
            });
        self.worker.generate(options, observer, move |result| {
            let event = result.map(RawGenerateEvent::from).map_err(|e| CoreError(e).into());
            let _ = on_done.call(event, ThreadsafeFunctionCallMode::NonBlocking);
        });
        GenerateCall { cancelled }
    }
}

/// One queued or running generate call.
#[napi]
pub struct GenerateCall {
    cancelled: Arc<AtomicBool>,
}

#[napi]
impl GenerateCall {
    /// Ask the call to stop: it ends before its next denoising step (or before its first, if still
    /// queued) and reports an error with code ERR_CANDLEWICK_CANCELLED.
    #[napi]
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}
