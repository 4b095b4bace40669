// Every bad option through the public API with one loaded pipeline (the tiny model,
// test/fixtures/tiny-sd, made by scripts/make_fixtures.py): each call rejects with the exact
// message and code, and then the same pipeline generates an image byte-identical to the one it
// made before any bad call. The table of options rejected in TypeScript is
// test/helpers/bad-options.ts; the cases below it are caught by the native core, which knows the
// model. Needs the native module (npm run build:native).

import test from "ava";

import { CandlewickError, StableDiffusionPipeline } from "../src/index.js";
import { loadNative } from "../src/binding.js";
import { BAD_GENERATE_OPTIONS, BAD_LOAD_OPTIONS } from "./helpers/bad-options.js";
import { BAD_SCHEDULER_FIELDS, BAD_SCHEDULER_SHAPES } from "./helpers/bad-scheduler-options.js";
import { TINY_SD } from "./helpers/fixtures.js";

/** The smallest call the tiny model takes: 16x16 pixels (8x8 latents), one step (~30 ms on a CPU). */
const TINY = { prompt: "a red apple", width: 16, height: 16, numInferenceSteps: 1, seed: 1 } as const;
const INVALID = "ERR_CANDLEWICK_INVALID_OPTION";

let pipe: StableDiffusionPipeline;
let reference: Uint8Array;

test.before(async () => {
  pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", dtype: "f32" });
  reference = (await pipe.generate(TINY))[0]!.data;
});

/** The pipeline still works, and gives what it gave before. */
async function stillGenerates(t: import("ava").ExecutionContext): Promise<void> {
  const [image] = await pipe.generate(TINY);
  t.deepEqual(image!.data, reference);
}

const rejectsThenGenerates = test.macro({
  async exec(t, options: unknown, message: string, code: string = INVALID) {
    const error = await t.throwsAsync(pipe.generate(options as never), { instanceOf: CandlewickError, message });
    t.is(error?.code, code);
    await stillGenerates(t);
  },
  title: (given, _options: unknown, message: string, _code?: string) => `generate: ${given ?? message}`,
});

for (const { title, options, message } of [...BAD_GENERATE_OPTIONS, ...BAD_SCHEDULER_SHAPES, ...BAD_SCHEDULER_FIELDS]) {
  if (title) test(title, rejectsThenGenerates, options, message);
  else test(rejectsThenGenerates, options, message);
}

// Valid for TypeScript, refused by the core against the model and its scheduler config.
const s = (scheduler: Record<string, unknown>) => ({ ...TINY, scheduler });
test(rejectsThenGenerates, { ...TINY, latents: { shape: [1, 4, 16, 16], data: new Float32Array(4 * 16 * 16) } }, "Expected latents of shape [1, 4, 8, 8] for latents but received shape [1, 4, 16, 16]");
test(rejectsThenGenerates, s({ trainedBetas: [0.1, 0.2] }), "Expected 1000 betas (one per scheduler.numTrainTimesteps) for scheduler.trainedBetas but received 2 betas");
test(rejectsThenGenerates, s({ stepsOffset: 1000 }), "Expected integer below scheduler.numTrainTimesteps (1000) for scheduler.stepsOffset but received 1000");
test(rejectsThenGenerates, s({ betaStart: 0.5 }), "Expected number above scheduler.betaStart (0.5) and below 1 for scheduler.betaEnd but received 0.012");
test(rejectsThenGenerates, { ...s({ numTrainTimesteps: 10 }), numInferenceSteps: 20 }, "Expected integer between 1 and 10 for numInferenceSteps but received 20");

const loadRejectsThenGenerates = test.macro({
  async exec(t, modelDir: unknown, options: unknown, message: string, code: string = INVALID) {
    const loading = StableDiffusionPipeline.fromPretrained(modelDir as string, options as never);
    const error = await t.throwsAsync(loading, { instanceOf: CandlewickError, message });
    t.is(error?.code, code);
    await stillGenerates(t);
  },
  title: (given, _dir: unknown, _options: unknown, message: string, _code?: string) => `fromPretrained: ${given ?? message}`,
});

for (const { options, message } of BAD_LOAD_OPTIONS) test(loadRejectsThenGenerates, TINY_SD, options, message);
test(loadRejectsThenGenerates, "", {}, 'Expected model folder or hub id ("org/name") for model but received ""');
test(loadRejectsThenGenerates, 42, {}, 'Expected model folder or hub id ("org/name") for model but received 42');
test(loadRejectsThenGenerates, "/no/such/model", { device: "cpu" }, "/no/such/model: is not a folder (expected a diffusers model folder with model_index.json)", "ERR_CANDLEWICK_MODEL");

// A device this build cannot provide. (The CUDA build's GPU tests cover the other side.)
const cpuOnly = !loadNative().buildInfo().cuda;
(cpuOnly ? test : test.skip)(
  loadRejectsThenGenerates,
  TINY_SD,
  { device: "cuda" },
  'device "cuda" was requested but no CUDA build is installed (candlewick-linux-x64-gnu-cuda: not on the npm registry yet; npm run build:cuda and npm run pack:all in a clone make its tarball)',
  "ERR_CANDLEWICK_DEVICE",
);

// Edge values that are allowed: each generates, with the warning diffusers gives where it gives one.
const edge = test.macro({
  async exec(t, options: Record<string, unknown>, warning?: RegExp) {
    const warnings: string[] = [];
    const images = await pipe.generate({ ...TINY, ...options, onWarning: (w) => warnings.push(w) });
    t.true(images.length > 0);
    for (const image of images) t.is(image.data.length, image.width * image.height * 3);
    if (warning) {
      t.is(warnings.length, 1);
      t.regex(warnings[0]!, warning);
    } else {
      t.deepEqual(warnings, []);
    }
    await stillGenerates(t);
  },
  title: (given) => `edge value generates: ${given}`,
});

const TRUNCATED = /^The following part of your input was truncated because CLIP can only handle sequences up to 77 tokens: "/;
test("an empty prompt", edge, { prompt: "" });
test("an array of one empty prompt", edge, { prompt: [""] });
test("a 10,000-character prompt (2,000 tokens in 27 chunks)", edge, { prompt: "red apple ".repeat(1000) });
test("a prompt of 5,000 emoji", edge, { prompt: "🍎".repeat(5000) });
test("with truncateLongPrompts, a 10,000-character prompt is cut to 77 tokens", edge, { prompt: "red apple ".repeat(1000), truncateLongPrompts: true }, TRUNCATED);
test("with truncateLongPrompts, a prompt of 5,000 emoji is cut", edge, { prompt: "🍎".repeat(5000), truncateLongPrompts: true }, TRUNCATED);
test("control characters and lone surrogates", edge, { prompt: "a\u0000b\u0007c\ud800d\u202e" });
test("the smallest size, 8x8", edge, { width: 8, height: 8 });
test("guidance 0 (no guidance)", edge, { guidanceScale: 0 });
test("a huge guidance scale", edge, { guidanceScale: 1e6 });
test("seed 0", edge, { seed: 0 });
test("the largest seed", edge, { seed: 2n ** 64n - 1n });
test("eta 1 (stochastic DDIM)", edge, { scheduler: { eta: 1 } });
test("a negative prompt per prompt", edge, { prompt: ["a", "b"], negativePrompt: ["c", "d"] });
