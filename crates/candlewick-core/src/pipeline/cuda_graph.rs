//! The UNet step as a CUDA graph: diffusers' "traced UNet", torch.compile's reduce-overhead.
//!
//! At batch 1 the GPU mostly waits for the host to launch the step's ~1,000 kernels. The first
//! step of a new shape runs eagerly (it builds the cuDNN plans, loads the kernels and sizes the
//! workspace); the second is captured with CUDA stream capture into a graph that reads static
//! input buffers (latents, the timestep's projection, the text embeddings) and writes a static
//! output buffer; every later step copies its inputs into those buffers and replays the graph
//! with one launch. Everything the step allocates is allocated and freed inside the graph.
//!
//! The guidance combination and the scheduler update stay eager: they take per-step scalars
//! that a replayed graph would freeze. Graphs are kept per shape (the latest [`KEEP`]); each
//! holds its own activation memory. If capture fails, the pipeline says why in a warning and
//! runs eagerly from then on.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use candle_core::{DType, Device, Result, Shape, Tensor};

use crate::models::unet_2d_condition::UNet2DConditionModel;

/// How many shapes keep a captured graph.
const KEEP: usize = 2;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GraphKey {
    sample: Vec<usize>,
    context: Vec<usize>,
    dtype: DType,
}

#[derive(Default)]
struct State {
    /// Shapes that ran eagerly once, with the output shape they gave.
    warmed: HashMap<GraphKey, Shape>,
    graphs: VecDeque<(GraphKey, captured::Graph)>,
    /// Why capture failed, once it has: graphs are off for the rest of the pipeline's life.
    failed: Option<String>,
    failure_reported: bool,
}

/// Runs the UNet, through captured graphs when `enabled` and the tensors are on CUDA.
pub struct GraphedUNet {
    enabled: bool,
    state: RefCell<State>,
}

impl GraphedUNet {
    pub fn new(enabled: bool) -> Self {
        Self { enabled: enabled && captured::SUPPORTED, state: RefCell::new(State::default()) }
    }

    pub fn enabled(&self) -> bool {
        self.enabled && self.state.borrow().failed.is_none()
    }

    /// Why graph capture stopped, the first time this is asked after it did (the caller turns
    /// it into a warning).
    pub fn take_failure(&self) -> Option<String> {
        let mut state = self.state.borrow_mut();
        if state.failure_reported {
            return None;
        }
        state.failure_reported = state.failed.is_some();
        state.failed.clone()
    }

    /// The UNet's prediction for `sample` at `timestep`, as [`UNet2DConditionModel::forward`].
    pub fn predict(
        &self,
        unet: &UNet2DConditionModel,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
    ) -> Result<Tensor> {
        if !self.enabled() || !matches!(sample.device(), Device::Cuda(_)) {
            return unet.forward(sample, timestep, context);
        }
        let t_proj = unet.time_proj(timestep, sample)?;
        let context = context.to_dtype(sample.dtype())?;
        let key = GraphKey { sample: sample.dims().to_vec(), context: context.dims().to_vec(), dtype: sample.dtype() };
        let mut state = self.state.borrow_mut();

        if let Some((_, graph)) = state.graphs.iter().find(|(k, _)| *k == key) {
            return graph.replay(sample, &t_proj, &context);
        }
        let Some(out_shape) = state.warmed.get(&key).cloned() else {
            let out = crate::profile::startup_time("unet_first_step", Some(sample.device()), || {
                captured::warm_up(sample, || unet.forward_with_time_proj(sample, &t_proj, &context))
            })?;
            state.warmed.insert(key, out.shape().clone());
            return Ok(out);
        };
        let captured = crate::profile::startup_time("unet_graph_capture", Some(sample.device()), || {
            captured::Graph::capture(sample, &t_proj, &context, &out_shape, |s, t, c| unet.forward_with_time_proj(s, t, c))
        });
        match captured {
            Ok(graph) => {
                if state.graphs.len() == KEEP {
                    state.graphs.pop_front();
                }
                state.graphs.push_back((key.clone(), graph));
                let (_, graph) = state.graphs.back().expect("just pushed");
                graph.replay(sample, &t_proj, &context)
            }
            // Out of memory while capturing says nothing about graphs: the call fails as it would eagerly.
            Err(e) if crate::error::is_out_of_memory(&e) => Err(e),
            Err(e) => {
                state.failed =
                    Some(format!("CUDA graph capture of the UNet step failed, running it eagerly from now on: {e}"));
                state.graphs.clear();
                unet.forward_with_time_proj(sample, &t_proj, &context)
            }
        }
    }
}

#[cfg(feature = "cuda")]
mod captured {
    use candle_core::cuda::cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
    use candle_core::cuda::cudarc::driver::CudaGraph;
    use candle_core::{bail, Device, Result, Shape, Tensor};

    pub const SUPPORTED: bool = true;

    /// The eager first run of a shape, with candle's cache of small host-to-device uploads on, so
    /// that any such upload the step makes is on the device already when it is captured.
    pub fn warm_up(like: &Tensor, step: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
        let Device::Cuda(device) = like.device() else { return step() };
        let _uploads = device.enable_cuda_graph_htod_cache();
        step()
    }

    pub struct Graph {
        sample: Tensor,
        t_proj: Tensor,
        context: Tensor,
        out: Tensor,
        graph: CudaGraph,
    }

    impl Graph {
        pub fn capture(
            sample: &Tensor,
            t_proj: &Tensor,
            context: &Tensor,
            out_shape: &Shape,
            step: impl FnOnce(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
        ) -> Result<Self> {
            let Device::Cuda(device) = sample.device() else { bail!("CUDA graphs need CUDA tensors") };
            let (sample, t_proj, context) = (sample.copy()?, t_proj.copy()?, context.copy()?);
            let out = Tensor::zeros(out_shape, sample.dtype(), sample.device())?;
            let stream = device.cuda_stream();
            stream.synchronize().map_err(candle_core::Error::wrap)?;
            let _uploads = device.enable_cuda_graph_htod_cache();
            stream
                .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                .map_err(candle_core::Error::wrap)?;
            // Every tensor the step allocates is freed before the capture ends: `result` drops here.
            let recorded = step(&sample, &t_proj, &context).and_then(|result| out.slice_set(&result, 0, 0));
            let ended = stream.end_capture(CUgraphInstantiate_flags(0));
            recorded?;
            let graph = match ended.map_err(candle_core::Error::wrap)? {
                Some(graph) => graph,
                None => bail!("the captured graph is empty"),
            };
            graph.upload().map_err(candle_core::Error::wrap)?;
            Ok(Self { sample, t_proj, context, out, graph })
        }

        /// Copies the inputs into the graph's buffers, replays it, and returns a copy of its output
        /// (the next replay overwrites the buffer).
        pub fn replay(&self, sample: &Tensor, t_proj: &Tensor, context: &Tensor) -> Result<Tensor> {
            self.sample.slice_set(&sample.contiguous()?, 0, 0)?;
            self.t_proj.slice_set(&t_proj.contiguous()?, 0, 0)?;
            self.context.slice_set(&context.contiguous()?, 0, 0)?;
            self.graph.launch().map_err(candle_core::Error::wrap)?;
            self.out.copy()
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod captured {
    use candle_core::{bail, Result, Shape, Tensor};

    pub const SUPPORTED: bool = false;

    pub fn warm_up(_like: &Tensor, step: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
        step()
    }

    pub struct Graph;

    impl Graph {
        pub fn capture(
            _: &Tensor,
            _: &Tensor,
            _: &Tensor,
            _: &Shape,
            _: impl FnOnce(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
        ) -> Result<Self> {
            bail!("this build has no CUDA")
        }

        pub fn replay(&self, _: &Tensor, _: &Tensor, _: &Tensor) -> Result<Tensor> {
            bail!("this build has no CUDA")
        }
    }
}
