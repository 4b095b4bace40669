// One generate call (512x512 or SIZE, STEPS steps, CUDA graphs off) for a kernel-level profile under
// Nsight Compute: bench/gpu/run.sh (PART=p) runs it twice, with 1 and 3 steps, and
// bench/gpu/kernels.py takes the difference, which leaves the kernels of two UNet steps.
import { StableDiffusionPipeline } from "../../dist/index.js";

const [model] = process.argv.slice(2);
const steps = Number(process.env.STEPS ?? 1);
const size = process.env.SIZE ? Number(process.env.SIZE) : undefined; // SDXL: 1024 (the model's default size otherwise)
const pipe = await StableDiffusionPipeline.fromPretrained(model, { device: "cuda", cudaGraphs: false });
await pipe.generate({ prompt: "a photo of an astronaut riding a horse on mars", numInferenceSteps: steps, seed: 1, width: size, height: size });
await pipe.dispose();
