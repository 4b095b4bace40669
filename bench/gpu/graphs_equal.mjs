// CUDA graphs change no result: the same call (SDXL at 1024, 4 steps by default) with graphs on
// (text encoders and UNet step replayed; the call run three times so that the third replays) and
// off, compared pixel by pixel. Prints and writes { max_abs_diff, differing_values }.
//   node bench/gpu/graphs_equal.mjs MODEL OUT.json   (SIZE, STEPS, GUIDANCE)
import { writeFileSync } from "node:fs";
import { StableDiffusionPipeline } from "../../dist/index.js";

const [model, out] = process.argv.slice(2);
const call = {
  prompt: "a photo of an astronaut riding a horse on mars", negativePrompt: "blurry",
  numInferenceSteps: Number(process.env.STEPS ?? 4), guidanceScale: Number(process.env.GUIDANCE ?? 5),
  width: Number(process.env.SIZE ?? 1024), height: Number(process.env.SIZE ?? 1024), seed: 7,
};
const image = async (cudaGraphs) => {
  const pipe = await StableDiffusionPipeline.fromPretrained(model, { device: "cuda", dtype: "f16", cudaGraphs });
  let last;
  for (let i = 0; i < (cudaGraphs ? 3 : 1); i++) [last] = await pipe.generate(call);
  await pipe.dispose();
  return last.data;
};
const [graphed, eager] = [await image(true), await image(false)];
let max = 0, differing = 0;
for (let i = 0; i < eager.length; i++) {
  const d = Math.abs(graphed[i] - eager[i]);
  if (d) differing++;
  max = Math.max(max, d);
}
const row = { model, ...call, values: eager.length, max_abs_diff: max, differing_values: differing };
console.log(JSON.stringify(row));
writeFileSync(out, JSON.stringify(row, null, 1));
