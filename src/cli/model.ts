/** Loading the model for a CLI command: a folder or a hub id, with a download bar, and what it runs on. */

import { fileURLToPath } from "node:url";

import type { LoadOptions } from "../options.js";
import { StableDiffusionPipeline } from "../pipeline.js";
import { DownloadDisplay } from "./progress.js";

/**
 * The small trained model that ships in the package (test/fixtures/shapes-sd, made by scripts/train_demo_model.py),
 * so a fresh install can generate: shapes in named colours, positions and sizes ("a large red circle on a white
 * background, top left").
 */
export const DEFAULT_MODEL = fileURLToPath(new URL("../../test/fixtures/shapes-sd", import.meta.url));

/** Load `model` (the tiny model when undefined), telling the user through `say` unless quiet. */
export async function loadModel(model: string | undefined, load: LoadOptions, quiet: boolean, say: (text: string) => void): Promise<StableDiffusionPipeline> {
  say(`Loading ${model ?? DEFAULT_MODEL}${model ? "" : " (the bundled shapes model: it draws prompts like \"a large red circle on a white background, top left\"; pass --model DIR or --model org/name for a real one)"}`);
  const download = new DownloadDisplay(process.stderr);
  const options: LoadOptions = quiet ? load : { ...load, onDownloadProgress: (p) => download.update(p) };
  const pipe = await StableDiffusionPipeline.fromPretrained(model ?? DEFAULT_MODEL, options).finally(() => download.finish());
  say(`Running on ${pipe.device} (${pipe.dtype}): ${pipe.deviceReason}`);
  // A GPU path asked for (--fp8) that cannot run here: the pipeline fell back and says why.
  for (const why of pipe.info.cudaFallbacks) say(`warning: ${why}`);
  return pipe;
}
