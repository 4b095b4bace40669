//! One thread per pipeline that does all of its tensor work.
//!
//! candle's CUDA device uses the per-thread default stream and cuDNN handles are per thread,
//! so a pipeline is loaded and run on a thread of its own. Calls become jobs on a channel and
//! run one at a time, in order. A panic inside a job is caught here and becomes
//! [`Error::Internal`]; the thread and the pipeline stay usable.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{mpsc, Mutex};
use std::thread::{self, JoinHandle};

use super::options::PipelineInfo;
use super::options::{GenerateOptions, GenerateOutput, LoadOptions};
use super::txt2img::StableDiffusionPipeline;
use super::Observer;
use crate::error::{Error, Result};
use crate::loaders::lora::LoraSpec;

type Done = Box<dyn FnOnce(Result<GenerateOutput>) + Send>;

enum Job {
    Generate { options: GenerateOptions, observer: Observer, done: Done },
    SetLoras { loras: Vec<LoraSpec>, done: Box<dyn FnOnce(Result<PipelineInfo>) + Send> },
}

/// A loaded pipeline living on its own thread. Dropping it (or [`PipelineWorker::close`]) lets
/// queued jobs finish, then ends the thread and frees the model's memory.
pub struct PipelineWorker {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    info: PipelineInfo,
}

impl PipelineWorker {
    /// Start the thread and load the model folder on it. Blocks until loading has finished.
    pub fn load(model_dir: PathBuf, options: LoadOptions) -> Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<PipelineInfo>>();
        let pool = cpu_pool(options.threads)?;
        let thread = thread::Builder::new()
            .name("candlewick-pipeline".into())
            .spawn(move || {
                // The pipeline lives on one thread of its own CPU pool for its whole life (CUDA's
                // per-thread stream and cuDNN's handles stay with it); candle's CPU kernels run on
                // the current rayon pool, so `threads` bounds them.
                pool.install(move || {
                    let loaded = guarded(|| StableDiffusionPipeline::load(&model_dir, &options));
                    crate::profile::print_startup("load");
                    let mut pipeline = match loaded {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(pipeline.info().clone()));
                    for job in queue {
                        match job {
                            Job::Generate { options, observer, done } => {
                                let result = guarded(|| pipeline.generate(&options, &observer));
                                // A panicking `done` must not end the thread that later jobs need.
                                let _ = catch_unwind(AssertUnwindSafe(move || done(result)));
                            }
                            Job::SetLoras { loras, done } => {
                                let result = guarded(|| {
                                    pipeline.set_loras(&loras)?;
                                    Ok(pipeline.info().clone())
                                });
                                let _ = catch_unwind(AssertUnwindSafe(move || done(result)));
                            }
                        }
                        return_freed_memory();
                    }
                })
            })
            .map_err(|e| Error::Internal(format!("cannot start the pipeline thread: {e}")))?;
        let info = ready_rx.recv().map_err(|_| Error::Internal("the pipeline thread ended while loading".into()))??;
        Ok(Self { jobs: Mutex::new(Some(jobs)), thread: Mutex::new(Some(thread)), info })
    }

    pub fn info(&self) -> &PipelineInfo {
        &self.info
    }

    /// Queue a generation; `done` runs on the pipeline thread with the result.
    pub fn generate(
        &self,
        options: GenerateOptions,
        observer: Observer,
        done: impl FnOnce(Result<GenerateOutput>) + Send + 'static,
    ) {
        self.send(Job::Generate { options, observer, done: Box::new(done) });
    }

    /// Queue a change of the fused LoRAs (after the calls queued before it); `done` runs on the
    /// pipeline thread with the pipeline's new info.
    pub fn set_loras(&self, loras: Vec<LoraSpec>, done: impl FnOnce(Result<PipelineInfo>) + Send + 'static) {
        self.send(Job::SetLoras { loras, done: Box::new(done) });
    }

    fn send(&self, job: Job) {
        let sent = match self.jobs.lock() {
            Ok(jobs) => match jobs.as_ref() {
                Some(jobs) => jobs.send(job).map_err(|mpsc::SendError(job)| (job, "the pipeline thread has stopped")),
                None => Err((job, "")),
            },
            Err(_) => Err((job, "the pipeline's job queue is poisoned")),
        };
        if let Err((job, why)) = sent {
            let error = if why.is_empty() { Error::Disposed } else { Error::Internal(why.into()) };
            match job {
                Job::Generate { done, .. } => done(Err(error)),
                Job::SetLoras { done, .. } => done(Err(error)),
            }
        }
    }

    /// Stop taking calls, let the queued ones finish, and wait until the thread has ended and
    /// the model's memory is freed. Later calls fail with [`Error::Disposed`]. Idempotent.
    pub fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Queue a generation and wait for its result.
    pub fn generate_blocking(&self, options: GenerateOptions, observer: Observer) -> Result<GenerateOutput> {
        let (tx, rx) = mpsc::channel();
        self.generate(options, observer, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().map_err(|_| Error::Internal("the pipeline thread ended during generation".into()))?
    }
}

/// Hand the heap memory that the call freed back to the OS. A generation allocates and frees
/// buffers of several hundred KB on this thread and on the JS thread; glibc keeps such freed
/// memory in its arenas, where it fragments, so that host RSS drifts upwards over hundreds of
/// calls (bench/NOTES.md: the host memory over many calls) though nothing stays allocated. Takes ~1 ms.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The pipeline's own pool for candle's CPU kernels (they run on the current rayon pool), so that
/// `threads` bounds this pipeline's CPU work whatever else the process runs.
fn cpu_pool(threads: Option<usize>) -> Result<rayon::ThreadPool> {
    let threads = match threads {
        Some(0) => return Err(crate::error::expected("integer >= 1", "threads", 0)),
        Some(n) => n,
        None => thread::available_parallelism().map_or(1, |n| n.get()),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("candlewick-cpu-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("cannot start {threads} CPU threads: {e}")))
}

/// Run `f`, turning a panic into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| Err(Error::from_panic(payload)))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::device::{DTypeRequest, DeviceRequest};

    /// test/fixtures/tiny-sd, made by scripts/make_fixtures.py.
    fn tiny_sd() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/tiny-sd")
    }

    fn small(seed: u64) -> GenerateOptions {
        GenerateOptions {
            prompt: vec!["a red apple".into()],
            num_inference_steps: 2,
            width: Some(16),
            height: Some(16),
            seed: Some(seed),
            ..Default::default()
        }
    }

    #[test]
    fn a_panicking_job_becomes_an_internal_error_and_the_worker_takes_the_next_job() {
        let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() };
        let worker = PipelineWorker::load(tiny_sd(), options).expect("tiny-sd loads");
        let before = worker.generate_blocking(small(1), Observer::new()).expect("generates");

        // The progress callback runs inside the job, on the pipeline thread.
        let panicking = Observer::new().with_progress(|_| panic!("boom in a progress callback"));
        match worker.generate_blocking(small(1), panicking) {
            Err(Error::Internal(message)) => assert_eq!(message, "boom in a progress callback"),
            other => panic!("expected Error::Internal, got {other:?}"),
        }
        let formatted = format!("{}", Error::Internal("x".into()));
        assert_eq!(formatted, "internal error (a bug in candlewick, please report it): x");

        // A panicking `done` callback does not end the thread either.
        worker.generate(small(1), Observer::new(), |_| panic!("boom in done"));
        let after = worker.generate_blocking(small(1), Observer::new()).expect("still generates");
        assert_eq!(before.images[0].data, after.images[0].data, "the same seed gives the same image after the panics");
        worker.close();
    }

    #[test]
    fn threads_bound_the_cpu_pool_and_leave_the_image_unchanged() {
        let load = |threads| {
            let options =
                LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, threads, ..Default::default() };
            PipelineWorker::load(tiny_sd(), options).expect("tiny-sd loads")
        };
        let one = load(Some(1));
        assert_eq!(one.info().threads, 1);
        let default = load(None);
        assert_eq!(default.info().threads, thread::available_parallelism().map_or(1, |n| n.get()));
        let a = one.generate_blocking(small(3), Observer::new()).expect("generates");
        let b = default.generate_blocking(small(3), Observer::new()).expect("generates");
        assert_eq!(a.images[0].data, b.images[0].data, "the thread count does not change the image");
        match PipelineWorker::load(tiny_sd(), LoadOptions { threads: Some(0), ..Default::default() }) {
            Err(e) => assert_eq!(e.to_string(), "Expected integer >= 1 for threads but received 0"),
            Ok(_) => panic!("threads 0 loaded"),
        }
    }
}
