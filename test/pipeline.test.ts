// StableDiffusionPipeline end to end on the tiny model (test/fixtures/tiny-sd) and the pipeline
// golden (test/fixtures/goldens/pipeline.json + pipeline.safetensors), both made by
// scripts/make_fixtures.py with diffusers' StableDiffusionPipeline. Needs the native module
// (npm run build:native): a missing build fails these tests, it does not skip them.

import { rmSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import test from "ava";
import pngjs from "pngjs";

import { CandlewickError, GeneratedImage, StableDiffusionPipeline } from "../src/index.js";
import { copyOfTinySd, GOLDENS, readJson, shareWithin, TINY_SD } from "./helpers/fixtures.js";
import { readSafetensors } from "./helpers/safetensors.js";

const SMALL = { width: 64, height: 64, numInferenceSteps: 3 } as const;
let pipe: StableDiffusionPipeline;

test.before(async () => {
  pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", dtype: "f32" });
});

test("info reflects the model folder's configs and the requested device", (t) => {
  const unet = readJson<{ sample_size: number }>(join(TINY_SD, "unet/config.json"));
  const vae = readJson<{ block_out_channels: number[] }>(join(TINY_SD, "vae/config.json"));
  const vaeScaleFactor = 2 ** (vae.block_out_channels.length - 1);
  t.is(pipe.device, "cpu");
  t.is(pipe.dtype, "f32");
  t.is(pipe.vaeScaleFactor, vaeScaleFactor);
  t.is(pipe.defaultWidth, unet.sample_size * vaeScaleFactor);
  t.is(pipe.defaultHeight, unet.sample_size * vaeScaleFactor);
  t.is(pipe.modelDir, TINY_SD);
  t.regex(pipe.deviceReason, /cpu/);
  // The GPU paths resolve to candle's on the CPU; the defaults fall back without a word.
  t.is(pipe.attention, "math");
  t.is(pipe.convolution, "candle");
  t.false(pipe.cudaGraphs);
  t.deepEqual(pipe.info.autotune, { cudnn: false, gemm: false });
  t.false(pipe.info.tf32);
  t.false(pipe.info.fp8);
  t.deepEqual(pipe.info.cudaFallbacks, []);
  t.is(pipe.gpuMemory(), undefined);
});

test("a requested GPU path that cannot run here falls back to candle's and says why", async (t) => {
  const cpu = await StableDiffusionPipeline.fromPretrained(TINY_SD, {
    device: "cpu",
    attention: "flash",
    convolution: "cudnn-nhwc",
    autotune: { cudnn: true, gemm: true },
    fp8: true,
  });
  try {
    t.is(cpu.attention, "math");
    t.is(cpu.convolution, "candle");
    t.deepEqual(cpu.info.autotune, { cudnn: false, gemm: false });
    const said = cpu.info.cudaFallbacks.join("\n");
    t.regex(said, /attention "flash" is unavailable: .*; using "math"/);
    t.regex(said, /convolution "cudnn-nhwc" is unavailable: .*; using "candle"/);
    t.regex(said, /autotune\.cudnn is off/);
    t.regex(said, /autotune\.gemm is off/);
    t.false(cpu.info.fp8);
    t.regex(said, /fp8 is off: /);
    const [image] = await cpu.generate({ prompt: "a red apple", ...SMALL, seed: 1 });
    const [same] = await pipe.generate({ prompt: "a red apple", ...SMALL, seed: 1 });
    t.deepEqual(image!.data, same!.data, "the fallback is the path the defaults take on the CPU");
  } finally {
    await cpu.dispose();
  }
});

test("generates an RGB image of the requested size that encodes to a PNG", async (t) => {
  const [image, ...rest] = await pipe.generate({ prompt: "a red apple", ...SMALL, seed: 1 });
  t.is(rest.length, 0);
  t.true(image instanceof GeneratedImage);
  t.is(image!.width, 64);
  t.is(image!.height, 64);
  t.is(image!.data.length, 64 * 64 * 3);
  t.is(image!.seed, 1n);
  const file = image!.toPng();
  t.true(Buffer.isBuffer(file), "toPng returns a Buffer (typed as Uint8Array)");
  const png = pngjs.PNG.sync.read(Buffer.from(file));
  t.is(png.width, 64);
  t.is(png.height, 64);
  const rgb = new Uint8Array(64 * 64 * 3);
  for (let i = 0; i < 64 * 64; i++) rgb.set(png.data.subarray(i * 4, i * 4 + 3), i * 3);
  t.deepEqual(rgb, image!.data);
});

test("image.settings echoes what the call ran with, defaults filled in (the folder's size and scheduler config)", async (t) => {
  const [image] = await pipe.generate({ prompt: "a red apple", numInferenceSteps: 2, seed: 1 });
  t.deepEqual(
    { ...image!.settings, schedulerConfig: undefined },
    { numInferenceSteps: 2, guidanceScale: 7.5, width: pipe.defaultWidth, height: pipe.defaultHeight, scheduler: "DDIMScheduler", schedulerConfig: undefined, task: "txt2img" },
  );
  t.like(image!.settings!.schedulerConfig, { stepsOffset: 1, betaSchedule: "scaled_linear", setAlphaToOne: false });
  const [euler] = await pipe.generate({ prompt: "a red apple", ...SMALL, seed: 1, scheduler: { type: "euler", useKarrasSigmas: true } });
  t.is(euler!.settings!.scheduler, "EulerDiscreteScheduler");
  t.like(euler!.settings!.schedulerConfig, { useKarrasSigmas: true, betaEnd: 0.012 });
  t.false("stepsOffset" in euler!.settings!.schedulerConfig && "skipPrkSteps" in euler!.settings!.schedulerConfig);
});

test("threads: a pipeline with one CPU thread reports it and makes the same image", async (t) => {
  const one = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", dtype: "f32", threads: 1 });
  t.is(one.info.threads, 1);
  t.true(pipe.info.threads >= 1);
  const options = { prompt: "a red apple", ...SMALL, seed: 3 };
  const [a] = await one.generate(options);
  const [b] = await pipe.generate(options);
  t.deepEqual(a!.data, b!.data);
  await one.dispose();
});

test("onProgress is called once per step, in order, before the promise resolves", async (t) => {
  const seen: { step: number; totalSteps: number; timestep: number }[] = [];
  await pipe.generate({ prompt: "a red apple", ...SMALL, numInferenceSteps: 4, seed: 1, onProgress: (p) => seen.push(p) });
  t.deepEqual(seen.map((p) => p.step), [1, 2, 3, 4]);
  t.true(seen.every((p) => p.totalSteps === 4));
  t.true(seen.every((p, i) => i === 0 || p.timestep < seen[i - 1]!.timestep), "timesteps decrease");
});

test("the same seed gives the same bytes; another seed gives other bytes", async (t) => {
  const [a] = await pipe.generate({ prompt: "a red apple", ...SMALL, seed: 7 });
  const [b] = await pipe.generate({ prompt: "a red apple", ...SMALL, seed: 7n });
  const [c] = await pipe.generate({ prompt: "a red apple", ...SMALL, seed: 8 });
  t.deepEqual(a!.data, b!.data);
  t.notDeepEqual(a!.data, c!.data);
});

test("without a seed, a random one is drawn and reported, and it reproduces the image", async (t) => {
  const [a] = await pipe.generate({ prompt: "a red apple", ...SMALL });
  t.is(typeof a!.seed, "bigint");
  const [b] = await pipe.generate({ prompt: "a red apple", ...SMALL, seed: a!.seed });
  t.deepEqual(a!.data, b!.data);
});

test("several prompts x numImagesPerPrompt images, each different", async (t) => {
  const images = await pipe.generate({ prompt: ["a red apple", "a blue car"], negativePrompt: "blurry", numImagesPerPrompt: 2, ...SMALL, seed: 3 });
  t.is(images.length, 4);
  t.notDeepEqual(images[0]!.data, images[1]!.data);
  t.notDeepEqual(images[0]!.data, images[2]!.data);
});

test("aborting inside onProgress rejects with an AbortError, and the pipeline stays usable", async (t) => {
  const controller = new AbortController();
  const steps: number[] = [];
  const call = pipe.generate({
    prompt: "a red apple", ...SMALL, numInferenceSteps: 20, seed: 1, signal: controller.signal,
    onProgress: ({ step }) => {
      steps.push(step);
      if (step === 2) controller.abort();
    },
  });
  const error = await t.throwsAsync(call, { instanceOf: CandlewickError, name: "AbortError" });
  t.is(error?.code, "ERR_CANDLEWICK_CANCELLED");
  t.deepEqual(steps, [1, 2], "no progress after the abort");
  const [image] = await pipe.generate({ prompt: "a red apple", ...SMALL, seed: 1 });
  t.is(image!.width, 64);
});

test("an already aborted signal rejects before any work", async (t) => {
  let calls = 0;
  const signal = AbortSignal.abort();
  await t.throwsAsync(pipe.generate({ prompt: "x", ...SMALL, signal, onProgress: () => calls++ }), { name: "AbortError", code: "ERR_CANDLEWICK_CANCELLED" });
  t.is(calls, 0);
});

test("an exception in onProgress rejects the call with it", async (t) => {
  const boom = new Error("boom");
  await t.throwsAsync(pipe.generate({ prompt: "x", ...SMALL, onProgress: () => { throw boom; } }), { is: boom });
  const [image] = await pipe.generate({ prompt: "x", ...SMALL, seed: 1 });
  t.is(image!.height, 64);
});

test("an exception in onWarning rejects the call with it (not an uncaught exception), and the pipeline stays usable", async (t) => {
  const boom = new Error("boom");
  const prompt = Array.from({ length: 100 }, (_, i) => `word${i}`).join(" ");
  // truncateLongPrompts: the long prompt is cut with a warning.
  await t.throwsAsync(pipe.generate({ prompt, ...SMALL, truncateLongPrompts: true, onWarning: () => { throw boom; } }), { is: boom });
  const thrown: unknown = await pipe.generateLatents({ prompt, ...SMALL, truncateLongPrompts: true, onWarning: () => { throw "a string"; } }).then(() => "resolved", (e: unknown) => e);
  t.is(thrown, "a string");
  const [image] = await pipe.generate({ prompt: "x", ...SMALL, seed: 1 });
  t.is(image!.height, 64);
});

test("image i of a call with seed s has seed s + i, and that seed alone makes it again (latents too)", async (t) => {
  const options = { prompt: "a red apple", ...SMALL, numImagesPerPrompt: 3 };
  const images = await pipe.generate({ ...options, seed: 42 });
  t.deepEqual(images.map((image) => image.seed), [42n, 43n, 44n]);
  const [alone] = await pipe.generate({ ...options, numImagesPerPrompt: 1, seed: images[2]!.seed });
  t.deepEqual(alone!.data, images[2]!.data);
  const latents = await pipe.generateLatents({ ...options, seed: 2n ** 64n - 2n });
  t.deepEqual(latents.seeds, [2n ** 64n - 2n, 2n ** 64n - 1n, 0n], "wrapping at 2^64");
  t.is(latents.seed, 2n ** 64n - 2n);
});

test("calls made together queue and give what they give alone", async (t) => {
  const [one, two] = await Promise.all([
    pipe.generate({ prompt: "a red apple", ...SMALL, seed: 11 }),
    pipe.generate({ prompt: "a red apple", ...SMALL, seed: 12 }),
  ]);
  const [alone] = await pipe.generate({ prompt: "a red apple", ...SMALL, seed: 12 });
  t.deepEqual(two![0]!.data, alone!.data);
  t.notDeepEqual(one![0]!.data, two![0]!.data);
});

test("a prompt longer than 77 tokens is encoded whole; with truncateLongPrompts it is cut, with a warning", async (t) => {
  const warnings: string[] = [];
  const prompt = Array.from({ length: 100 }, (_, i) => `word${i}`).join(" ");
  const [whole] = await pipe.generate({ prompt, ...SMALL, seed: 1, onWarning: (w) => warnings.push(w) });
  t.deepEqual(warnings, []);
  const [cut] = await pipe.generate({ prompt, ...SMALL, seed: 1, truncateLongPrompts: true, onWarning: (w) => warnings.push(w) });
  t.is(warnings.length, 1);
  t.regex(warnings[0]!, /truncated/);
  t.notDeepEqual(whole!.data, cut!.data);
});

test("options are checked before any work; the core's own checks come back with their code", async (t) => {
  await t.throwsAsync(pipe.generate({ prompt: "x", width: 500 }), { code: "ERR_CANDLEWICK_INVALID_OPTION", message: "Expected integer multiple of 8 for width but received 500" });
  const latents = { shape: [1, 4, 16, 16] as const, data: new Float32Array(4 * 16 * 16) };
  const error = await t.throwsAsync(pipe.generate({ prompt: "x", ...SMALL, latents }), { instanceOf: CandlewickError });
  t.is(error?.code, "ERR_CANDLEWICK_INVALID_OPTION");
  t.regex(error!.message, /for latents but received shape \[1, 4, 16, 16\]/);
});

test("parity with diffusers: the golden's latents give the golden's image (within 1 on >= 99.9% of bytes)", async (t) => {
  const golden = readJson<{
    prompt: string; negative_prompt: string; steps: number; guidance_scale: number; width: number; height: number;
    scheduler_overrides: Record<string, number | string | boolean>;
  }>(join(GOLDENS, "pipeline.json"));
  const tensors = readSafetensors(join(GOLDENS, "pipeline.safetensors"));
  const initial = tensors.get("initial_latents")!;
  const expected = tensors.get("image_u8")!;
  const camel = (key: string) => key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
  const scheduler = Object.fromEntries(Object.entries(golden.scheduler_overrides).map(([k, v]) => [camel(k), v]));
  const [image] = await pipe.generate({
    prompt: golden.prompt, negativePrompt: golden.negative_prompt, numInferenceSteps: golden.steps,
    guidanceScale: golden.guidance_scale, width: golden.width, height: golden.height, scheduler,
    latents: { shape: initial.shape as [number, number, number, number], data: initial.data as Float32Array },
  });
  t.deepEqual([image!.height, image!.width, 3], expected.shape);
  const share = shareWithin(image!.data, expected.data as Uint8Array, 1);
  t.true(share >= 0.999, `only ${(share * 100).toFixed(3)}% of bytes within 1 of diffusers'`);
});

test("f16 loads the fp16 weight variant and generates", async (t) => {
  const half = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", dtype: "f16" });
  t.is(half.dtype, "f16");
  const [image] = await half.generate({ prompt: "a red apple", ...SMALL, seed: 1 });
  t.is(image!.data.length, 64 * 64 * 3);
});

const brokenModel = test.macro({
  async exec(t, breakIt: (dir: string) => void, names: RegExp) {
    const dir = copyOfTinySd();
    try {
      breakIt(dir);
      const error = await t.throwsAsync(StableDiffusionPipeline.fromPretrained(dir, { device: "cpu" }), { instanceOf: CandlewickError });
      t.is(error?.code, "ERR_CANDLEWICK_MODEL");
      t.regex(error!.message, names);
    } finally {
      rmSync(join(dir, ".."), { recursive: true, force: true });
    }
  },
  title: (given) => `a broken model folder is an error naming the file: ${given}`,
});

test("no model_index.json", brokenModel, (dir) => unlinkSync(join(dir, "model_index.json")), /model_index\.json/);
test("no UNet weights", brokenModel, (dir) => unlinkSync(join(dir, "unet/diffusion_pytorch_model.safetensors")), /unet[/\\]/);
test("malformed UNet config", brokenModel, (dir) => writeFileSync(join(dir, "unet/config.json"), "{ not json"), /unet[/\\]config\.json/);
test("no tokenizer vocabulary", brokenModel, (dir) => unlinkSync(join(dir, "tokenizer/vocab.json")), /vocab\.json/);
test("truncated VAE weights", brokenModel, (dir) => writeFileSync(join(dir, "vae/diffusion_pytorch_model.safetensors"), Buffer.alloc(16)), /vae[/\\]diffusion_pytorch_model\.safetensors/);

test("a folder that does not exist is an error naming it", async (t) => {
  const error = await t.throwsAsync(StableDiffusionPipeline.fromPretrained("/no/such/model"), { instanceOf: CandlewickError });
  t.is(error?.code, "ERR_CANDLEWICK_MODEL");
  t.regex(error!.message, /\/no\/such\/model/);
});

test("every image carries its call's phase timings", async (t) => {
  const [image] = await pipe.generate({ prompt: "a red apple", ...SMALL, seed: 1 });
  const timings = image!.timings!;
  t.true(timings.textEncoderMs > 0 && timings.denoiseMs > 0 && timings.decodeMs > 0, JSON.stringify(timings));
});

test("dispose lets a queued call finish, then later calls reject with ERR_CANDLEWICK_DISPOSED", async (t) => {
  const own = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu" });
  const queued = own.generate({ prompt: "last one", ...SMALL, seed: 3 });
  await own.dispose();
  t.is((await queued).length, 1);
  const error = await t.throwsAsync(own.generate({ prompt: "too late", ...SMALL }));
  t.is((error as CandlewickError).code, "ERR_CANDLEWICK_DISPOSED");
  await own.dispose();
});

test("the event loop stays responsive while a call runs", async (t) => {
  let ticks = 0;
  let longestGapMs = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    longestGapMs = Math.max(longestGapMs, now - last);
    last = now;
    ticks++;
  }, 5);
  try {
    await pipe.generate({ prompt: "a red apple", width: 64, height: 64, numInferenceSteps: 10, seed: 1 });
  } finally {
    clearInterval(timer);
  }
  t.true(ticks >= 5, `only ${ticks} timer ticks during generation`);
  // Loose on purpose: on a 2-core CI machine other test files compete for the CPU. Generation on
  // the JS thread would block the loop for the whole call and the timer would not tick at all.
  t.true(longestGapMs < 1000, `the event loop was blocked for ${longestGapMs.toFixed(0)} ms`);
});

test("device \"cuda\" without a CUDA build is an error saying why; \"auto\" says why it chose the CPU", async (t) => {
  const error = await t.throwsAsync(StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cuda" }));
  t.is((error as CandlewickError).code, "ERR_CANDLEWICK_DEVICE");
  t.regex(error!.message, /^device "cuda" was requested but (the CUDA build did not load|no CUDA build is installed)/);
  const auto = await StableDiffusionPipeline.fromPretrained(TINY_SD);
  t.is(auto.device, "cpu");
  t.regex(auto.deviceReason, /CUDA/);
  await auto.dispose();
});

test("generateLatents returns diffusers' final latents from the golden's initial latents (1e-4 relative)", async (t) => {
  const golden = readJson<{ prompt: string; negative_prompt: string; steps: number; guidance_scale: number; width: number; height: number }>(
    join(GOLDENS, "pipeline.json"),
  );
  const tensors = readSafetensors(join(GOLDENS, "pipeline.safetensors"));
  const initial = tensors.get("initial_latents")!;
  const want = tensors.get(`latents_step_${golden.steps - 1}`)!.data as Float32Array;
  const got = await pipe.generateLatents({
    prompt: golden.prompt, negativePrompt: golden.negative_prompt, numInferenceSteps: golden.steps,
    guidanceScale: golden.guidance_scale, width: golden.width, height: golden.height,
    latents: { shape: initial.shape as [number, number, number, number], data: initial.data as Float32Array },
  });
  t.deepEqual(got.shape, initial.shape);
  let diff = 0;
  let scale = 0;
  want.forEach((w, i) => {
    diff = Math.max(diff, Math.abs(w - got.data[i]!));
    scale = Math.max(scale, Math.abs(w));
  });
  t.true(diff / scale <= 1e-4, `max |a-b| / max |golden| = ${diff / scale}`);
});
