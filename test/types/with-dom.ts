// Passing a real AbortSignal (from the DOM library or from @types/node, whichever the project has) type-checks.

import { StableDiffusionPipeline } from "candlewick";

export async function cancellable(pipe: StableDiffusionPipeline): Promise<void> {
  const controller = new AbortController();
  await pipe.generate({ prompt: "x", signal: controller.signal });
  await StableDiffusionPipeline.fromPretrained("org/name", { signal: AbortSignal.timeout(1000) });
  for await (const r of pipe.generateBatch(["a"], { signal: controller.signal })) r.index;
}
