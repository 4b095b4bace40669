/**
 * `candlewick generate <prompt>`: check that the output files can be written, load a model,
 * generate, write PNG files that carry their generation parameters (as `batch` writes them), print
 * their paths.
 */

import { extname } from "node:path";

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import { MAX_IMAGES_PER_PROMPT, type GenerateOptions, type LoadOptions } from "../options.js";
import { count, integerIn } from "../validate.js";
import { COMMON_FLAGS, COMMON_HELP, integer, loadOptionsFrom, parseFlags, seedFrom, settingsFrom, type Settings } from "./flags.js";
import { DEFAULT_MODEL, loadModel } from "./model.js";
import { checkOutputFiles, writeFileAtomically } from "./output.js";
import { imageParameters, pngText } from "./parameters.js";
import { ProgressDisplay } from "./progress.js";
import { UsageError } from "./usage.js";

export const GENERATE_HELP = `Usage: candlewick generate <prompt> [options]

Generate images from a text prompt and write them as PNG files (their paths go to stdout), with
their generation parameters in text chunks (as web UIs read them).

Options:
${COMMON_HELP.model}
  --out, -o <file.png>      Output file, its folder created if missing; with --num-images N,
                            file-1.png ... file-N.png (default: image.png)
${COMMON_HELP.settings}
  --seed <n>                Seed, 0 to 2^64-1 (default: random, printed)
  --num-images <n>          Images to generate, 1-${MAX_IMAGES_PER_PROMPT} (default: 1)
${COMMON_HELP.device}

Example:
  candlewick generate "a red apple" --model ./stable-diffusion-v1-5 --steps 30 --seed 1 --out apple.png
`;

const OPTIONS = {
  ...COMMON_FLAGS,
  out: { type: "string", short: "o" },
  "num-images": { type: "string" },
} as const;

/** Run the command; returns the exit code. */
export async function generate(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseFlags(args, OPTIONS, "generate");
  if (values.help) {
    process.stdout.write(GENERATE_HELP);
    return 0;
  }
  if (positionals.length !== 1) {
    const problem = positionals.length === 0 ? "missing the prompt" : `expected one prompt but received ${positionals.length} (quote the prompt)`;
    throw new UsageError(problem, "generate");
  }
  let load: LoadOptions;
  let settings: Settings;
  let options: GenerateOptions;
  try {
    load = loadOptionsFrom(values);
    settings = settingsFrom(values);
    options = { ...settings, prompt: positionals[0]! };
    if (values.seed !== undefined) options.seed = seedFrom(values.seed);
    if (values["num-images"] !== undefined) {
      options.numImagesPerPrompt = integerIn(integer(values["num-images"]), "--num-images", 1, MAX_IMAGES_PER_PROMPT);
    }
  } catch (error) {
    if (error instanceof CandlewickError && error.code === INVALID_OPTION) throw new UsageError(error.message, "generate");
    throw error;
  }
  if (values.out !== undefined && extname(values.out).toLowerCase() !== ".png") {
    throw new UsageError(`Expected a file name ending in .png for --out but received ${JSON.stringify(values.out)}`, "generate");
  }
  const quiet = values.quiet === true;
  const say = (text: string) => quiet || process.stderr.write(`${text}\n`);

  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once("SIGINT", onSigint);
  try {
    // A folder that cannot take the files is found before the model loads.
    const paths = outputPaths(values.out ?? "image.png", options.numImagesPerPrompt ?? 1);
    await checkOutputFiles(paths);
    const pipe = await loadModel(values.model, { ...load, signal: controller.signal }, quiet, say);
    const progress = new ProgressDisplay(process.stderr);
    const images = await pipe.generate({
      ...options,
      signal: controller.signal,
      onProgress: quiet ? undefined : (p) => progress.step(p),
      onWarning: (message) => say(`warning: ${message}`),
    }).finally(() => progress.finish());
    const model = values.model ?? DEFAULT_MODEL;
    for (const [i, image] of images.entries()) {
      const parameters = imageParameters(settings, positionals[0]!, values["negative-prompt"] ?? "", image.seed, pipe, model);
      await writeFileAtomically(paths[i]!, image.toPng({ text: pngText(parameters) }));
      process.stdout.write(`${paths[i]}\n`);
    }
    const seeds = images.map((image) => image.seed).join(", ");
    say(`Wrote ${count(images.length, "image")} of ${images[0]?.width}x${images[0]?.height}, ${images.length === 1 ? "seed" : "seeds"} ${seeds}`);
    return 0;
  } catch (error) {
    return reportError(error);
  } finally {
    process.off("SIGINT", onSigint);
  }
}

/** A CandlewickError on stderr and its exit code (130 for an interruption); anything else is rethrown. */
export function reportError(error: unknown, interrupted = "candlewick: interrupted\n"): number {
  if (!(error instanceof CandlewickError)) throw error;
  if (error.name === "AbortError") {
    process.stderr.write(interrupted);
    return 130;
  }
  process.stderr.write(`candlewick: ${error.message}\n`);
  return error.code === INVALID_OPTION ? 2 : 1;
}

/** image.png for one image; image-1.png ... image-N.png for several. */
export function outputPaths(out: string, count: number): string[] {
  if (count === 1) return [out];
  const ext = extname(out);
  const stem = out.slice(0, out.length - ext.length);
  return Array.from({ length: count }, (_, i) => `${stem}-${i + 1}${ext}`);
}
