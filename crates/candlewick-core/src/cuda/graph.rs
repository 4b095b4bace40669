//! The UNet step (and the text encoders) as CUDA graphs: diffusers' "traced UNet", torch.compile's
//! reduce-overhead.
//!
//! At batch 1 the GPU mostly waits for the host to launch the step's ~1,000 kernels. The first
//! run of a new shape runs eagerly (it builds the cuDNN and cuBLASLt plans, loads the kernels and
//! sizes the workspaces); the second is captured with CUDA stream capture into a graph that reads
//! static input buffers (for the UNet: latents, the timestep's projection, the text embeddings and
//! each cross-attention layer's keys and values of them; for a text encoder: the token ids, and for
//! SDXL's second the rows of its end tokens, found on the host before the graph) and
//! writes a static output buffer; every later run copies its inputs into those buffers (skipping
//! an input that is the tensor it copied last time, as the text context is at every step of a
//! generation) and replays the graph with one launch. Everything a run
//! allocates is allocated and freed inside the graph.
//!
//! The guidance combination and the scheduler update stay eager: they take per-step scalars
//! that a replayed graph would freeze. Graphs are kept per shape (the latest [`KEEP`]); each
//! holds its own activation memory. If capture fails, the pipeline says why in a warning and
//! runs that model eagerly from then on.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use candle_core::{DType, Device, Result, Shape, Tensor};

/// How many shapes keep a captured graph.
const KEEP: usize = 2;

/// The inputs' shapes and dtypes.
type GraphKey = Vec<(Vec<usize>, DType)>;

#[derive(Default)]
struct State {
    /// Shapes that ran eagerly once, with the output's shape and dtype.
    warmed: HashMap<GraphKey, (Shape, DType)>,
    graphs: VecDeque<(GraphKey, captured::Graph)>,
    /// Why capture failed, once it has: graphs are off for the rest of the pipeline's life.
    failed: Option<String>,
    failure_reported: bool,
}

/// Runs one model through captured graphs, one per input shape, when `enabled` and the
/// tensors are on CUDA.
pub struct GraphedModel {
    /// The model's name in a warning ("UNet step", "text encoder").
    name: &'static str,
    /// Names of its first (eager) run and of its capture in start-up profiles (`crate::profile`).
    profile_names: [&'static str; 2],
    enabled: bool,
    state: RefCell<State>,
}

impl GraphedModel {
    /// The UNet step: inputs latents, the timestep's projection, the text embeddings and each
    /// cross-attention layer's keys and values of them.
    pub fn unet(enabled: bool) -> Self {
        Self::new("UNet step", ["unet_first_step", "unet_graph_capture"], enabled)
    }

    /// The text encoder: input the token ids.
    pub fn text_encoder(enabled: bool) -> Self {
        Self::new("text encoder", ["text_encoder_first_run", "text_encoder_graph_capture"], enabled)
    }

    /// SDXL's second text encoder: input the token ids, output its hidden states and pooled
    /// projection packed in one tensor (`pipeline::sdxl`).
    pub fn text_encoder_2(enabled: bool) -> Self {
        Self::new("second text encoder", ["text_encoder_2_first_run", "text_encoder_2_graph_capture"], enabled)
    }

    fn new(name: &'static str, profile_names: [&'static str; 2], enabled: bool) -> Self {
        Self { name, profile_names, enabled: enabled && captured::SUPPORTED, state: RefCell::new(State::default()) }
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

    /// Forget every captured graph and warmed shape (the model's weights were replaced: a graph
    /// would read the old ones). The next run of each shape runs eagerly, the one after captures.
    pub fn reset(&self) {
        let mut state = self.state.borrow_mut();
        state.graphs.clear();
        state.warmed.clear();
    }

    /// `forward(inputs)`, eagerly the first time a shape is seen, then through its graph.
    /// `forward` must depend on nothing but `inputs` and the model's weights.
    pub fn run(&self, inputs: &[&Tensor], forward: impl Fn(&[&Tensor]) -> Result<Tensor>) -> Result<Tensor> {
        if !self.enabled() || !inputs.iter().all(|t| matches!(t.device(), Device::Cuda(_))) {
            return forward(inputs);
        }
        let key: GraphKey = inputs.iter().map(|t| (t.dims().to_vec(), t.dtype())).collect();
        let mut state = self.state.borrow_mut();

        if let Some((_, graph)) = state.graphs.iter().find(|(k, _)| *k == key) {
            return graph.replay(inputs);
        }
        let Some((out_shape, out_dtype)) = state.warmed.get(&key).cloned() else {
            let out = crate::profile::startup_time(self.profile_names[0], Some(inputs[0].device()), || {
                captured::warm_up(inputs[0], || forward(inputs))
            })?;
            state.warmed.insert(key, (out.shape().clone(), out.dtype()));
            return Ok(out);
        };
        let captured = crate::profile::startup_time(self.profile_names[1], Some(inputs[0].device()), || {
            captured::Graph::capture(inputs, &out_shape, out_dtype, &forward)
        });
        match captured {
            Ok(graph) => {
                if state.graphs.len() == KEEP {
                    state.graphs.pop_front();
                }
                state.graphs.push_back((key, graph));
                let (_, graph) = state.graphs.back().expect("just pushed");
                graph.replay(inputs)
            }
            // Out of memory while capturing says nothing about graphs: the call fails as it would eagerly.
            Err(e) if crate::error::is_out_of_memory(&e) => Err(e),
            Err(e) => {
                // The error's first line: candle appends a backtrace to some.
                let why = e.to_string();
                let why = why.lines().next().unwrap_or_default();
                state.failed = Some(format!(
                    "CUDA graph capture of the {} failed, running it eagerly from now on: {why}",
                    self.name
                ));
                state.graphs.clear();
                forward(inputs)
            }
        }
    }
}

#[cfg(feature = "cuda")]
mod captured {
    use candle_core::cuda::cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
    use candle_core::cuda::cudarc::driver::CudaGraph;
    use std::cell::RefCell;

    use candle_core::{bail, DType, Device, Result, Shape, Tensor, TensorId};

    pub const SUPPORTED: bool = true;

    /// The eager first run of a shape, with candle's cache of small host-to-device uploads on, so
    /// that any such upload the step makes is on the device already when it is captured.
    pub fn warm_up(like: &Tensor, step: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
        let Device::Cuda(device) = like.device() else { return step() };
        let _uploads = device.enable_cuda_graph_htod_cache();
        step()
    }

    pub struct Graph {
        inputs: Vec<Tensor>,
        /// Which tensor each input buffer last received: an input that is that very tensor again
        /// (a generation's text context, the same at every step) is not copied again. Candle's
        /// tensors do not change once made, and their ids are never reused.
        copied: RefCell<Vec<Option<TensorId>>>,
        out: Tensor,
        graph: CudaGraph,
    }

    impl Graph {
        pub fn capture(
            inputs: &[&Tensor],
            out_shape: &Shape,
            out_dtype: DType,
            forward: impl Fn(&[&Tensor]) -> Result<Tensor>,
        ) -> Result<Self> {
            let Device::Cuda(device) = inputs[0].device() else { bail!("CUDA graphs need CUDA tensors") };
            let inputs = inputs.iter().map(|t| t.copy()).collect::<Result<Vec<_>>>()?;
            let out = Tensor::zeros(out_shape, out_dtype, inputs[0].device())?;
            let stream = device.cuda_stream();
            stream.synchronize().map_err(candle_core::Error::wrap)?;
            let _uploads = device.enable_cuda_graph_htod_cache();
            stream
                .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                .map_err(candle_core::Error::wrap)?;
            // Every tensor the run allocates is freed before the capture ends: `result` drops here.
            let views: Vec<&Tensor> = inputs.iter().collect();
            let recorded = forward(&views).and_then(|result| out.slice_set(&result, 0, 0));
            let ended = stream.end_capture(CUgraphInstantiate_flags(0));
            recorded?;
            let graph = match ended.map_err(candle_core::Error::wrap)? {
                Some(graph) => graph,
                None => bail!("the captured graph is empty"),
            };
            graph.upload().map_err(candle_core::Error::wrap)?;
            let copied = RefCell::new(vec![None; inputs.len()]);
            Ok(Self { inputs, copied, out, graph })
        }

        /// Copies the inputs into the graph's buffers, replays it, and returns a copy of its output
        /// (the next replay overwrites the buffer).
        pub fn replay(&self, inputs: &[&Tensor]) -> Result<Tensor> {
            let mut copied = self.copied.borrow_mut();
            for ((buffer, input), last) in self.inputs.iter().zip(inputs).zip(copied.iter_mut()) {
                if *last == Some(input.id()) {
                    continue;
                }
                *last = None; // a failed copy leaves the buffer unknown
                buffer.slice_set(&input.contiguous()?, 0, 0)?;
                *last = Some(input.id());
            }
            self.graph.launch().map_err(candle_core::Error::wrap)?;
            self.out.copy()
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod captured {
    use candle_core::{bail, DType, Result, Shape, Tensor};

    pub const SUPPORTED: bool = false;

    pub fn warm_up(_like: &Tensor, step: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
        step()
    }

    pub struct Graph;

    impl Graph {
        pub fn capture(_: &[&Tensor], _: &Shape, _: DType, _: impl Fn(&[&Tensor]) -> Result<Tensor>) -> Result<Self> {
            bail!("this build has no CUDA")
        }

        pub fn replay(&self, _: &[&Tensor]) -> Result<Tensor> {
            bail!("this build has no CUDA")
        }
    }
}
