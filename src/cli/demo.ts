/** `candlewick demo`: eight prompts to the bundled shapes model, written as one grid PNG, so the words visibly steer the picture. */

import { extname } from "node:path";
import { writeFile } from "node:fs/promises";

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import { imageGrid } from "../grid.js";
import type { GenerateOptions, LoadOptions } from "../options.js";
import { COMMON_FLAGS, COMMON_HELP, loadOptionsFrom, parseFlags, seedFrom, settingsFrom } from "./flags.js";
import { reportError } from "./generate.js";
import { loadModel } from "./model.js";
import { ProgressDisplay } from "./progress.js";
import { UsageError } from "./usage.js";

/** The grid's cells, row by row (4 columns): each attribute changes between cells. */
export const DEMO_PROMPTS: readonly string[] = [
  "a large red circle on a white background, top left",
  "a large blue square on a yellow background, bottom right",
  "a large green triangle on a black background, in the center",
  "a large yellow star on a blue background, top right",
  "a small orange circle on a purple background, bottom left",
  "a large pink square on a gray background, in the center",
  "a small white triangle on a green background, top right",
  "a large black star on an orange background, bottom left",
];
const COLUMNS = 4;
const SCALE = 3;
const DEFAULTS = { numInferenceSteps: 25, seed: 42n } as const;

export const DEMO_HELP = `Usage: candlewick demo [options]

Draw ${DEMO_PROMPTS.length} prompts with the small model bundled in the package (shapes in named colours, positions
and sizes) into one grid PNG, ${COLUMNS} to a row, each image enlarged ${SCALE}x; the prompts go to stdout.

Options:
${COMMON_HELP.model}
  --out, -o <file.png>      Output file (default: demo.png)
${COMMON_HELP.settings}
  --seed <n>                Seed of every cell, 0 to 2^64-1 (default: ${DEFAULTS.seed})
${COMMON_HELP.device}
`;

const OPTIONS = { ...COMMON_FLAGS, out: { type: "string", short: "o" } } as const;

/** Run the command; returns the exit code. */
export async function demo(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseFlags(args, OPTIONS, "demo");
  if (values.help) {
    process.stdout.write(DEMO_HELP);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])} (the demo's prompts are fixed)`, "demo");
  const out = values.out ?? "demo.png";
  if (extname(out).toLowerCase() !== ".png") {
    throw new UsageError(`Expected a file name ending in .png for --out but received ${JSON.stringify(out)}`, "demo");
  }
  let load: LoadOptions;
  let options: GenerateOptions;
  try {
    load = loadOptionsFrom(values);
    const seed = values.seed === undefined ? DEFAULTS.seed : seedFrom(values.seed);
    options = { numInferenceSteps: DEFAULTS.numInferenceSteps, ...settingsFrom(values), prompt: DEMO_PROMPTS, seeds: DEMO_PROMPTS.map(() => seed) };
  } catch (error) {
    if (error instanceof CandlewickError && error.code === INVALID_OPTION) throw new UsageError(error.message, "demo");
    throw error;
  }
  const quiet = values.quiet === true;
  const say = (text: string) => quiet || process.stderr.write(`${text}\n`);
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once("SIGINT", onSigint);
  try {
    const pipe = await loadModel(values.model, { ...load, signal: controller.signal }, quiet, say);
    const progress = new ProgressDisplay(process.stderr);
    const images = await pipe.generate({
      ...options,
      signal: controller.signal,
      onProgress: quiet ? undefined : (p) => progress.step(p),
      onWarning: (message) => say(`warning: ${message}`),
    }).finally(() => progress.finish());
    await writeFile(out, imageGrid(images, { columns: COLUMNS, scale: SCALE }));
    DEMO_PROMPTS.forEach((prompt, i) => process.stdout.write(`row ${Math.floor(i / COLUMNS) + 1}, column ${(i % COLUMNS) + 1}: ${prompt}\n`));
    say(`Wrote ${out}: ${images.length} images of ${images[0]?.width}x${images[0]?.height}, seed ${images[0]?.seed}`);
    return 0;
  } catch (error) {
    return reportError(error);
  } finally {
    process.off("SIGINT", onSigint);
  }
}
