// Bad `scheduler` options. The TypeScript layer only converts field names to diffusers' snake_case
// and refuses what JSON cannot carry; the core checks the fields once (crates/candlewick-core/src/
// schedulers) and the binding renders its option names in camelCase. test/bad-options.test.ts
// sends each through a loaded pipeline and then generates successfully with it.
import type { BadCase } from "./bad-options.js";

const s = (scheduler: unknown) => ({ prompt: "a red apple", numInferenceSteps: 2, scheduler });

const DDIM_FIELDS =
  "numTrainTimesteps, betaStart, betaEnd, betaSchedule, trainedBetas, clipSample, clipSampleRange, setAlphaToOne, stepsOffset, predictionType, thresholding, dynamicThresholdingRatio, sampleMaxValue, timestepSpacing, rescaleBetasZeroSnr, eta";

const PNDM_FIELDS =
  "numTrainTimesteps, betaStart, betaEnd, betaSchedule, trainedBetas, skipPrkSteps, setAlphaToOne, predictionType, timestepSpacing, stepsOffset";

/** Refused by the TypeScript conversion (what JSON cannot carry), before the native module. */
export const BAD_SCHEDULER_SHAPES: BadCase[] = [
  { options: s(null), message: "Expected scheduler name or plain object for scheduler but received null" },
  { options: s(""), message: 'Expected scheduler name or options object for scheduler but received ""' },
  { options: s({ type: 1 }), message: "Expected string for scheduler.type but received 1" },
  { options: s({ eta: NaN }), message: "Expected finite number for scheduler.eta but received NaN" },
  { options: s({ trainedBetas: [0.1, Infinity] }), message: "Expected finite number for scheduler.trainedBetas[1] but received Infinity" },
  { options: s({ eta: {} }), message: "Expected number, string, boolean or array for scheduler.eta but received an empty object" },
  { options: s({ beta_end: 0.1 }), message: 'Expected camelCase option name for scheduler key but received "beta_end"' },
];

/** Refused by the core, rendered in JavaScript's spelling. */
export const BAD_SCHEDULER_FIELDS: BadCase[] = [
  { options: s({ eta: -0.5 }), message: "Expected number between 0 and 1 for scheduler.eta but received -0.5" },
  { options: s({ eta: "0" }), message: 'Expected number for scheduler.eta but received "0"' },
  { options: s({ etta: 0 }), message: `scheduler.etta is not an option of the ddim scheduler (DDIMScheduler); its options are ${DDIM_FIELDS}` },
  { options: s({ timestepSpacing: "middle" }), message: 'Expected one of "leading", "trailing", "linspace" for scheduler.timestepSpacing but received "middle"' },
  { options: s({ betaSchedule: "cosine" }), message: 'Expected one of "linear", "scaled_linear", "squaredcos_cap_v2" for scheduler.betaSchedule but received "cosine"' },
  { options: s({ predictionType: "v" }), message: 'Expected one of "epsilon", "v_prediction", "sample" for scheduler.predictionType but received "v"' },
  { options: s({ betaStart: 0.02, betaEnd: 0.01 }), message: "Expected number above scheduler.betaStart (0.02) and below 1 for scheduler.betaEnd but received 0.01" },
  { options: s({ stepsOffset: 1.5 }), message: "Expected integer >= 0 for scheduler.stepsOffset but received 1.5" },
  { options: s({ clipSample: "yes" }), message: 'Expected boolean for scheduler.clipSample but received "yes"' },
  { options: s({ numTrainTimesteps: 0 }), message: "Expected integer between 1 and 100000 for scheduler.numTrainTimesteps but received 0" },
  { options: s({ numTrainTimesteps: 2, trainedBetas: [0.1, 1.5] }), message: "Expected number >= 0 and < 1 for scheduler.trainedBetas[1] but received 1.5" },
  { options: s({ numTrainTimesteps: 2, trainedBetas: [0, 0] }), message: "Expected betas with at least one above 0 (all zero: the noise never changes, the image is black) for scheduler.trainedBetas but received all zeros" },
  { options: s({ thresholding: true }), message: "Expected false (dynamic thresholding is for pixel-space models and is not supported) for scheduler.thresholding but received true" },
  // PNDM, DDPM, LCM: what each refuses and why.
  { options: s({ type: "pndm", skipPrkSteps: false }), message: "Expected integer of at least 4 when scheduler.skipPrkSteps is false (PNDM's Runge-Kutta warm-up runs on the last 4 timesteps; set scheduler.skipPrkSteps to true for fewer steps) for numInferenceSteps but received 2" },
  { options: s({ type: "plms", eta: 0 }), message: `scheduler.eta is not an option of the pndm scheduler (PNDMScheduler); its options are ${PNDM_FIELDS}` },
  { options: s({ type: "ddpm", varianceType: "learned" }), message: 'Expected "fixed_small", "fixed_small_log" or "fixed_large" (a learned variance needs a model that predicts it in extra output channels; Stable Diffusion UNets output 4 channels) for scheduler.varianceType but received "learned"' },
  { options: s({ type: "lcm", originalInferenceSteps: 1 }), message: "Expected integer between 1 and scheduler.originalInferenceSteps (1): LCM picks its timesteps from that many for numInferenceSteps but received 2" },
  // Euler, Euler ancestral, Heun.
  { options: s({ type: "euler", useBetaSigmas: true }), message: "Expected false (beta sigmas are not supported; useKarrasSigmas or useExponentialSigmas are) for scheduler.useBetaSigmas but received true" },
  { options: s({ type: "euler-karras", useExponentialSigmas: true }), message: "Expected false when scheduler.useKarrasSigmas is true (only one sigma schedule can be used) for scheduler.useExponentialSigmas but received true" },
  { options: s({ type: "euler-a", predictionType: "sample" }), message: `Expected "epsilon" or "v_prediction" (diffusers' EulerAncestralDiscreteScheduler does not implement "sample") for scheduler.predictionType but received "sample"` },
  { options: s({ type: "heun", finalSigmasType: "zero" }), message: "scheduler.finalSigmasType is not an option of the heun scheduler (HeunDiscreteScheduler); its options are numTrainTimesteps, betaStart, betaEnd, betaSchedule, trainedBetas, predictionType, useKarrasSigmas, useExponentialSigmas, useBetaSigmas, clipSample, clipSampleRange, timestepSpacing, stepsOffset" },
  // DPM-Solver and UniPC: orders, combinations diffusers refuses or turns into NaN images.
  { options: s({ type: "dpm++-2m", solverOrder: 4 }), message: "Expected 1, 2 or 3 for scheduler.solverOrder but received 4" },
  { options: s({ type: "dpmsolver-multistep", algorithmType: "dpmsolver" }), message: 'Expected "sigma_min" with scheduler.algorithmType "dpmsolver" (as diffusers requires) for scheduler.finalSigmasType but received "zero"' },
  { options: s({ type: "dpm++-2m-karras", betaSchedule: "squaredcos_cap_v2" }), message: 'Expected false with scheduler.betaSchedule "squaredcos_cap_v2" (its first two timesteps coincide; diffusers fails) for scheduler.useKarrasSigmas but received true' },
  { options: s({ type: "unipc", solverType: "bh1" }), message: 'Expected "bh2" with scheduler.finalSigmasType "zero" (diffusers\' last bh1 step is NaN; use "sigma_min") for scheduler.solverType but received "bh1"' },
];
