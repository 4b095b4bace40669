/**
 * The DDIM scheduler's options: diffusers' DDIMScheduler config in camelCase, plus eta.
 * Every field overrides the model folder's scheduler/scheduler_config.json for one call; a field
 * left out keeps the folder's value, or diffusers' default when the folder has none.
 */

import type { RawSchedulerOptions } from "./generated/native.js";
import { boolean, checkOptionsObject, integerIn, invalid, numberAbove, numberIn, oneOf } from "./validate.js";

export type BetaSchedule = "linear" | "scaled_linear" | "squaredcos_cap_v2";
export type TimestepSpacing = "leading" | "trailing" | "linspace";
export type PredictionType = "epsilon" | "v_prediction" | "sample";

export const BETA_SCHEDULES: readonly BetaSchedule[] = ["linear", "scaled_linear", "squaredcos_cap_v2"];
export const TIMESTEP_SPACINGS: readonly TimestepSpacing[] = ["leading", "trailing", "linspace"];
export const PREDICTION_TYPES: readonly PredictionType[] = ["epsilon", "v_prediction", "sample"];

/** DDIM (Song et al. 2020) as diffusers' DDIMScheduler. */
export interface DdimSchedulerOptions {
  /** The scheduler. Default "ddim", the only one so far. */
  type?: "ddim";
  /** DDIM's eta, between 0 and 1: 0 is deterministic DDIM, 1 is DDPM-like noise. Default 0. */
  eta?: number;
  /** First beta of the schedule. Default: the model's (diffusers: 0.0001; SD1.5: 0.00085). */
  betaStart?: number;
  /** Last beta of the schedule. Default: the model's (diffusers: 0.02; SD1.5: 0.012). */
  betaEnd?: number;
  /** How betas go from betaStart to betaEnd. Default: the model's (diffusers: "linear"; SD1.5: "scaled_linear"). */
  betaSchedule?: BetaSchedule;
  /** Explicit betas, one per training timestep, replacing the schedule. Default: none. */
  trainedBetas?: readonly number[];
  /** Timesteps the model was trained on. Default: the model's (1000). */
  numTrainTimesteps?: number;
  /** How inference timesteps are spread over the training ones. Default: the model's (diffusers: "leading"). */
  timestepSpacing?: TimestepSpacing;
  /** Added to every inference timestep. Default: the model's (diffusers: 0; SD1.5: 1). */
  stepsOffset?: number;
  /** Use alpha_cumprod = 1 for the step after the last. Default: the model's (diffusers: true; SD1.5: false). */
  setAlphaToOne?: boolean;
  /** What the UNet predicts. Default: the model's (diffusers: "epsilon"; SD2.x 768: "v_prediction"). */
  predictionType?: PredictionType;
  /** Clip the predicted x0 to [-clipSampleRange, clipSampleRange]. Default: the model's (diffusers: true; SD1.5: false). */
  clipSample?: boolean;
  /** Bound for clipSample. Default: the model's (diffusers: 1). */
  clipSampleRange?: number;
  /** Dynamic thresholding of x0 (pixel-space models only: true is refused for Stable Diffusion). Default: the model's (diffusers: false). */
  thresholding?: boolean;
  /** Quantile for dynamic thresholding. Default: the model's (diffusers: 0.995). */
  dynamicThresholdingRatio?: number;
  /** Bound for dynamic thresholding. Default: the model's (diffusers: 1). */
  sampleMaxValue?: number;
  /** Rescale betas to zero terminal SNR. Default: the model's (diffusers: false). */
  rescaleBetasZeroSnr?: boolean;
}

/** Any scheduler's options (only DDIM so far). */
export type SchedulerOptions = DdimSchedulerOptions;

const KNOWN = [
  "type", "eta", "betaStart", "betaEnd", "betaSchedule", "trainedBetas", "numTrainTimesteps", "timestepSpacing",
  "stepsOffset", "setAlphaToOne", "predictionType", "clipSample", "clipSampleRange", "thresholding",
  "dynamicThresholdingRatio", "sampleMaxValue", "rescaleBetasZeroSnr",
] as const;

/** Check scheduler options (named `option` in messages) and convert them to the binding's shape. */
export function toRawScheduler(value: unknown, option = "scheduler"): RawSchedulerOptions {
  const o = checkOptionsObject(value, option, KNOWN);
  const raw: RawSchedulerOptions = {};
  const name = (key: string) => `${option}.${key}`;
  if (o.type !== undefined) oneOf(o.type, name("type"), ["ddim"]);
  if (o.eta !== undefined) raw.eta = numberIn(o.eta, name("eta"), 0, 1);
  if (o.betaStart !== undefined) raw.betaStart = below1(o.betaStart, name("betaStart"), 0, "number >= 0 and < 1");
  if (o.betaEnd !== undefined) {
    const start = raw.betaStart;
    const what = start === undefined ? "number > 0 and < 1" : `number above ${name("betaStart")} (${start}) and below 1`;
    raw.betaEnd = below1(o.betaEnd, name("betaEnd"), start ?? 0, what, true);
  }
  if (o.betaSchedule !== undefined) raw.betaSchedule = oneOf(o.betaSchedule, name("betaSchedule"), BETA_SCHEDULES);
  if (o.trainedBetas !== undefined) raw.trainedBetas = trainedBetas(o.trainedBetas, name("trainedBetas"));
  if (o.numTrainTimesteps !== undefined) {
    raw.numTrainTimesteps = integerIn(o.numTrainTimesteps, name("numTrainTimesteps"), 1, 100_000);
  }
  if (o.timestepSpacing !== undefined) {
    raw.timestepSpacing = oneOf(o.timestepSpacing, name("timestepSpacing"), TIMESTEP_SPACINGS);
  }
  if (o.stepsOffset !== undefined) raw.stepsOffset = integerIn(o.stepsOffset, name("stepsOffset"), 0, 100_000);
  if (o.setAlphaToOne !== undefined) raw.setAlphaToOne = boolean(o.setAlphaToOne, name("setAlphaToOne"));
  if (o.predictionType !== undefined) {
    raw.predictionType = oneOf(o.predictionType, name("predictionType"), PREDICTION_TYPES);
  }
  if (o.clipSample !== undefined) raw.clipSample = boolean(o.clipSample, name("clipSample"));
  if (o.clipSampleRange !== undefined) raw.clipSampleRange = numberAbove(o.clipSampleRange, name("clipSampleRange"), 0);
  if (o.thresholding !== undefined) raw.thresholding = boolean(o.thresholding, name("thresholding"));
  if (o.dynamicThresholdingRatio !== undefined) {
    raw.dynamicThresholdingRatio = numberAbove(o.dynamicThresholdingRatio, name("dynamicThresholdingRatio"), 0);
  }
  if (o.sampleMaxValue !== undefined) raw.sampleMaxValue = numberAbove(o.sampleMaxValue, name("sampleMaxValue"), 0);
  if (o.rescaleBetasZeroSnr !== undefined) {
    raw.rescaleBetasZeroSnr = boolean(o.rescaleBetasZeroSnr, name("rescaleBetasZeroSnr"));
  }
  return raw;
}

/** A beta: finite, >= min (> min when `exclusive`) and < 1. */
function below1(value: unknown, option: string, min: number, what: string, exclusive = false): number {
  const ok = typeof value === "number" && Number.isFinite(value) && (exclusive ? value > min : value >= min) && value < 1;
  if (!ok) throw invalid(what, option, value);
  return value as number;
}

function trainedBetas(value: unknown, option: string): number[] {
  const isList = Array.isArray(value) || value instanceof Float64Array || value instanceof Float32Array;
  if (!isList || (value as ArrayLike<unknown>).length === 0) throw invalid("non-empty array of numbers", option, value);
  const betas = Array.from(value as ArrayLike<unknown>);
  betas.forEach((beta, i) => below1(beta, `${option}[${i}]`, 0, "number >= 0 and < 1"));
  return betas as number[];
}
