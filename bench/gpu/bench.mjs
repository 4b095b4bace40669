// Candlewick's side of the GPU speed table, run by bench/gpu/run.sh on the GPU test machine.
//
//   node bench/gpu/bench.mjs MODEL_DIR OUT.json
//
// Each row is one switch: fp32, tf32, fp16 (unfused attention), fp16 + flash attention, then
// + CUDA graphs (every switch on: the default); batch 8 with every switch on; fp16 + flash with
// candle's im2col convolutions instead of cuDNN's (the cuDNN lever). All rows but that one run
// convolutions through cuDNN; only the "+graphs" rows capture CUDA graphs. Work as ../shared/bench/anchor_diffusers.py: SD1.5 shapes,
// 512x512, 50 DDIM steps, guidance 7.5 (the UNet runs at batch 2), text encoder + steps + VAE
// decode (we also convert to 8-bit RGB on the host). Latency: median of RUNS runs after one
// warm-up. Peak GPU memory (peak_gib): the most the tensors held, from the warm-up to the last
// run (pipe.gpuMemory().peakUsed after resetGpuMemoryPeak(): what diffusers' max_memory_allocated
// measures); process_peak_gib: the most nvidia-smi reported (the whole process, CUDA context and
// libraries included), sampled every 20 ms. images_sha256: each image of the last call; SAVE_RGB=PREFIX also writes
// them as raw RGB to PREFIX-KEY.rgb (bench/gpu/rgb_diff.py compares two such files).
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

import { StableDiffusionPipeline } from "../../dist/index.js";

const [modelDir, outPath] = process.argv.slice(2);
const STEPS = Number(process.env.STEPS ?? 50);
const RUNS = Number(process.env.RUNS ?? 3);
const WHICH = (process.env.WHICH ??
  "fp16+flash+graphs,fp16+flash,fp16,tf32,fp32,fp16+flash+graphs:b8,fp16+flash:b8,fp16+flash:im2col,fp16+flash+graphs:nchw,fp16+flash+graphs:fa2,fp16+flash+graphs:b8:fa2,fp16+flash+graphs+bench,fp16+flash+graphs+gemmbench,fp16+flash+graphs+gemmbench:b8").split(",");
const SIZE = Number(process.env.SIZE ?? 512);
const DEVICE = process.env.DEVICE ?? "cuda";
// Other families' rows (bench/gpu/families.sh): GUIDANCE=5 for SDXL, 0 for the Turbo models; SCHEDULER a
// name or a JSON object (`{"type":"EulerAncestralDiscreteScheduler","timestepSpacing":"trailing"}`).
const GUIDANCE = Number(process.env.GUIDANCE ?? 7.5);
const SCHEDULER = process.env.SCHEDULER?.startsWith("{") ? JSON.parse(process.env.SCHEDULER) : process.env.SCHEDULER;
const PROMPT = "a photo of an astronaut riding a horse on mars";

const VARIANTS = {
  fp32: { load: { dtype: "f32", tf32: false, attention: "math", cudaGraphs: false } },
  tf32: { load: { dtype: "f32", tf32: true, attention: "math", cudaGraphs: false } },
  fp16: { load: { dtype: "f16", attention: "math", cudaGraphs: false } },
  "fp16+flash": { load: { dtype: "f16", cudaGraphs: false } },
  "fp16+flash+graphs": { load: { dtype: "f16", cudaGraphs: true } },
  "fp16+flash:b8": { load: { dtype: "f16", cudaGraphs: false }, batch: 8, variant: "fp16+flash" },
  "fp16+flash+graphs:b4": { load: { dtype: "f16", cudaGraphs: true }, batch: 4, variant: "fp16+flash+graphs" },
  "fp16+flash+graphs:b8": { load: { dtype: "f16", cudaGraphs: true }, batch: 8, variant: "fp16+flash+graphs" },
  "fp16+flash+graphs:b16": { load: { dtype: "f16", cudaGraphs: true }, batch: 16, variant: "fp16+flash+graphs" },
  "fp16+flash+graphs+bench": {
    load: { dtype: "f16", cudaGraphs: true, autotune: { cudnn: true } }, variant: "fp16+flash+graphs, cudnnBenchmark",
  },
  "fp16+flash+graphs+gemmbench": {
    load: { dtype: "f16", cudaGraphs: true, autotune: { gemm: true } }, variant: "fp16+flash+graphs, gemmBenchmark",
  },
  "fp16+flash+graphs+gemmbench:b8": {
    load: { dtype: "f16", cudaGraphs: true, autotune: { gemm: true } }, batch: 8, variant: "fp16+flash+graphs, gemmBenchmark",
  },
  "fp16+flash+graphs:fa2": {
    load: { dtype: "f16", cudaGraphs: true, attention: "flash" }, variant: "fp16+flash+graphs, FlashAttention-2 only",
  },
  "fp16+flash+graphs:b8:fa2": {
    load: { dtype: "f16", cudaGraphs: true, attention: "flash" }, batch: 8, variant: "fp16+flash+graphs, FlashAttention-2 only",
  },
  "fp16+flash+graphs:nchw": {
    load: { dtype: "f16", cudaGraphs: true, convolution: "cudnn-nchw" }, variant: "fp16+flash+graphs, NCHW convolutions",
  },
  // The LoRA speed row (bench/gpu/lora-row.sh): LORA names a kohya file (bench/gpu/make_lora.py), fused at load.
  "fp16+flash+graphs+lora": {
    load: { dtype: "f16", cudaGraphs: true, ...(process.env.LORA ? { loras: [{ path: process.env.LORA, weight: 0.8 }] } : {}) },
    variant: "fp16+flash+graphs, LoRA fused",
  },
  // FP8 (load option fp8): the UNet's linear layers in e4m3; each row also says how far its image is from
  // the f16 row's of the same batch and seed when that row ran first in the same WHICH (vs_f16).
  "fp16+flash+graphs+fp8": { load: { dtype: "f16", cudaGraphs: true, fp8: true }, variant: "fp16+flash+graphs, FP8 linear layers" },
  "fp16+flash+graphs+fp8:b4": {
    load: { dtype: "f16", cudaGraphs: true, fp8: true }, batch: 4, variant: "fp16+flash+graphs, FP8 linear layers",
  },
  "fp16+flash+graphs+fp8:b8": {
    load: { dtype: "f16", cudaGraphs: true, fp8: true }, batch: 8, variant: "fp16+flash+graphs, FP8 linear layers",
  },
  "fp16+flash:b4": { load: { dtype: "f16", cudaGraphs: false }, batch: 4, variant: "fp16+flash" },
  "fp16+flash:im2col": {
    load: { dtype: "f16", attention: "flash", convolution: "candle", cudaGraphs: false }, variant: "fp16+flash, im2col convolutions",
  },
};

function memoryPeak() {
  const smi = spawn("nvidia-smi", ["--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "20"]);
  smi.on("error", () => {}); // no nvidia-smi: the peak stays 0
  let peakMiB = 0;
  smi.stdout.on("data", (chunk) => {
    for (const line of chunk.toString().split("\n")) {
      const v = Number.parseFloat(line);
      if (v > peakMiB) peakMiB = v;
    }
  });
  return () => {
    smi.kill();
    return peakMiB / 1024;
  };
}

// How far image `b` is from `a` (8-bit RGB of the same size): PSNR in dB and the largest difference.
function difference(a, b) {
  let squares = 0, max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    squares += d * d;
    if (Math.abs(d) > max) max = Math.abs(d);
  }
  const mse = squares / a.length;
  return { psnr_db: mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse), max_abs: max };
}
const f16Images = {};

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const rows = [];
let phases;
for (const key of WHICH) {
  const spec = VARIANTS[key];
  const batch = spec.batch ?? 1;
  const stopMemory = memoryPeak();
  const loadStart = performance.now();
  const pipe = await StableDiffusionPipeline.fromPretrained(modelDir, { device: DEVICE, ...spec.load });
  const loadS = (performance.now() - loadStart) / 1e3;
  const warnings = new Set();
  const call = {
    prompt: PROMPT, numInferenceSteps: STEPS, guidanceScale: GUIDANCE, width: SIZE, height: SIZE, numImagesPerPrompt: batch, seed: 1,
    ...(SCHEDULER ? { scheduler: SCHEDULER } : {}),
    onWarning: (w) => warnings.add(w),
  };
  pipe.resetGpuMemoryPeak();
  const firstStart = performance.now();
  await pipe.generate(call); // warm-up
  const firstS = (performance.now() - firstStart) / 1e3;
  const times = [];
  let last;
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    last = await pipe.generate(call);
    times.push((performance.now() - t0) / 1e3);
  }
  const processPeakGiB = stopMemory();
  const peakGiB = pipe.gpuMemory().peakUsed / 2 ** 30;
  const row = {
    system: "candlewick", variant: spec.variant ?? key, batch, steps: STEPS, size: SIZE, guidance: GUIDANCE,
    scheduler: SCHEDULER ?? null, pipeline_class: pipe.info.pipelineClass,
    median_s: median(times), min_s: Math.min(...times), max_s: Math.max(...times),
    images_per_s: batch / median(times), peak_gib: peakGiB, process_peak_gib: processPeakGiB, load_s: loadS, first_call_s: firstS,
    attention: pipe.info.attention, convolution: pipe.info.convolution, cuda_graphs: pipe.info.cudaGraphs, tf32: pipe.info.tf32, fp8: pipe.info.fp8,
    dtype: pipe.dtype, device: pipe.device, cuda_fallbacks: pipe.info.cudaFallbacks,
    timings_ms: last[0].timings, warnings: [...warnings],
  };
  if (spec.variant === undefined || spec.variant === "fp16+flash+graphs") f16Images[`${key.split(":")[0]}:${batch}`] = last[0].data;
  const f16 = f16Images[`fp16+flash+graphs:${batch}`];
  if (spec.load.fp8 && f16) row.vs_f16 = difference(f16, last[0].data);
  // Every image of the last call, hashed, for A/Bs across processes (an environment switch read once a process).
  row.images_sha256 = last.map((image) => createHash("sha256").update(image.data).digest("hex").slice(0, 16));
  if (process.env.SAVE_RGB) writeFileSync(`${process.env.SAVE_RGB}-${key}.rgb`, Buffer.concat(last.map((image) => image.data)));
  if (key === "fp16+flash+graphs") {
    const t = last[0].timings;
    phases = { text_encoder: t.textEncoderMs, unet_step: t.denoiseMs / STEPS, vae_decode: t.decodeMs };
  }
  rows.push(row);
  console.log(JSON.stringify(row));
  writeFileSync(outPath, JSON.stringify({ rows, phases_ms: phases }, null, 1)); // each row as it comes
  await pipe.dispose();
}
writeFileSync(outPath, JSON.stringify({ rows, phases_ms: phases }, null, 1));
console.log("\nvariant            batch  median_s  img/s  peakGiB");
for (const r of rows) {
  console.log(`${r.variant.padEnd(18)} ${String(r.batch).padStart(5)} ${r.median_s.toFixed(3).padStart(9)} ${r.images_per_s.toFixed(2).padStart(6)} ${r.peak_gib.toFixed(2).padStart(8)}`);
}
