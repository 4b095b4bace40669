//! The one denoising loop every task runs (diffusers' step 7 of each pipeline): classifier-free
//! guidance, the UNet call (through its CUDA graph), the scheduler step, progress and
//! cancellation. Tasks differ only in what they hand it: the starting latents, the scheduler and
//! the conditioning.

use candle_core::{DType, IndexOp, Tensor};

use super::observer::{Observer, StepProgress};
use crate::cuda::graph::GraphedModel;
use crate::error::{Error, Result};
use crate::models::attention_processor::Context;
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::schedulers::{Scheduler, StepNoise};

/// What the UNet is conditioned on besides the latents and the timestep. Today the text (and
/// each cross-attention layer's keys and values of it, made once a generation); it grows here:
/// SDXL's added time and text embeddings, an inpainting UNet's extra input channels.
pub struct Conditioning {
    /// Unconditional rows first when guiding, as diffusers concatenates them.
    pub context: Context,
    /// Input channels the UNet takes after the latents' (an inpainting UNet's mask and
    /// masked-image latents), in the UNet's dtype, rows doubled when guiding: concatenated to
    /// the scaled latents at every step.
    pub extra_channels: Option<Tensor>,
}

/// What a task does to the latents after each scheduler step, before anyone sees them
/// (inpainting with an ordinary UNet puts the known region back).
pub trait AfterStep {
    /// `next_timestep`: the timestep of the next UNet call, None after the last.
    fn apply(&self, scheduler: &dyn Scheduler, next_timestep: Option<f64>, latents: Tensor) -> Result<Tensor>;
}

/// The loop's settings for one call.
pub struct DenoiseOptions<'a> {
    /// Classifier-free guidance scale (when `do_guidance`).
    pub guidance_scale: f64,
    /// Run the unconditional rows too: guidance_scale > 1 and a UNet without LCM's guidance
    /// embedding (diffusers' `do_classifier_free_guidance`).
    pub do_guidance: bool,
    /// The UNet's dtype (latents and scheduler arithmetic stay f32).
    pub dtype: DType,
    /// Where in `scheduler.timesteps()` the run starts (img2img's `strength`; 0 for a full run).
    pub begin_index: usize,
    /// Where it stops (exclusive; SDXL's `denoising_end`): None runs to the last timestep.
    pub end_index: Option<usize>,
    pub after_step: Option<&'a dyn AfterStep>,
}

/// The UNet step's CUDA graphs and the loop that uses them.
pub struct Denoiser {
    graphs: GraphedModel,
}

impl Denoiser {
    pub fn new(cuda_graphs: bool) -> Self {
        Self { graphs: GraphedModel::unet(cuda_graphs) }
    }

    /// Drop the captured graphs: the UNet's weights changed (LoRA), and a graph reads the
    /// memory of the weights it was captured with.
    pub fn reset_graphs(&self) {
        self.graphs.reset();
    }

    /// Why graph capture failed, once, as a warning.
    pub fn take_graph_failure(&self) -> Option<String> {
        self.graphs.take_failure()
    }

    /// Run `scheduler`'s timesteps from `begin_index` on, from `latents` (already scaled by
    /// `init_noise_sigma`, or noised to the first timestep).
    /// Returns the denoised latents, f32. Ends with [`Error::Cancelled`] when the observer is
    /// cancelled between two steps, and with an error when the latents turn NaN or infinite
    /// (a black image otherwise).
    pub fn run(
        &self,
        unet: &UNet2DConditionModel,
        conditioning: &Conditioning,
        mut latents: Tensor,
        scheduler: &mut dyn Scheduler,
        noise: &mut dyn StepNoise,
        options: &DenoiseOptions,
        observer: &Observer,
    ) -> Result<Tensor> {
        let do_guidance = options.do_guidance;
        let batch = latents.dim(0)?;
        let all = scheduler.timesteps();
        let end = options.end_index.unwrap_or(all.len()).min(all.len());
        let Some(timesteps) = all.get(options.begin_index..end).filter(|t| !t.is_empty()).map(<[f64]>::to_vec) else {
            return Err(Error::Internal(format!("no timesteps from index {} of {}", options.begin_index, all.len())));
        };
        for (i, &t) in timesteps.iter().enumerate() {
            if observer.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let model_input = if do_guidance { Tensor::cat(&[&latents, &latents], 0)? } else { latents.clone() };
            let model_input = scheduler.scale_model_input(&model_input, t)?.to_dtype(options.dtype)?;
            let model_input = match &conditioning.extra_channels {
                Some(extra) => Tensor::cat(&[&model_input, extra], 1)?,
                None => model_input,
            };
            let noise_pred = crate::profile::scope("unet", || {
                self.predict_noise(unet, &model_input, t, &conditioning.context)?.to_dtype(DType::F32)
            })?;
            let noise_pred = if do_guidance {
                let (uncond, text) = (noise_pred.i(..batch)?, noise_pred.i(batch..)?);
                (&uncond + ((text - &uncond)? * options.guidance_scale)?)?
            } else {
                noise_pred
            };
            latents = scheduler.step(&noise_pred, t, &latents, noise)?;
            if let Some(after) = options.after_step {
                latents = after.apply(&*scheduler, timesteps.get(i + 1).copied(), latents)?;
            }
            observer.step_done(StepProgress { step: i + 1, total_steps: timesteps.len(), timestep: t }, &latents);
        }
        if observer.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if !all_finite(&latents)? {
            return Err(Error::NonFinite(format!(
                "the latents became NaN or infinite during denoising (guidance_scale {}, {} scheduler steps): \
                 lower guidance_scale, or check the latents and the scheduler's config",
                options.guidance_scale,
                timesteps.len()
            )));
        }
        Ok(latents)
    }

    /// The UNet's noise prediction for `sample` at `timestep`, through the shape's CUDA graph
    /// when graphs are on.
    fn predict_noise(
        &self,
        unet: &UNet2DConditionModel,
        sample: &Tensor,
        timestep: f64,
        context: &Context,
    ) -> candle_core::Result<Tensor> {
        // LCM's guidance condition is added to the timestep's projection here, on the host side
        // of the graph: the graph's timestep input carries it.
        let t_proj = unet.time_proj_conditioned(timestep, sample, context)?;
        if !self.graphs.enabled() {
            return unet.forward_with_time_proj(sample, &t_proj, context);
        }
        // The graph's inputs: the latents, the timestep, the text, SDXL's added embedding (when
        // the UNet takes one) and each layer's keys and values of the text.
        let mut inputs = vec![sample, &t_proj, &context.hidden];
        let added = context.added_embedding.is_some() as usize;
        inputs.extend(&context.added_embedding);
        inputs.extend(&context.keys_values);
        self.graphs.run(&inputs, |x| {
            let context = Context {
                hidden: x[2].clone(),
                keys_values: x[3 + added..].iter().map(|&kv| kv.clone()).collect(),
                time_condition: None,
                added_embedding: (added == 1).then(|| x[3].clone()),
            };
            unet.forward_with_time_proj(x[0], x[1], &context)
        })
    }
}

/// Whether every value of an f32 tensor is finite: a sum carries NaN and infinity through
/// (a max may skip NaN); one reduction, one scalar read back.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    Ok(t.abs()?.sum_all()?.to_scalar::<f32>()?.is_finite())
}
