// Where a pipeline's GPU memory goes, phase by phase (bench/gpu/families.sh PART=memory): after load
// (the weights), the peak of a call that stops at the latents (text encoders and the denoising loop),
// the peak of a whole call (the VAE decode added), each after resetGpuMemoryPeak(). Beside
// bench/gpu/memory.py, diffusers' same three figures in the same call.
//   node bench/gpu/memory.mjs MODEL OUT.json   (SIZE, STEPS, GUIDANCE, BATCH; FP8=1 for the fp8 load option;
//   CUDA graphs on)
import { writeFileSync } from "node:fs";
import { StableDiffusionPipeline } from "../../dist/index.js";

const [model, out] = process.argv.slice(2);
const SIZE = Number(process.env.SIZE ?? 1024);
const STEPS = Number(process.env.STEPS ?? 4);
const GUIDANCE = Number(process.env.GUIDANCE ?? 5);
const BATCH = Number(process.env.BATCH ?? 1);
const FP8 = process.env.FP8 === "1";
const GiB = 2 ** 30;
const pipe = await StableDiffusionPipeline.fromPretrained(model, { device: "cuda", dtype: "f16", fp8: FP8 });
const loaded = pipe.gpuMemory().used / GiB;
const call = {
  prompt: "a photo of an astronaut riding a horse on mars", numInferenceSteps: STEPS, guidanceScale: GUIDANCE,
  width: SIZE, height: SIZE, numImagesPerPrompt: BATCH, seed: 1,
};
await pipe.generate(call); // first call: plans, graph capture
const peakOf = async (options) => {
  pipe.resetGpuMemoryPeak();
  await options();
  return pipe.gpuMemory().peakUsed / GiB;
};
const latentsPeak = await peakOf(() => pipe.generateLatents(call));
const wholePeak = await peakOf(() => pipe.generate(call));
const row = {
  system: "candlewick", fp8: FP8, size: SIZE, batch: BATCH, after_load_gib: loaded, denoise_peak_gib: latentsPeak,
  call_peak_gib: wholePeak, after_call_gib: pipe.gpuMemory().used / GiB, reserved_gib: pipe.gpuMemory().reserved / GiB,
};
console.log(JSON.stringify(row));
writeFileSync(out, JSON.stringify(row, null, 1));
await pipe.dispose();
