// Candlewick's scheduler rows, run on the GPU test machine beside bench/gpu/schedulers.py
// (diffusers, same card, same call): one row per scheduler users pick by name, at the step count
// they pick it with, on the SD1.5-shaped model of bench/gpu/reference.py, 512x512, batch 1,
// guidance 7.5 (1.0 for LCM, as LCM is used), every GPU switch at its default. Text encoder +
// steps + VAE decode, median of RUNS runs after one warm-up.
//
//   node bench/gpu/schedulers.mjs MODEL_DIR OUT.json
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

import { StableDiffusionPipeline } from "../../dist/index.js";
import { SCHEDULER_ROWS } from "./schedulers-rows.mjs";

const [modelDir, outPath] = process.argv.slice(2);
const RUNS = Number(process.env.RUNS ?? 3);
const PROMPT = "a photo of an astronaut riding a horse on mars";
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const pipe = await StableDiffusionPipeline.fromPretrained(modelDir, { device: process.env.DEVICE ?? "cuda" });
const rows = [];
for (const { name, scheduler, steps, guidance } of SCHEDULER_ROWS) {
  const call = { prompt: PROMPT, numInferenceSteps: steps, guidanceScale: guidance, width: 512, height: 512, seed: 1, scheduler };
  await pipe.generate(call); // warm-up (captures this shape's CUDA graph)
  const times = [];
  let last;
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    [last] = await pipe.generate(call);
    times.push((performance.now() - t0) / 1e3);
  }
  const row = {
    system: "candlewick", scheduler: name, class: last.settings.scheduler, steps, guidance,
    median_s: median(times), min_s: Math.min(...times), max_s: Math.max(...times),
    unet_calls_ms: last.timings.denoiseMs, timings_ms: last.timings,
  };
  rows.push(row);
  console.log(JSON.stringify(row));
}
writeFileSync(outPath, JSON.stringify({ rows, info: pipe.info }, null, 1));
await pipe.dispose();
