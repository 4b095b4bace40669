/**
 * The schedulers' options: diffusers' scheduler classes, their config fields in camelCase.
 *
 * A call's `scheduler` picks the class (`type`) and changes fields of its config; fields left out
 * keep the model folder's scheduler/scheduler_config.json value (or diffusers' default when the
 * folder has none), as diffusers' `Class.from_config(pipe.scheduler.config, **fields)` does. Without
 * `type`, the folder's own class runs (`pipe.info.scheduler`). The fields' types and ranges are
 * checked once, by the core (its messages name the field: `scheduler.betaEnd`); here the value is
 * only converted to diffusers' snake_case names.
 */

import type { RawGenerateOptions } from "./generated/native.js";
import { invalid, isPlainObject } from "./validate.js";

export type BetaSchedule = "linear" | "scaled_linear" | "squaredcos_cap_v2";
export type TimestepSpacing = "leading" | "trailing" | "linspace";
export type PredictionType = "epsilon" | "v_prediction" | "sample";

export const TIMESTEP_SPACINGS: readonly TimestepSpacing[] = ["leading", "trailing", "linspace"];

/** The noise-schedule fields every scheduler has. Defaults: the model folder's, else diffusers'. */
export interface NoiseScheduleOptions {
  /** Timesteps the model was trained on. Default: the model's (1000). */
  numTrainTimesteps?: number;
  /** First beta of the schedule. Default: the model's (diffusers: 0.0001; SD1.5: 0.00085). */
  betaStart?: number;
  /** Last beta of the schedule. Default: the model's (diffusers: 0.02; SD1.5: 0.012). */
  betaEnd?: number;
  /** How betas go from betaStart to betaEnd. Default: the model's (diffusers: "linear"; SD1.5: "scaled_linear"). */
  betaSchedule?: BetaSchedule;
  /** Explicit betas, one per training timestep, replacing the schedule. Default: none. */
  trainedBetas?: readonly number[];
  /** What the UNet predicts. Default: the model's (diffusers: "epsilon"; SD2.x 768: "v_prediction"). */
  predictionType?: PredictionType;
  /** How inference timesteps are spread over the training ones. Default: the model's (diffusers: "leading" for most classes). */
  timestepSpacing?: TimestepSpacing;
  /** Added to every leading-spaced timestep. Default: the model's (diffusers: 0; SD1.5: 1). */
  stepsOffset?: number;
}

/** DDIM (Song et al. 2020) as diffusers' DDIMScheduler. */
export interface DdimSchedulerOptions extends NoiseScheduleOptions {
  type?: "ddim" | "DDIMScheduler";
  /** DDIM's eta, between 0 and 1: 0 is deterministic DDIM, 1 adds DDPM-like noise. Default 0. */
  eta?: number;
  /** Use alpha_cumprod = 1 for the step after the last. Default: the model's (diffusers: true; SD1.5: false). */
  setAlphaToOne?: boolean;
  /** Clip the predicted x0 to [-clipSampleRange, clipSampleRange]. Default: the model's (diffusers: true; SD1.5: false). */
  clipSample?: boolean;
  /** Bound for clipSample. Default: the model's (diffusers: 1). */
  clipSampleRange?: number;
  /** Dynamic thresholding of x0 (pixel-space models only: true is refused for Stable Diffusion). Default: the model's (false). */
  thresholding?: boolean;
  /** Quantile for dynamic thresholding. Default: the model's (diffusers: 0.995). */
  dynamicThresholdingRatio?: number;
  /** Bound for dynamic thresholding. Default: the model's (diffusers: 1). */
  sampleMaxValue?: number;
  /** Rescale betas to zero terminal SNR. Default: the model's (diffusers: false). */
  rescaleBetasZeroSnr?: boolean;
}

/**
 * PNDM (Liu et al. 2022) as diffusers' PNDMScheduler, the scheduler SD1.x folders ship: Runge-Kutta
 * warm-up calls then linear multistep (PLMS) steps. "plms" is PNDM with `skipPrkSteps: true`.
 */
export interface PndmSchedulerOptions extends NoiseScheduleOptions {
  type?: "pndm" | "PNDMScheduler" | "plms";
  /**
   * Skip the 12 Runge-Kutta warm-up calls and run PLMS from the start (n steps are n + 1 UNet calls:
   * the second timestep runs twice). false needs at least 4 steps (n steps are n + 9 calls).
   * Default: the model's (diffusers: false; SD1.5: true).
   */
  skipPrkSteps?: boolean;
  /** Use alpha_cumprod = 1 for the step after the last. Default: the model's (diffusers: false). */
  setAlphaToOne?: boolean;
  /** What the UNet predicts ("sample" is not a PNDM prediction). Default: the model's (diffusers: "epsilon"). */
  predictionType?: Exclude<PredictionType, "sample">;
}

/** DDPM's step noise scale: the posterior variance, its log-space form, or the step's beta. */
export type VarianceType = "fixed_small" | "fixed_small_log" | "fixed_large";

/** DDPM (Ho et al. 2020) ancestral sampling as diffusers' DDPMScheduler: fresh noise at every timestep above 0. */
export interface DdpmSchedulerOptions extends NoiseScheduleOptions {
  type?: "ddpm" | "DDPMScheduler";
  /**
   * How the step noise is scaled. Default: the model's (diffusers: "fixed_small"). "learned" and
   * "learned_range" (models that predict their variance) and "fixed_large_log" (NaN in diffusers' DDPM) are refused.
   */
  varianceType?: VarianceType;
  /** Clip the predicted x0 to [-clipSampleRange, clipSampleRange]. Default: the model's (diffusers: true; SD1.5: false). */
  clipSample?: boolean;
  /** Bound for clipSample. Default: the model's (diffusers: 1). */
  clipSampleRange?: number;
  /** Dynamic thresholding of x0 (pixel-space models only: true is refused for Stable Diffusion). Default: the model's (false). */
  thresholding?: boolean;
  /** Quantile for dynamic thresholding. Default: the model's (diffusers: 0.995). */
  dynamicThresholdingRatio?: number;
  /** Bound for dynamic thresholding. Default: the model's (diffusers: 1). */
  sampleMaxValue?: number;
  /** Rescale betas to zero terminal SNR. Default: the model's (diffusers: false). */
  rescaleBetasZeroSnr?: boolean;
}

/**
 * LCM (Luo et al. 2023) as diffusers' LCMScheduler, for latent consistency models and LCM-LoRA
 * (typically 2 to 8 steps, guidance 1 to 2): fresh noise after every step but the last.
 * Its timesteps come from `originalInferenceSteps`; `timestepSpacing` and `stepsOffset` are accepted
 * but, as in diffusers, change nothing.
 */
export interface LcmSchedulerOptions extends NoiseScheduleOptions {
  type?: "lcm" | "LCMScheduler";
  /** Steps of the distillation schedule the timesteps are picked from; numInferenceSteps may not exceed it. Default: the model's (diffusers: 50). */
  originalInferenceSteps?: number;
  /** The timestep's factor in the consistency boundary scalings c_skip and c_out. Default: the model's (diffusers: 10). */
  timestepScaling?: number;
  /** Use alpha_cumprod = 1 below timestep 0 (LCM's timesteps never get there). Default: the model's (diffusers: true). */
  setAlphaToOne?: boolean;
  /** Clip the predicted x0 to [-clipSampleRange, clipSampleRange]. Default: the model's (diffusers: false). */
  clipSample?: boolean;
  /** Bound for clipSample. Default: the model's (diffusers: 1). */
  clipSampleRange?: number;
  /** Dynamic thresholding of x0 (pixel-space models only: true is refused for Stable Diffusion). Default: the model's (false). */
  thresholding?: boolean;
  /** Quantile for dynamic thresholding. Default: the model's (diffusers: 0.995). */
  dynamicThresholdingRatio?: number;
  /** Bound for dynamic thresholding. Default: the model's (diffusers: 1). */
  sampleMaxValue?: number;
  /** Rescale betas to zero terminal SNR. Default: the model's (diffusers: false). */
  rescaleBetasZeroSnr?: boolean;
}

/** Which sigma schedule the Euler-like schedulers step through (at most one may be true). */
export interface SigmaScheduleOptions {
  /** Karras et al.'s sigmas (rho 7). Default: the model's (diffusers: false). */
  useKarrasSigmas?: boolean;
  /** Sigmas evenly spaced in log sigma. Default: the model's (diffusers: false). */
  useExponentialSigmas?: boolean;
  /** Beta(0.6, 0.6) sigmas: not supported (true is refused). Default: the model's (diffusers: false). */
  useBetaSigmas?: boolean;
}

/** Euler (Karras et al. 2022) as diffusers' EulerDiscreteScheduler. */
export interface EulerDiscreteSchedulerOptions extends NoiseScheduleOptions, SigmaScheduleOptions {
  type?: "euler" | "EulerDiscreteScheduler" | "euler-karras";
  /** How sigmas are read off the training ones. Default: the model's (diffusers: "linear"). */
  interpolationType?: "linear" | "log_linear";
  /** Smallest sigma of Karras/exponential sigmas; null: the schedule's. Default: the model's (diffusers: null). */
  sigmaMin?: number | null;
  /** Largest sigma of Karras/exponential sigmas; null: the schedule's. Default: the model's (diffusers: null). */
  sigmaMax?: number | null;
  /** "continuous": the UNet gets 0.25 ln(sigma) as its timestep (with vPrediction only). Default: the model's (diffusers: "discrete"). */
  timestepType?: "discrete" | "continuous";
  /** Rescale betas to zero terminal SNR. Default: the model's (diffusers: false). */
  rescaleBetasZeroSnr?: boolean;
  /** The sigma after the last step: 0, or the smallest training sigma. Default: the model's (diffusers: "zero"). */
  finalSigmasType?: "zero" | "sigma_min";
}

/** Euler ancestral (fresh noise every step) as diffusers' EulerAncestralDiscreteScheduler. */
export interface EulerAncestralDiscreteSchedulerOptions extends NoiseScheduleOptions {
  type?: "euler-ancestral" | "EulerAncestralDiscreteScheduler" | "euler-a";
  /** Rescale betas to zero terminal SNR. Default: the model's (diffusers: false). */
  rescaleBetasZeroSnr?: boolean;
}

/** Heun's method (two UNet calls a step) as diffusers' HeunDiscreteScheduler. */
export interface HeunDiscreteSchedulerOptions extends NoiseScheduleOptions, SigmaScheduleOptions {
  type?: "heun" | "HeunDiscreteScheduler" | "heun-karras";
  /** Clip the predicted x0 to [-clipSampleRange, clipSampleRange]. Default: the model's (diffusers: false). */
  clipSample?: boolean;
  /** Bound for clipSample. Default: the model's (diffusers: 1). */
  clipSampleRange?: number;
}

/** Where the last step lands: "zero" (the clean sample) or "sigma_min" (the smallest training noise level). */
export type FinalSigmasType = "zero" | "sigma_min";

/** The noise-level spacing fields the multistep schedulers share (at most one may be true). */
export interface MultistepSigmaOptions {
  /** Karras et al.'s noise levels (rho 7) over the whole training range, timesteps rounded from them. Not with betaSchedule "squaredcos_cap_v2". Default: the model's (diffusers: false). */
  useKarrasSigmas?: boolean;
  /** Noise levels evenly spaced in log space. Not with betaSchedule "squaredcos_cap_v2". Default: the model's (diffusers: false). */
  useExponentialSigmas?: boolean;
  /** Beta-distributed noise levels: not supported (true is refused). Default: the model's (false). */
  useBetaSigmas?: boolean;
  /** Flow-matching noise levels, for flow models: not supported (true is refused). Default: the model's (false). */
  useFlowSigmas?: boolean;
  /** The noise level after the last step. Default: the model's (diffusers: "zero"). */
  finalSigmasType?: FinalSigmasType;
  /** Dynamic thresholding of x0 (pixel-space models only: true is refused for Stable Diffusion). Default: the model's (false). */
  thresholding?: boolean;
  /** Quantile for dynamic thresholding. Default: the model's (diffusers: 0.995). */
  dynamicThresholdingRatio?: number;
  /** Bound for dynamic thresholding. Default: the model's (diffusers: 1). */
  sampleMaxValue?: number;
  /** Rescale betas to zero terminal SNR. Default: the model's (diffusers: false). */
  rescaleBetasZeroSnr?: boolean;
}

/**
 * DPM-Solver / DPM-Solver++ multistep (Lu et al. 2022) as diffusers' DPMSolverMultistepScheduler: "DPM++ 2M",
 * with "dpm++-2m-karras", "dpm++-2m-sde" and "dpm++-2m-sde-karras" as presets. Its timestepSpacing default
 * is "linspace"; "leading" spaces numTrainTimesteps // (steps + 1).
 */
export interface DpmSolverMultistepSchedulerOptions extends NoiseScheduleOptions, MultistepSigmaOptions {
  type?: "dpmsolver-multistep" | "DPMSolverMultistepScheduler" | "dpm++-2m" | "dpm++-2m-karras" | "dpm++-2m-sde" | "dpm++-2m-sde-karras";
  /** "dpmsolver++", "sde-dpmsolver++" (fresh noise each step), or diffusers' deprecated "dpmsolver" / "sde-dpmsolver" (which need finalSigmasType "sigma_min"). Default: the model's (diffusers: "dpmsolver++"). */
  algorithmType?: "dpmsolver++" | "sde-dpmsolver++" | "dpmsolver" | "sde-dpmsolver";
  /** The solver's order, 1, 2 or 3 (2 for guided sampling; "sde-dpmsolver" has no 3). Default: the model's (diffusers: 2). */
  solverOrder?: 1 | 2 | 3;
  /** The second-order update. Default: the model's (diffusers: "midpoint"). */
  solverType?: "midpoint" | "heun";
  /** With fewer than 15 steps, the last two steps drop to lower orders (steadier). Default: the model's (diffusers: true). */
  lowerOrderFinal?: boolean;
  /** The last step is first order whatever the step count. Default: the model's (diffusers: false). */
  eulerAtFinal?: boolean;
  /** Uniform steps in log SNR (Lu et al.'s lambdas). Not with betaSchedule "squaredcos_cap_v2". Default: the model's (diffusers: false). */
  useLuLambdas?: boolean;
  /** Timesteps whose log(alpha / sigma) is below this are cut off (cosine-schedule models use -5.1); null: none (diffusers' -Infinity, which JSON cannot carry). Default: the model's (diffusers: -Infinity, read as null). */
  lambdaMinClipped?: number | null;
  /** Models that predict their variance: not supported (only null). Default: the model's (null). */
  varianceType?: null;
}

/**
 * UniPC (Zhao et al. 2023) as diffusers' UniPCMultistepScheduler: a predictor-corrector with one UNet call a step,
 * with "unipc-karras" as a preset. Its timestepSpacing default is "linspace"; "leading" spaces
 * numTrainTimesteps // (steps + 1).
 */
export interface UniPcMultistepSchedulerOptions extends NoiseScheduleOptions, MultistepSigmaOptions {
  type?: "unipc" | "UniPCMultistepScheduler" | "unipc-karras";
  /** The solver's order, 1, 2 or 3 (2 for guided sampling, 3 for unconditional). Default: the model's (diffusers: 2). */
  solverOrder?: 1 | 2 | 3;
  /** B(h): "bh2" for guided sampling, "bh1" (which needs finalSigmasType "sigma_min"). Default: the model's (diffusers: "bh2"). */
  solverType?: "bh1" | "bh2";
  /** Solve for the clean sample (true) or the noise (false, which needs finalSigmasType "sigma_min"). Default: the model's (diffusers: true). */
  predictX0?: boolean;
  /** The last steps use at most as many previous outputs as steps remain. Default: the model's (diffusers: true). */
  lowerOrderFinal?: boolean;
  /** Steps (0-based) whose result the next step does not correct. Default: the model's (diffusers: []). */
  disableCorrector?: readonly number[];
  /** The smallest noise level of Karras / exponential spacing; null: the smallest training one. Default: the model's (null). */
  sigmaMin?: number | null;
  /** The largest noise level of Karras / exponential spacing; null: the largest training one. Default: the model's (null). */
  sigmaMax?: number | null;
  /** Flow models' timestep shift: not supported (true is refused). Default: the model's (false). */
  useDynamicShifting?: boolean;
}

/** Any scheduler's options, told apart by `type`. */
export type SchedulerOptions =
  | DdimSchedulerOptions
  | PndmSchedulerOptions
  | DdpmSchedulerOptions
  | LcmSchedulerOptions
  | EulerDiscreteSchedulerOptions
  | EulerAncestralDiscreteSchedulerOptions
  | HeunDiscreteSchedulerOptions
  | DpmSolverMultistepSchedulerOptions
  | UniPcMultistepSchedulerOptions;

/** A scheduler by name ("ddim", a diffusers class name, or a preset such as "dpm++-2m-karras"), or its options. */
export type SchedulerChoice = SchedulerOptions | SchedulerOptions["type"] & string;

const CAMEL_KEY = /^[a-z][a-zA-Z0-9]*$/;

/** `betaEnd` -> `beta_end`. */
function snakeCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/**
 * A call's `scheduler` (named `option` in messages) in the binding's shape: `{ type, ...fields }`
 * with diffusers' snake_case field names. Values pass as they are; the core checks them. @internal
 */
export function toRawScheduler(value: unknown, option = "scheduler"): NonNullable<RawGenerateOptions["scheduler"]> {
  if (typeof value === "string") {
    if (value.length === 0) throw invalid("scheduler name or options object", option, value);
    return { type: value };
  }
  if (!isPlainObject(value)) throw invalid("scheduler name or plain object", option, value);
  const raw: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(value)) {
    if (field === undefined) continue;
    if (!CAMEL_KEY.test(key)) throw invalid("camelCase option name", `${option} key`, key);
    if (key === "type" && typeof field !== "string") throw invalid("string", `${option}.type`, field);
    raw[snakeCase(key)] = plain(field, `${option}.${key}`);
  }
  return raw;
}

/** A field's value as JSON crosses the binding: numbers, strings, booleans, null and arrays of them. */
function plain(value: unknown, option: string): unknown {
  if (typeof value === "number" && !Number.isFinite(value)) throw invalid("finite number", option, value);
  if (value === null || ["number", "string", "boolean"].includes(typeof value)) return value;
  if (Array.isArray(value) || ArrayBuffer.isView(value)) {
    return Array.from(value as ArrayLike<unknown>, (v, i) => plain(v, `${option}[${i}]`));
  }
  throw invalid("number, string, boolean or array", option, value);
}
