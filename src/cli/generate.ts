/** `candlewick generate <prompt>`: load a model, generate, write PNG files, print their paths. */

import { extname } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, type ParseArgsConfig } from "node:util";

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import { DEVICES, DTYPES, MAX_IMAGES_PER_PROMPT, MAX_STEPS, seed, side, type GenerateOptions, type LoadOptions } from "../options.js";
import { StableDiffusionPipeline } from "../pipeline.js";
import { TIMESTEP_SPACINGS, type DdimSchedulerOptions } from "../schedulers.js";
import { closest, integerIn, numberIn, oneOf } from "../validate.js";
import { ProgressDisplay } from "./progress.js";
import { UsageError } from "./usage.js";

/** The small model that ships in the package (test/fixtures/tiny-sd), so a fresh install can generate. */
export const DEFAULT_MODEL = fileURLToPath(new URL("../../test/fixtures/tiny-sd", import.meta.url));

export const GENERATE_HELP = `Usage: candlewick generate <prompt> [options]

Generate images from a text prompt and write them as PNG files (their paths go to stdout).

Options:
  --model <dir>             Model folder in diffusers' layout (default: the tiny test model in the package)
  --out, -o <file.png>      Output file; with --num-images N, file-1.png ... file-N.png (default: image.png)
  --negative-prompt <text>  What to steer away from (default: none)
  --steps <n>               Denoising steps, 1-${MAX_STEPS} (default: 50)
  --guidance <x>            Classifier-free guidance scale, >= 0 (default: 7.5)
  --width <px>              Width, a multiple of 8 (default: the model's, 512 for SD1.5)
  --height <px>             Height, a multiple of 8 (default: the model's)
  --seed <n>                Seed, 0 to 2^64-1 (default: random, printed)
  --num-images <n>          Images to generate, 1-${MAX_IMAGES_PER_PROMPT} (default: 1)
  --device <d>              ${DEVICES.join(" | ")} (default: auto)
  --dtype <t>               ${DTYPES.join(" | ")} (default: auto: f16 on CUDA, f32 on the CPU)
  --eta <x>                 DDIM eta, 0 to 1 (default: 0)
  --timestep-spacing <s>    ${TIMESTEP_SPACINGS.join(" | ")} (default: the model's scheduler config)
  --quiet, -q               No progress or messages on stderr
  --help, -h                Show this help

Example:
  candlewick generate "a red apple" --model ./stable-diffusion-v1-5 --steps 30 --seed 1 --out apple.png
`;

const OPTIONS = {
  model: { type: "string" },
  out: { type: "string", short: "o" },
  "negative-prompt": { type: "string" },
  steps: { type: "string" },
  guidance: { type: "string" },
  width: { type: "string" },
  height: { type: "string" },
  seed: { type: "string" },
  "num-images": { type: "string" },
  device: { type: "string" },
  dtype: { type: "string" },
  eta: { type: "string" },
  "timestep-spacing": { type: "string" },
  quiet: { type: "boolean", short: "q" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsConfig["options"];

type Values = ReturnType<typeof parse>["values"];

function parse(args: readonly string[]) {
  try {
    return parseArgs({ args: [...args], options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    const e = error as { code?: string; message: string };
    const flag = /'(-[^ ']*)/.exec(e.message)?.[1];
    if (e.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
      const guess = flag?.startsWith("--") ? closest(flag.slice(2), Object.keys(OPTIONS)) : undefined;
      throw new UsageError(`unknown option ${flag}${guess ? ` (did you mean --${guess}?)` : ""}`, "generate");
    }
    if (e.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
      const hint = e.message.includes("ambiguous") ? ` (for a value that starts with "-", write ${flag}=VALUE)` : "";
      throw new UsageError(`option ${flag} needs a value${hint}`, "generate");
    }
    throw new UsageError(e.message, "generate");
  }
}

/** Run the command; returns the exit code. */
export async function generate(args: readonly string[]): Promise<number> {
  const { values, positionals } = parse(args);
  if (values.help) {
    process.stdout.write(GENERATE_HELP);
    return 0;
  }
  if (positionals.length !== 1) {
    const problem = positionals.length === 0 ? "missing the prompt" : `expected one prompt but received ${positionals.length} (quote the prompt)`;
    throw new UsageError(problem, "generate");
  }
  let load: LoadOptions;
  let options: GenerateOptions;
  try {
    [load, options] = toOptions(positionals[0]!, values);
  } catch (error) {
    if (error instanceof CandlewickError && error.code === INVALID_OPTION) throw new UsageError(error.message, "generate");
    throw error;
  }
  const quiet = values.quiet === true;
  const say = (text: string) => quiet || process.stderr.write(`${text}\n`);

  const model = values.model ?? DEFAULT_MODEL;
  say(`Loading ${model}${values.model ? "" : " (the tiny test model; pass --model DIR for a real one)"}`);
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once("SIGINT", onSigint);
  try {
    const pipe = await StableDiffusionPipeline.fromPretrained(model, load);
    say(`Running on ${pipe.device} (${pipe.dtype}): ${pipe.deviceReason}`);
    const progress = new ProgressDisplay(process.stderr);
    const images = await pipe.generate({
      ...options,
      signal: controller.signal,
      onProgress: quiet ? undefined : (p) => progress.step(p),
      onWarning: (message) => say(`warning: ${message}`),
    }).finally(() => progress.finish());
    const paths = outputPaths(values.out ?? "image.png", images.length);
    for (const [i, image] of images.entries()) {
      await image.savePng(paths[i]!);
      process.stdout.write(`${paths[i]}\n`);
    }
    say(`Wrote ${images.length} image${images.length === 1 ? "" : "s"} of ${images[0]?.width}x${images[0]?.height}, seed ${images[0]?.seed}`);
    return 0;
  } catch (error) {
    if (error instanceof CandlewickError) {
      if (error.name === "AbortError") {
        process.stderr.write("candlewick: interrupted\n");
        return 130;
      }
      process.stderr.write(`candlewick: ${error.message}\n`);
      return error.code === INVALID_OPTION ? 2 : 1;
    }
    throw error;
  } finally {
    process.off("SIGINT", onSigint);
  }
}

/** Flags to the library's options, checked with the library's validators under the flags' names. */
function toOptions(prompt: string, v: Values): [LoadOptions, GenerateOptions] {
  const load: LoadOptions = {};
  if (v.device !== undefined) load.device = oneOf(v.device, "--device", DEVICES);
  if (v.dtype !== undefined) load.dtype = oneOf(v.dtype, "--dtype", DTYPES);
  const options: GenerateOptions = { prompt };
  if (v["negative-prompt"] !== undefined) options.negativePrompt = v["negative-prompt"];
  if (v.steps !== undefined) options.numInferenceSteps = integerIn(integer(v.steps), "--steps", 1, MAX_STEPS);
  if (v.guidance !== undefined) options.guidanceScale = numberIn(number(v.guidance), "--guidance", 0);
  if (v.width !== undefined) options.width = side(integer(v.width), "--width");
  if (v.height !== undefined) options.height = side(integer(v.height), "--height");
  if (v.seed !== undefined) options.seed = seed(/^\d+$/.test(v.seed) ? BigInt(v.seed) : v.seed, "--seed");
  if (v["num-images"] !== undefined) {
    options.numImagesPerPrompt = integerIn(integer(v["num-images"]), "--num-images", 1, MAX_IMAGES_PER_PROMPT);
  }
  const scheduler: DdimSchedulerOptions = {};
  if (v.eta !== undefined) scheduler.eta = numberIn(number(v.eta), "--eta", 0, 1);
  if (v["timestep-spacing"] !== undefined) {
    scheduler.timestepSpacing = oneOf(v["timestep-spacing"], "--timestep-spacing", TIMESTEP_SPACINGS);
  }
  if (Object.keys(scheduler).length > 0) options.scheduler = scheduler;
  if (v.out !== undefined && extname(v.out).toLowerCase() !== ".png") {
    throw new UsageError(`Expected a file name ending in .png for --out but received ${JSON.stringify(v.out)}`, "generate");
  }
  return [load, options];
}

/** A decimal integer flag value (validated for range by the caller). */
function integer(text: string): number | string {
  return /^-?\d+$/.test(text) ? Number(text) : text;
}

/** A decimal number flag value. */
function number(text: string): number | string {
  return /^-?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(text) ? Number(text) : text;
}

/** image.png for one image; image-1.png ... image-N.png for several. */
export function outputPaths(out: string, count: number): string[] {
  if (count === 1) return [out];
  const ext = extname(out);
  const stem = out.slice(0, out.length - ext.length);
  return Array.from({ length: count }, (_, i) => `${stem}-${i + 1}${ext}`);
}
