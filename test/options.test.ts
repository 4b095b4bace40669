// Option validation in TypeScript: exact messages, no native module needed. The cases are the
// table in test/helpers/bad-options.ts (shared with test/bad-options.test.ts, which sends each
// through a loaded pipeline); messages follow sharp's shape.

import { runInNewContext } from "node:vm";

import test from "ava";

import { CandlewickError } from "../src/errors.js";
import { checkGenerateOptions, checkLoadOptions, toRawLoadOptions } from "../src/check-options.js";
import { toRawScheduler } from "../src/schedulers.js";
import { BAD_GENERATE_OPTIONS, BAD_LOAD_OPTIONS } from "./helpers/bad-options.js";
import { BAD_SCHEDULER_SHAPES } from "./helpers/bad-scheduler-options.js";

const INVALID = "ERR_CANDLEWICK_INVALID_OPTION";

const rejects = test.macro({
  exec(t, options: unknown, message: string) {
    const error = t.throws(() => checkGenerateOptions(options), { instanceOf: CandlewickError, message });
    t.is(error?.code, INVALID);
  },
  title: (given, _options, message: string) => given ?? message,
});

for (const { title, options, message } of [...BAD_GENERATE_OPTIONS, ...BAD_SCHEDULER_SHAPES]) {
  if (title) test(title, rejects, options, message);
  else test(rejects, options, message);
}

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
    scheduler: { type: "ddim", eta: 0, timestep_spacing: "trailing", set_alpha_to_one: false, trained_betas: [0.5] },
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
    t.throws(() => checkLoadOptions(options), { instanceOf: CandlewickError, message });
  },
  title: (given, _options, message: string) => given ?? `load: ${message}`,
});

for (const { options, message } of BAD_LOAD_OPTIONS) test(rejectsLoad, options, message);

test(rejects, { prompt: "a red apple", seeds: [1, 2] }, "Expected array of 1 seed (one per image: prompts x numImagesPerPrompt) for seeds but received an array of length 2");
test(rejects, { prompt: ["a", "b"], seeds: [1] }, "Expected array of 2 seeds (one per image: prompts x numImagesPerPrompt) for seeds but received an array of length 1");
// Singular and plural as the numbers ask; received objects described by their keys or their class.
test(rejects, { prompt: ["a", "b"], negativePrompt: ["x", "y", "z"] }, "Expected string or array of 1 or 2 strings (one per prompt) for negativePrompt but received an array of length 3");
test(rejects, { prompt: "a", latents: { shape: [1, 1, 1, 1], data: new Float32Array(2) } }, "Expected Float32Array of 1 value (shape [1, 1, 1, 1]) for latents.data but received 2 values");
test(rejects, { prompt: "a", latents: { shape: [1, 1, 1, 2], data: new Float32Array(1) } }, "Expected Float32Array of 2 values (shape [1, 1, 1, 2]) for latents.data but received 1 value");
test(rejects, { prompt: "a", guidanceScale: { value: 7.5 } }, "Expected finite number >= 0 for guidanceScale but received an object with key value");
test(rejects, { prompt: "a", onWarning: { a: 1, b: 2 } }, "Expected function for onWarning but received an object with keys a, b");
test(rejects, { prompt: "a", scheduler: { eta: { a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7 } } }, "Expected number, string, boolean or array for scheduler.eta but received an object with keys a, b, c, d, e and 2 more");
test(rejects, { prompt: "a", width: new Date(0) }, "Expected integer multiple of 8 for width but received a Date");
test(rejects, Object.create({ prompt: "a" }), "Expected plain object for generate options but received an object that inherits from another object (no own keys)");

test("an options object from another realm (a vm context) is a plain object", (t) => {
  const options = runInNewContext('({ prompt: "a", scheduler: { eta: 0.5 } })') as unknown;
  t.deepEqual(checkGenerateOptions(options).raw, { prompt: ["a"], scheduler: { eta: 0.5 } });
  t.throws(() => checkGenerateOptions(runInNewContext('({ prompt: "a", width: { px: 8 } })')), {
    message: "Expected integer multiple of 8 for width but received an object with key px",
  });
});
test(rejects, { prompt: ["a", "b"], seeds: [1, -2] }, "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seeds[1] but received -2");
test(rejects, { prompt: "a red apple", seed: 1, seeds: [1] }, "Expected seed or seeds, not both, but received both");

test("64 images in one call pass, however they are split between prompts", (t) => {
  t.is(checkGenerateOptions({ prompt: "a", numImagesPerPrompt: 64 }).raw.numImagesPerPrompt, 64);
  t.is(checkGenerateOptions({ prompt: Array.from({ length: 32 }, () => "a"), numImagesPerPrompt: 2 }).raw.prompt.length, 32);
  t.is(checkGenerateOptions({ prompt: Array.from({ length: 64 }, () => "a") }).raw.prompt.length, 64);
});

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
  const gpu = { attention: "flash", convolution: "cudnn-nchw", cudaGraphs: false, autotune: { cudnn: true, gemm: false }, tf32: true, fp8: true } as const;
  t.deepEqual(toRawLoadOptions(gpu), gpu);
  t.deepEqual(toRawLoadOptions({ autotune: {} }), { autotune: {} });
});

test("the scheduler converter renames fields to diffusers' snake_case and passes values as they are", (t) => {
  const all = {
    type: "ddim", eta: 0.5, betaStart: 0.00085, betaSchedule: "scaled_linear", numTrainTimesteps: 1000,
    stepsOffset: 1, setAlphaToOne: false, trainedBetas: new Float64Array([0.1, 0.2]), rescaleBetasZeroSnr: true, unknownField: "x",
  };
  t.deepEqual(toRawScheduler(all), {
    type: "ddim", eta: 0.5, beta_start: 0.00085, beta_schedule: "scaled_linear", num_train_timesteps: 1000,
    steps_offset: 1, set_alpha_to_one: false, trained_betas: [0.1, 0.2], rescale_betas_zero_snr: true, unknown_field: "x",
  });
  t.deepEqual(toRawScheduler("dpm++-2m-karras"), { type: "dpm++-2m-karras" });
});
