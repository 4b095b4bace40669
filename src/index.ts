/**
 * candlewick: Stable Diffusion in Node.js, Bun and Deno.
 *
 * ```ts
 * const pipe = await StableDiffusionPipeline.fromPretrained("./stable-diffusion-v1-5");
 * const [image] = await pipe.generate({ prompt: "a photo of an astronaut riding a horse on mars", seed: 42 });
 * await image.savePng("astronaut.png");
 * ```
 */

export { StableDiffusionPipeline, type GeneratedLatents, type GpuMemory, type PipelineInfo } from "./pipeline.js";
export { PipelinePool, type PoolOptions } from "./pool.js";
export { createServer, CandlewickServer, type ListenOptions, type ServerOptions } from "./server/create-server.js";
export { GeneratedImage, type PhaseTimings, type ResolvedSettings } from "./image.js";
export { imageGrid, type GridOptions } from "./grid.js";
export type { ImageSource, RawImageData } from "./image-input.js";
export type {
  AttentionBackend, ConvolutionPath, DType, Device, GenerateOptions, GenerateProgress, LatentsOptions, LoadOptions, LoraInput, PreviewImage,
  TextualInversionOptions,
} from "./options.js";
export { convertSingleFile, type ConvertOptions, type ConvertResult } from "./convert.js";
export type {
  BetaSchedule,
  DdimSchedulerOptions,
  DdpmSchedulerOptions,
  DpmSolverMultistepSchedulerOptions,
  EulerAncestralDiscreteSchedulerOptions,
  EulerDiscreteSchedulerOptions,
  FinalSigmasType,
  HeunDiscreteSchedulerOptions,
  LcmSchedulerOptions,
  MultistepSigmaOptions,
  NoiseScheduleOptions,
  PndmSchedulerOptions,
  PredictionType,
  SchedulerChoice,
  SchedulerOptions,
  SigmaScheduleOptions,
  TimestepSpacing,
  UniPcMultistepSchedulerOptions,
  VarianceType,
} from "./schedulers.js";
export type { BatchOptions, BatchProgress, BatchResult } from "./batch/generate-batch.js";
export type { BatchDefaults, BatchInput } from "./batch/inputs.js";
export { downloadPipeline, type DownloadProgress, type HubOptions, type Snapshot } from "./hub/download.js";
export type { PngOptions } from "./image.js";
export { readTextChunks } from "./png-text.js";
export { CandlewickError } from "./errors.js";
export { nativeInfo, type NativeInfo } from "./binding.js";
