// Parity on the GPU test machine: candlewick against diffusers' f32 reference on the same card
// (bench/gpu/reference.py wrote MODEL_DIR/goldens.{json,safetensors}), from the same initial
// latents and prompt: the final latents' max |a-b| / max |golden|, and the image's PSNR.
//
//   node bench/gpu/parity.mjs MODEL_DIR OUT_DIR
//
// Writes OUT_DIR/parity-{f32,f16-flash,f16-unfused}.json.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { StableDiffusionPipeline } from "../../dist/index.js";

const [modelDir, outDir] = process.argv.slice(2);

/** The f32 tensors of a safetensors file. */
function readSafetensors(path) {
  const bytes = readFileSync(path);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString("utf8"));
  const tensors = new Map();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    if (info.dtype !== "F32") throw new Error(`${name}: expected F32, found ${info.dtype}`);
    const [start, end] = info.data_offsets;
    const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset + 8 + headerLength + start, bytes.byteOffset + 8 + headerLength + end));
    tensors.set(name, { shape: info.shape, data });
  }
  return tensors;
}

const golden = JSON.parse(readFileSync(join(modelDir, "goldens.json"), "utf8"));
const tensors = readSafetensors(join(modelDir, "goldens.safetensors"));
const initial = tensors.get("initial_latents");
const lastName = `latents_step_${golden.steps - 1}`;
const wantLatents = tensors.get(lastName).data;
const wantImage = tensors.get("image"); // [1, 3, H, W] in [0, 1]

const call = {
  prompt: golden.prompt, negativePrompt: golden.negative_prompt, numInferenceSteps: golden.steps,
  guidanceScale: golden.guidance_scale, width: golden.width, height: golden.height,
  latents: { shape: initial.shape, data: initial.data },
};

for (const [name, load] of [
  ["f32", { dtype: "f32", attention: "math" }],
  ["f16-flash", { dtype: "f16" }],
  ["f16-unfused", { dtype: "f16", attention: "math" }],
  ["f16-flash-eager", { dtype: "f16", cudaGraphs: false }],
  ["f16-flash-nchw", { dtype: "f16", convolution: "cudnn-nchw" }],
  ["f16-flash-benchmarked", { dtype: "f16", autotune: { cudnn: true, gemm: true } }],
]) {
  const pipe = await StableDiffusionPipeline.fromPretrained(modelDir, { device: process.env.DEVICE ?? "cuda", ...load });
  const latents = await pipe.generateLatents(call);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < wantLatents.length; i++) {
    diff = Math.max(diff, Math.abs(wantLatents[i] - latents.data[i]));
    scale = Math.max(scale, Math.abs(wantLatents[i]));
  }
  const [image] = await pipe.generate(call);
  const [, , h, w] = wantImage.shape;
  let squared = 0;
  let within1 = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) {
        const want = wantImage.data[c * h * w + y * w + x] * 255;
        const got = image.data[(y * w + x) * 3 + c];
        squared += ((got - want) / 255) ** 2;
        if (Math.abs(got - Math.round(want)) <= 1) within1++;
      }
    }
  }
  const mse = squared / (h * w * 3);
  const record = {
    check: `GPU parity against ${golden.reference}, ${golden.steps} steps, ${golden.width}x${golden.height}`,
    device: pipe.device, dtype: pipe.dtype, attention: pipe.info.attention,
    convolution: pipe.info.convolution, cuda_graphs: pipe.info.cudaGraphs,
    parity: {
      latents_max_abs_rel: { [lastName]: diff / scale },
      image_psnr_db: mse === 0 ? null : 10 * Math.log10(1 / mse),
      image_values_within_1_of_255: within1 / (h * w * 3),
    },
  };
  console.log(name, JSON.stringify(record.parity));
  writeFileSync(join(outDir, `parity-${name}.json`), JSON.stringify(record, null, 1));
  await pipe.dispose();
}
