// Option validation in TypeScript: exact messages, no native module needed. The limits come from
// src/options.ts (MAX_SIDE, MAX_STEPS, MAX_IMAGES_PER_PROMPT); messages follow sharp's shape.

import test from "ava";

import { CandlewickError } from "../src/errors.js";
import { checkGenerateOptions, checkLoadOptions, toRawLoadOptions } from "../src/options.js";
import { toRawScheduler } from "../src/schedulers.js";

const INVALID = "ERR_CANDLEWICK_INVALID_OPTION";

const rejects = test.macro({
  exec(t, options: unknown, message: string) {
    const error = t.throws(() => checkGenerateOptions(options), { instanceOf: CandlewickError, message });
    t.is(error?.code, INVALID);
  },
  title: (given, _options, message: string) => given ?? message,
});

const p = (extra: Record<string, unknown>) => ({ prompt: "a red apple", ...extra });

test(rejects, p({ width: 500 }), "Expected integer multiple of 8 for width but received 500");
test(rejects, p({ height: 500 }), "Expected integer multiple of 8 for height but received 500");
test(rejects, p({ width: 0 }), "Expected integer multiple of 8 for width but received 0");
test(rejects, p({ width: -64 }), "Expected integer multiple of 8 for width but received -64");
test(rejects, p({ width: 64.5 }), "Expected integer multiple of 8 for width but received 64.5");
test(rejects, p({ width: "512" }), 'Expected integer multiple of 8 for width but received "512"');
test(rejects, p({ height: 16384 }), "Expected integer between 8 and 8192 for height but received 16384");
test(rejects, p({ numInferenceSteps: 0 }), "Expected integer between 1 and 1000 for numInferenceSteps but received 0");
test(rejects, p({ numInferenceSteps: 1001 }), "Expected integer between 1 and 1000 for numInferenceSteps but received 1001");
test(rejects, p({ numInferenceSteps: 2.5 }), "Expected integer between 1 and 1000 for numInferenceSteps but received 2.5");
test(rejects, p({ numInferenceSteps: NaN }), "Expected integer between 1 and 1000 for numInferenceSteps but received NaN");
test(rejects, p({ numInferenceSteps: 30n }), "Expected integer between 1 and 1000 for numInferenceSteps but received 30n");
test(rejects, p({ guidanceScale: -1 }), "Expected finite number >= 0 for guidanceScale but received -1");
test(rejects, p({ guidanceScale: Infinity }), "Expected finite number >= 0 for guidanceScale but received Infinity");
test(rejects, p({ guidanceScale: "7.5" }), 'Expected finite number >= 0 for guidanceScale but received "7.5"');
test(rejects, p({ guidanceScale: null }), "Expected finite number >= 0 for guidanceScale but received null");
test(rejects, p({ numImagesPerPrompt: 0 }), "Expected integer between 1 and 64 for numImagesPerPrompt but received 0");
test(rejects, p({ numImagesPerPrompt: 65 }), "Expected integer between 1 and 64 for numImagesPerPrompt but received 65");
test(rejects, p({ seed: -1 }), "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seed but received -1");
test(rejects, p({ seed: 1.5 }), "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seed but received 1.5");
test(rejects, p({ seed: 2 ** 53 }), "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seed but received 9007199254740992");
test(rejects, p({ seed: 2n ** 64n }), "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seed but received 18446744073709551616n");
test(rejects, p({ seed: -1n }), "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seed but received -1n");
test(rejects, p({ seed: "42" }), 'Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seed but received "42"');
test(rejects, {}, "Expected string or non-empty array of strings for prompt but received undefined");
test(rejects, { prompt: [] }, "Expected string or non-empty array of strings for prompt but received an array of length 0");
test(rejects, { prompt: 42 }, "Expected string or non-empty array of strings for prompt but received 42");
test(rejects, { prompt: ["ok", 7] }, "Expected string for prompt[1] but received 7");
test(rejects, { prompt: ["a", "b", "c"], negativePrompt: ["x", "y"] }, "Expected string or array of 1 or 3 strings (one per prompt) for negativePrompt but received an array of length 2");
test(rejects, p({ negativePrompt: [null] }), "Expected string for negativePrompt[0] but received null");
test(rejects, p({ negativePrompt: 3 }), "Expected string or array of 1 or 1 strings (one per prompt) for negativePrompt but received 3");
test(rejects, p({ onProgress: "log" }), 'Expected function for onProgress but received "log"');
test(rejects, p({ onWarning: {} }), "Expected function for onWarning but received an object");
test(rejects, p({ signal: {} }), "Expected AbortSignal for signal but received an object");
test(rejects, p({ signal: new AbortController() }), "Expected AbortSignal for signal but received an AbortController");
test(rejects, "a red apple", 'Expected plain object for generate options but received "a red apple"');
test(rejects, undefined, "Expected options object with a prompt for generate options but received undefined");
test(rejects, new Map(), "Expected plain object for generate options but received a Map");
test("a typo in an option name is an error naming the key and the likely option", rejects, p({ guidence: 7 }), 'Unknown option "guidence" in generate options; did you mean "guidanceScale"?');
test(rejects, p({ steps: 30 }), 'Unknown option "steps" in generate options; did you mean "numInferenceSteps"?');
test(rejects, p({ frobnicate: 1 }), 'Unknown option "frobnicate" in generate options; known options: prompt, negativePrompt, numInferenceSteps, guidanceScale, width, height, numImagesPerPrompt, seed, seeds, latents, scheduler, onProgress, signal, onWarning');
test(rejects, p({ Width: 64 }), 'Unknown option "Width" in generate options; did you mean "width"?');

// Latents: shape, batch and data length; the model-dependent shape check is the core's.
const latents = (shape: unknown, data: unknown) => p({ latents: { shape, data } });
test(rejects, latents([1, 4, 8], new Float32Array(32)), "Expected array of 4 positive integers [batch, channels, height, width] for latents.shape but received an array of length 3");
test(rejects, latents([1, 4, 0, 8], new Float32Array(0)), "Expected array of 4 positive integers [batch, channels, height, width] for latents.shape but received an array of length 4");
test(rejects, latents([2, 4, 8, 8], new Float32Array(512)), "Expected batch of 1 (prompts x numImagesPerPrompt) for latents.shape[0] but received 2");
test(rejects, latents([1, 4, 8, 8], [0, 1]), "Expected Float32Array for latents.data but received an array of length 2");
test(rejects, latents([1, 4, 8, 8], new Float64Array(256)), "Expected Float32Array for latents.data but received a Float64Array");
test(rejects, latents([1, 4, 8, 8], new Float32Array(255)), "Expected Float32Array of 256 values (shape [1, 4, 8, 8]) for latents.data but received 255 values");
test(rejects, p({ latents: { shape: [1, 4, 8, 8], data: new Float32Array(256), dtype: "f32" } }), 'Unknown option "dtype" in latents; known options: shape, data');

// Scheduler options.
const s = (scheduler: unknown) => p({ scheduler });
test(rejects, s({ type: "euler" }), 'Expected one of "ddim" for scheduler.type but received "euler"');
test(rejects, s({ eta: -0.5 }), "Expected number between 0 and 1 for scheduler.eta but received -0.5");
test(rejects, s({ eta: 1.5 }), "Expected number between 0 and 1 for scheduler.eta but received 1.5");
test(rejects, s({ etta: 0 }), 'Unknown option "etta" in scheduler; did you mean "eta"?');
test(rejects, s({ timestepSpacing: "middle" }), 'Expected one of "leading", "trailing", "linspace" for scheduler.timestepSpacing but received "middle"');
test(rejects, s({ betaSchedule: "cosine" }), 'Expected one of "linear", "scaled_linear", "squaredcos_cap_v2" for scheduler.betaSchedule but received "cosine"');
test(rejects, s({ predictionType: "v" }), 'Expected one of "epsilon", "v_prediction", "sample" for scheduler.predictionType but received "v"');
test(rejects, s({ betaStart: -0.1 }), "Expected number >= 0 and < 1 for scheduler.betaStart but received -0.1");
test(rejects, s({ betaEnd: 1 }), "Expected number > 0 and < 1 for scheduler.betaEnd but received 1");
test(rejects, s({ betaStart: 0.02, betaEnd: 0.01 }), "Expected number above scheduler.betaStart (0.02) and below 1 for scheduler.betaEnd but received 0.01");
test(rejects, s({ stepsOffset: 1.5 }), "Expected integer between 0 and 100000 for scheduler.stepsOffset but received 1.5");
test(rejects, s({ dynamicThresholdingRatio: 0 }), "Expected finite number > 0 for scheduler.dynamicThresholdingRatio but received 0");
test(rejects, s({ sampleMaxValue: "1" }), 'Expected finite number > 0 for scheduler.sampleMaxValue but received "1"');
test(rejects, s({ numTrainTimesteps: 0 }), "Expected integer between 1 and 100000 for scheduler.numTrainTimesteps but received 0");
test(rejects, s({ clipSample: "yes" }), 'Expected boolean for scheduler.clipSample but received "yes"');
test(rejects, s({ clipSampleRange: -1 }), "Expected finite number > 0 for scheduler.clipSampleRange but received -1");
test(rejects, s({ trainedBetas: [] }), "Expected non-empty array of numbers for scheduler.trainedBetas but received an array of length 0");
test(rejects, s({ trainedBetas: [0.1, 1.5] }), "Expected number >= 0 and < 1 for scheduler.trainedBetas[1] but received 1.5");
test(rejects, s("ddim"), 'Expected plain object for scheduler but received "ddim"');

test("valid options convert to the binding's flat shape, numbers seeds as bigints", (t) => {
  const onProgress = () => {};
  const signal = new AbortController().signal;
  const checked = checkGenerateOptions({
    prompt: ["a", "b"],
    negativePrompt: "blurry",
    numInferenceSteps: 30,
    guidanceScale: 0,
    width: 64,
    height: 8192,
    numImagesPerPrompt: 2,
    seed: 2 ** 53 - 1,
    scheduler: { type: "ddim", eta: 0, timestepSpacing: "trailing", setAlphaToOne: false, trainedBetas: new Float64Array([0.5]) },
    onProgress,
    signal,
  });
  t.deepEqual(checked.raw, {
    prompt: ["a", "b"],
    negativePrompt: ["blurry"],
    numInferenceSteps: 30,
    guidanceScale: 0,
    width: 64,
    height: 8192,
    numImagesPerPrompt: 2,
    seed: 9007199254740991n,
    scheduler: { eta: 0, timestepSpacing: "trailing", setAlphaToOne: false, trainedBetas: [0.5] },
  });
  t.is(checked.onProgress, onProgress);
  t.is(checked.signal, signal);
});

test("undefined values count as absent, and the biggest seed passes as a bigint", (t) => {
  const { raw } = checkGenerateOptions({ prompt: "x", width: undefined, seed: 2n ** 64n - 1n, scheduler: {} });
  t.deepEqual(raw, { prompt: ["x"], seed: 18446744073709551615n, scheduler: {} });
});

test("latents of the right size pass through without a copy", (t) => {
  const data = new Float32Array(2 * 4 * 4 * 4);
  const { raw } = checkGenerateOptions({ prompt: ["a", "b"], latents: { shape: [2, 4, 4, 4], data } });
  t.deepEqual(raw.latents?.shape, [2, 4, 4, 4]);
  t.is(raw.latents?.data, data);
});

const rejectsLoad = test.macro({
  exec(t, options: unknown, message: string) {
    t.throws(() => toRawLoadOptions(options), { instanceOf: CandlewickError, message });
  },
  title: (given, _options, message: string) => given ?? `load: ${message}`,
});

test(rejectsLoad, { device: "gpu" }, 'Expected one of "auto", "cpu", "cuda" for device but received "gpu"');
test(rejectsLoad, { dtype: "bf16" }, 'Expected one of "auto", "f32", "f16" for dtype but received "bf16"');
test(rejectsLoad, { tf32: 1 }, "Expected boolean for tf32 but received 1");
test(rejectsLoad, { devcie: "cpu" }, 'Unknown option "devcie" in load options; did you mean "device"?');
test(rejectsLoad, null, "Expected plain object for load options but received null");

test(rejects, p({ seeds: [1, 2] }), "Expected array of 1 seeds (one per image: prompts x numImagesPerPrompt) for seeds but received an array of length 2");
test(rejects, { prompt: ["a", "b"], seeds: [1, -2] }, "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seeds[1] but received -2");
test(rejects, p({ seed: 1, seeds: [1] }), "Expected seed or seeds, not both, but received both");

test("seeds: one per image, as bigints", (t) => {
  const { raw } = checkGenerateOptions({ prompt: ["a", "b"], numImagesPerPrompt: 2, seeds: [1, 2n, 3, 2n ** 64n - 1n] });
  t.deepEqual(raw.seeds, [1n, 2n, 3n, 18446744073709551615n]);
});

const rejectsHub = test.macro({
  exec(t, options: unknown, message: string) {
    t.throws(() => checkLoadOptions(options), { instanceOf: CandlewickError, message });
  },
  title: (given, _options, message: string) => given ?? `hub: ${message}`,
});

test(rejectsHub, { variant: "fp32" }, 'Expected one of "fp16" for variant but received "fp32"');
test(rejectsHub, { revision: "" }, 'Expected non-empty string for revision but received ""');
test(rejectsHub, { token: true }, "Expected non-empty string for token but received true");
test(rejectsHub, { endpoint: "huggingface.co" }, 'Expected http(s) URL for endpoint but received "huggingface.co"');
test(rejectsHub, { offline: "yes" }, 'Expected boolean for offline but received "yes"');
test(rejectsHub, { onDownloadProgress: 1 }, "Expected function for onDownloadProgress but received 1");
test(rejectsHub, { revison: "main" }, 'Unknown option "revison" in load options; did you mean "revision"?');

test("load options split into the binding's and the hub's", (t) => {
  const onDownloadProgress = () => {};
  const { raw, hub } = checkLoadOptions({ device: "cpu", revision: "v1", variant: "fp16", token: false, offline: true, onDownloadProgress });
  t.deepEqual(raw, { device: "cpu" });
  t.deepEqual(hub, { revision: "v1", variant: "fp16", token: false, offline: true, onDownloadProgress });
});

test("load options convert as given", (t) => {
  t.deepEqual(toRawLoadOptions({ device: "cpu", dtype: "f16", tf32: true }), { device: "cpu", dtype: "f16", tf32: true });
  t.deepEqual(toRawLoadOptions(undefined), {});
});

test("the scheduler converter drops `type` and keeps every DDIM field", (t) => {
  const all = {
    type: "ddim", eta: 0.5, betaStart: 0.00085, betaEnd: 0.012, betaSchedule: "scaled_linear", numTrainTimesteps: 1000,
    timestepSpacing: "leading", stepsOffset: 1, setAlphaToOne: false, predictionType: "v_prediction", clipSample: true,
    clipSampleRange: 1.5, thresholding: false, dynamicThresholdingRatio: 0.995, sampleMaxValue: 1, rescaleBetasZeroSnr: true,
  };
  const { type: _, ...rest } = all;
  t.deepEqual(toRawScheduler(all), rest);
});
