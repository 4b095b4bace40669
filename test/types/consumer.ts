// A user's TypeScript file, compiled by test/types.test.ts against the published declarations
// (dist/*.d.ts) in a project without @types/node: every public name, used as the README uses it.

import {
  CandlewickError,
  GeneratedImage,
  StableDiffusionPipeline,
  downloadPipeline,
  nativeInfo,
  readTextChunks,
  type BatchInput,
  type BatchOptions,
  type BatchResult,
  type DownloadProgress,
  type GenerateOptions,
  type GenerateProgress,
  type LoadOptions,
  type PhaseTimings,
  type PipelineInfo,
  type SchedulerOptions,
} from "candlewick";

export async function main(): Promise<void> {
  const load: LoadOptions = { device: "cpu", dtype: "f32", offline: true, onDownloadProgress: (p: DownloadProgress) => p.loaded };
  const pipe = await StableDiffusionPipeline.fromPretrained("./tiny-sd", load);
  const info: PipelineInfo = pipe.info;
  const scheduler: SchedulerOptions = { eta: 0.5, timestepSpacing: "trailing" };
  const options: GenerateOptions = {
    prompt: ["a red apple", "a green pear"],
    numInferenceSteps: 4,
    seed: 42n,
    scheduler,
    onProgress: (p: GenerateProgress) => p.step,
    onWarning: (message: string) => message.length,
  };
  const images: GeneratedImage[] = await pipe.generate(options);
  const png: Uint8Array = images[0]!.toPng({ text: { prompt: "a red apple" } });
  const text: Record<string, string> = readTextChunks(png);
  await images[0]!.savePng("apple.png", { text });
  const timings: PhaseTimings | undefined = images[0]!.timings;
  const seed: bigint = images[0]!.seed;
  const latents = await pipe.generateLatents({ prompt: "x" });
  const data: Float32Array = latents.data;
  const inputs: BatchInput[] = [{ prompt: "a", seed: 1 }, { prompt: "b" }];
  const batchOptions: BatchOptions = { batchSize: 2, onWarning: () => undefined };
  for await (const result of pipe.generateBatch(inputs, batchOptions)) {
    const r: BatchResult<BatchInput> = result;
    r.image.data.length;
  }
  const snapshot = await downloadPipeline("org/name", { revision: "main" });
  snapshot.dir.length;
  nativeInfo().cuda;
  try {
    await pipe.dispose();
  } catch (error) {
    if (error instanceof CandlewickError) error.code.length;
  }
  [info, timings, seed, data].length;
}
