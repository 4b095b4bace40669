// Start-up on the GPU test machine (issue 6, point 6), run by bench/gpu/run.sh (PART=s):
//
//   node bench/gpu/startup.mjs MODEL_DIR [REPS] [LOAD_OPTIONS_JSON]
//
// In this fresh node process: import the package, load the model folder (page cache warm: the
// folder was just written or read), generate the first image (SD1.5 shapes, 512x512, 50 DDIM
// steps, guidance 7.5), then a second one (the steady time, for comparison); dispose, and load +
// first image again REPS-1 more times in the same process. The first repetition is the "fresh
// process" number (it pays for CUDA's context, cuBLAS and cuDNN); the later ones are what
// ../shared/bench/anchor_diffusers.py's `load` measures for diffusers (a process that has used
// CUDA before: its "load plus first image 2.48 s"). One JSON line per repetition on stdout; with
// CANDLEWICK_PROFILE_STARTUP=1 the library adds its one-time costs as JSON lines on stderr.
import { createHash } from "node:crypto";
import { performance } from "node:perf_hooks";

const bootMs = performance.now(); // node's own start-up, before this module ran
const [modelDir, repsArg, loadJson] = process.argv.slice(2);
const REPS = Number(repsArg ?? 3);
const loadOptions = { device: "cuda", ...(loadJson ? JSON.parse(loadJson) : {}) };
const call = {
  prompt: "a photo of an astronaut riding a horse on mars", numInferenceSteps: 50, guidanceScale: 7.5, width: 512, height: 512, seed: 1,
};

const importStart = performance.now();
const { StableDiffusionPipeline } = await import("../../dist/index.js");
const importS = (performance.now() - importStart) / 1e3;

for (let rep = 0; rep < REPS; rep++) {
  const t0 = performance.now();
  const pipe = await StableDiffusionPipeline.fromPretrained(modelDir, loadOptions);
  const loadS = (performance.now() - t0) / 1e3;
  const t1 = performance.now();
  const [first] = await pipe.generate(call);
  const firstEnd = performance.now();
  const firstS = (firstEnd - t1) / 1e3;
  const t2 = performance.now();
  const [second] = await pipe.generate(call);
  const steadyS = (performance.now() - t2) / 1e3;
  const row = {
    rep, fresh_process: rep === 0, load_options: loadOptions, load_s: loadS, first_image_s: firstS, load_plus_first_s: loadS + firstS,
    steady_s: steadyS, first_timings_ms: first.timings, steady_timings_ms: second.timings,
    // The first image's pixels, to compare processes (a plan read from the disk cache must give the same image).
    first_image_sha256: createHash("sha256").update(first.data).digest("hex"),
  };
  if (rep === 0) {
    // From the process's start (node's boot and the import included) to the first image.
    Object.assign(row, { node_boot_s: bootMs / 1e3, import_s: importS, process_to_first_image_s: firstEnd / 1e3 });
  }
  console.log(JSON.stringify(row));
  await pipe.dispose();
}
