// generateBatch of 64 mixed prompts on the GPU (issue 21, point 3: it had never been timed), beside
// the same 64 images made by plain `generate` calls of batch 8 in the same process:
//
//   node bench/gpu/batch64.mjs MODEL_DIR [STEPS]
//
// Mixed: 64 different prompts (subjects x places x styles), every 4th with its own negative prompt
// and every 8th at guidance 5 (another batch group), all 512x512, DDIM. One warm-up call first;
// each figure is wall time from the first call to the last image in hand (PNG encoding not
// included). One JSON line on stdout.
import { performance } from "node:perf_hooks";
import { mixedPrompt } from "./prompts.mjs";

const [modelDir, stepsArg] = process.argv.slice(2);
const steps = Number(stepsArg ?? 50);
const { StableDiffusionPipeline } = await import(new URL("../../dist/index.js", import.meta.url).href);
const size = Number(process.env.SIZE ?? 512);
const pipe = await StableDiffusionPipeline.fromPretrained(modelDir, { device: process.env.DEVICE ?? "cuda" });
const inputs = [];
for (let i = 0; i < 64; i++) {
  const input = { prompt: mixedPrompt(i), seed: 1000 + i };
  if (i % 4 === 0) input.negativePrompt = "blurry, low quality";
  if (i % 8 === 7) input.guidanceScale = 5;
  inputs.push(input);
}
const defaults = { numInferenceSteps: steps, width: size, height: size };
await pipe.generate({ prompt: "warm up", numInferenceSteps: steps, numImagesPerPrompt: 8, width: size, height: size, seed: 1 });

let t = performance.now();
let made = 0, calls = 0;
for await (const r of pipe.generateBatch(inputs, { defaults, batchSize: 8 })) { made += 1; void r; }
const batchSeconds = (performance.now() - t) / 1000;

// The same work as eight generate calls of 8 prompts each (negative prompts and guidance as above).
t = performance.now();
let direct = 0;
for (let b = 0; b < 8; b++) {
  const chunk = inputs.slice(b * 8, b * 8 + 8);
  const out = await pipe.generate({ prompt: chunk.map((c) => c.prompt), negativePrompt: chunk.map((c) => c.negativePrompt ?? ""), numInferenceSteps: steps, width: size, height: size, seed: 1000 + b * 8 });
  direct += out.length ?? out.images?.length ?? 8; calls += 1;
}
const directSeconds = (performance.now() - t) / 1000;
console.log(JSON.stringify({
  bench: "generateBatch-64-mixed", device: pipe.info.device, dtype: pipe.info.dtype, steps, size,
  images: made, generateBatchSeconds: batchSeconds, generateBatchImagesPerSecond: made / batchSeconds,
  directCalls: calls, directImages: direct, directSeconds, directImagesPerSecond: direct / directSeconds,
  note: "direct: 8 generate calls of 8 prompts at guidance 7.5 (no per-input guidance), the batch-8 ceiling for this mix",
}));
await pipe.dispose();
