// A worker_threads worker for test/reliability.test.ts: loads its own pipeline of the tiny model
// and runs the calls it is given, posting back each image's bytes (or, with `abandon`, starts a
// long call and tells the parent after its first step, so the parent can terminate it mid-call).

import { parentPort, workerData } from "node:worker_threads";

import { StableDiffusionPipeline } from "../../src/index.js";

interface Job {
  modelDir: string;
  calls: { prompt: string; seed: number; width: number; height: number; numInferenceSteps: number }[];
  abandon?: boolean;
}

const job = workerData as Job;
const pipe = await StableDiffusionPipeline.fromPretrained(job.modelDir, { device: "cpu", dtype: "f32" });
if (job.abandon) {
  await pipe.generate({ ...job.calls[0]!, onProgress: () => parentPort!.postMessage({ started: true }) });
} else {
  const results = await Promise.all(job.calls.map((call) => pipe.generate(call)));
  parentPort!.postMessage({ images: results.map(([image]) => image!.data) });
  await pipe.dispose();
}
