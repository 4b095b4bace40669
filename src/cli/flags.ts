/**
 * Flags that `generate` and `batch` share (model, generation settings, device), parsed with
 * node:util's parseArgs and checked with the library's validators under the flags' names.
 */

import { parseArgs, type ParseArgsConfig } from "node:util";

import { VARIANTS } from "../hub/files.js";
import { device, seed, side } from "../check-options.js";
import {
  DEVICES, DTYPES, MAX_LORA_WEIGHT, MAX_SIZE_CONDITION, MAX_STEPS, MAX_THREADS, type GenerateOptions, type LoadOptions,
} from "../options.js";
import { TIMESTEP_SPACINGS } from "../schedulers.js";
import { closest, integerIn, invalid, numberIn, oneOf } from "../validate.js";
import { UsageError } from "./usage.js";

export const COMMON_FLAGS = {
  model: { type: "string" },
  config: { type: "string" },
  vae: { type: "string" },
  lora: { type: "string", multiple: true },
  revision: { type: "string" },
  variant: { type: "string" },
  "negative-prompt": { type: "string" },
  "prompt-2": { type: "string" },
  "negative-prompt-2": { type: "string" },
  steps: { type: "string" },
  guidance: { type: "string" },
  width: { type: "string" },
  height: { type: "string" },
  seed: { type: "string" },
  device: { type: "string" },
  dtype: { type: "string" },
  threads: { type: "string" },
  fp8: { type: "boolean" },
  scheduler: { type: "string" },
  eta: { type: "string" },
  "timestep-spacing": { type: "string" },
  "vae-tiling": { type: "boolean" },
  "truncate-long-prompts": { type: "boolean" },
  "textual-inversion": { type: "string", multiple: true },
  "clip-skip": { type: "string" },
  "original-size": { type: "string" },
  "crops-coords-top-left": { type: "string" },
  "target-size": { type: "string" },
  quiet: { type: "boolean", short: "q" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsConfig["options"];

/** The help lines of the shared flags. */
export const COMMON_HELP = {
  model: `  --model <dir|org/name>    Model folder in diffusers' layout, or a Hugging Face hub id, downloaded into
                            the shared cache, or a single-file checkpoint (.safetensors, the original
                            layout; on the hub: org/name/file.safetensors, that file alone downloaded)
                            (default: the small shapes model in the package)
  --config <dir>            For a single-file --model: a diffusers folder with its tokenizer (and configs)
  --vae <dir|file>          Another VAE: a diffusers VAE folder or a .safetensors file
  --lora <file[:weight]>    A LoRA to fuse into the weights (kohya/A1111 or diffusers format); repeat
                            for several (weight default 1)
  --revision <rev>          Hub branch, tag or commit (default: main)
  --variant <v>             ${VARIANTS.join(" | ")}: download the half-precision weights (default: full precision)
  --textual-inversion <file.safetensors[:token]>
                            A textual inversion embedding to load, with the token to use in prompts
                            (default: the file's own); repeat for more`,
  settings: `  --negative-prompt <text>  What to steer away from (default: none)
  --steps <n>               Denoising steps, 1-${MAX_STEPS} (default: 50)
  --guidance <x>            Classifier-free guidance scale, >= 0 (default: 7.5)
  --width <px>              Width, a multiple of 8 (default: the model's, 512 for SD1.5)
  --height <px>             Height, a multiple of 8 (default: the model's)
  --vae-tiling              Decode in overlapping tiles: for large images (default: only when a
                            whole decode runs out of memory)
  --truncate-long-prompts   Prompts as diffusers reads them: no (word:1.3) weighting, cut at 77
                            tokens with a warning (default: weighted, any length)

  --clip-skip <n>           Condition on the text encoder's layer n before the last (diffusers'
                            clip_skip; default: none)
  --original-size <HxW>     SDXL: the size the image is conditioned as having had (default: the output size)
  --crops-coords-top-left <T,L>
                            SDXL: the crop corner it is conditioned on (default: 0,0)
  --target-size <HxW>       SDXL: the size it is conditioned as having (default: the output size)
  --prompt-2 <text>         SDXL: the prompt of the second text encoder (diffusers' prompt_2; default:
                            the prompt)
  --negative-prompt-2 <text>
                            SDXL: the negative prompt of the second text encoder (default: the
                            negative prompt)`,
  device: `  --device <d>              ${DEVICES.join(" | ")} | cuda:N (default: auto)
  --dtype <t>               ${DTYPES.join(" | ")} (default: auto: f16 on CUDA, f32 on the CPU)
  --threads <n>             CPU threads, 1-${MAX_THREADS} (default: the cores available)
  --fp8                     FP8 (e4m3) products for the UNet's wide linear layers on Ada and Hopper GPUs
                            (CUDA, f16): faster on SDXL, not diffusers' numbers (README, FP8)
  --scheduler <name>        The scheduler: ddim, pndm (plms), ddpm, euler, euler-a, heun, dpm++-2m,
                            dpm++-2m-karras, dpm++-2m-sde-karras, unipc, lcm, ... or a diffusers class
                            name such as EulerDiscreteScheduler (default: the model's, from its folder)
  --eta <x>                 DDIM's eta, 0 to 1 (with the ddim scheduler; default: 0)
  --timestep-spacing <s>    ${TIMESTEP_SPACINGS.join(" | ")} (default: the model's scheduler config)
  --quiet, -q               No progress or messages on stderr
  --help, -h                Show this help`,
};

type Flags = NonNullable<ParseArgsConfig["options"]>;

/** What parseFlags returns: the flags' values and the positional arguments. */
export interface Parsed<O extends Flags> {
  values: { [K in keyof O]?: O[K]["type"] extends "boolean" ? boolean : O[K] extends { multiple: true } ? string[] : string };
  positionals: string[];
}

/** parseArgs, with its errors as usage errors of `command` that name the flag (and guess a misspelt one). */
export function parseFlags<O extends Flags>(args: readonly string[], options: O, command: string): Parsed<O> {
  try {
    return parseArgs({ args: [...args], options, allowPositionals: true, strict: true }) as Parsed<O>;
  } catch (error) {
    const e = error as { code?: string; message: string };
    const flag = /'(-[^ ']*)/.exec(e.message)?.[1];
    if (e.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
      const guess = flag?.startsWith("--") ? closest(flag.slice(2), Object.keys(options)) : undefined;
      throw new UsageError(`unknown option ${flag}${guess ? ` (did you mean --${guess}?)` : ""}`, command);
    }
    if (e.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
      const hint = e.message.includes("ambiguous") ? ` (for a value that starts with "-", write ${flag}=VALUE)` : "";
      throw new UsageError(`option ${flag} needs a value${hint}`, command);
    }
    throw new UsageError(e.message, command);
  }
}

type CommonValues = Parsed<typeof COMMON_FLAGS>["values"];

/** --device, --dtype, --threads, --fp8, --revision, --variant, --textual-inversion as load options. */
export function loadOptionsFrom(v: CommonValues): LoadOptions {
  const load: LoadOptions = {};
  if (v.device !== undefined) load.device = device(v.device, "--device");
  if (v.dtype !== undefined) load.dtype = oneOf(v.dtype, "--dtype", DTYPES);
  if (v.threads !== undefined) load.threads = integerIn(integer(v.threads), "--threads", 1, MAX_THREADS);
  if (v.fp8) load.fp8 = true;
  if (v.revision !== undefined) load.revision = v.revision;
  if (v.variant !== undefined) load.variant = oneOf(v.variant, "--variant", VARIANTS);
  if (v["textual-inversion"] !== undefined) {
    load.textualInversions = v["textual-inversion"].map((arg) => {
      const named = /^(.*\.safetensors):([^/\\]+)$/i.exec(arg);
      return named ? { path: named[1]!, token: named[2]! } : arg;
    });
  }
  if (v.config !== undefined) load.config = v.config;
  if (v.vae !== undefined) load.vae = v.vae;
  const loras = v.lora === undefined ? [] : ([] as string[]).concat(v.lora as unknown as string | string[]);
  if (loras.length > 0) load.loras = loras.map(loraFlag);
  return load;
}

/** `--lora file.safetensors:0.8` (the weight after the last colon, when it is a number; else weight 1). */
export function loraFlag(value: string): { path: string; weight: number } {
  const colon = value.lastIndexOf(":");
  const tail = colon > 0 ? value.slice(colon + 1) : "";
  if (tail !== "" && /^[-+]?(\d+\.?\d*|\.\d+)$/.test(tail)) {
    return { path: value.slice(0, colon), weight: numberIn(Number(tail), "--lora weight", -MAX_LORA_WEIGHT, MAX_LORA_WEIGHT) };
  }
  return { path: value, weight: 1 };
}

/** The generation settings (everything but the prompt and the seed). */
export type Settings = Omit<GenerateOptions, "prompt" | "seed" | "seeds">;

/** --negative-prompt, --prompt-2, --negative-prompt-2, --steps, --guidance, --width, --height, --scheduler, --eta, --timestep-spacing as generate options. */
export function settingsFrom(v: CommonValues): Settings {
  const options: Settings = {};
  if (v["negative-prompt"] !== undefined) options.negativePrompt = v["negative-prompt"];
  if (v["prompt-2"] !== undefined) options.prompt2 = v["prompt-2"];
  if (v["negative-prompt-2"] !== undefined) options.negativePrompt2 = v["negative-prompt-2"];
  if (v.steps !== undefined) options.numInferenceSteps = integerIn(integer(v.steps), "--steps", 1, MAX_STEPS);
  if (v.guidance !== undefined) options.guidanceScale = numberIn(number(v.guidance), "--guidance", 0);
  if (v.width !== undefined) options.width = side(integer(v.width), "--width");
  if (v.height !== undefined) options.height = side(integer(v.height), "--height");
  if (v["vae-tiling"]) options.vaeTiling = true;
  if (v["truncate-long-prompts"]) options.truncateLongPrompts = true;
  if (v["clip-skip"] !== undefined) options.clipSkip = integerIn(integer(v["clip-skip"]), "--clip-skip", 0, 64);
  if (v["original-size"] !== undefined) options.originalSize = pairFlag(v["original-size"], "--original-size", "x", 1);
  if (v["crops-coords-top-left"] !== undefined) {
    options.cropsCoordsTopLeft = pairFlag(v["crops-coords-top-left"], "--crops-coords-top-left", ",", 0);
  }
  if (v["target-size"] !== undefined) options.targetSize = pairFlag(v["target-size"], "--target-size", "x", 1);
  // The scheduler's name and fields are checked by the core, against the model's scheduler config.
  const scheduler: Record<string, unknown> = {};
  if (v.scheduler !== undefined) scheduler.type = v.scheduler;
  if (v.eta !== undefined) scheduler.eta = numberIn(number(v.eta), "--eta", 0, 1);
  if (v["timestep-spacing"] !== undefined) {
    scheduler.timestepSpacing = oneOf(v["timestep-spacing"], "--timestep-spacing", TIMESTEP_SPACINGS);
  }
  if (Object.keys(scheduler).length > 0) options.scheduler = scheduler as Settings["scheduler"];
  return options;
}

/** "1024x768" (or "4,8" with `separator` ","): two integers from `min` up to MAX_SIZE_CONDITION. */
function pairFlag(text: string, flag: string, separator: string, min: number): [number, number] {
  const parts = text.split(separator);
  const values = parts.map((p) => (/^\d+$/.test(p) ? Number(p) : NaN));
  if (parts.length !== 2 || values.some((v) => !(v >= min && v <= MAX_SIZE_CONDITION))) {
    const what = separator === "x" ? "HEIGHTxWIDTH" : "TOP,LEFT";
    throw invalid(`${what} of integers between ${min} and ${MAX_SIZE_CONDITION}`, flag, text);
  }
  return [values[0]!, values[1]!];
}

/** --seed as a bigint. */
export function seedFrom(text: string): bigint {
  return seed(/^\d+$/.test(text) ? BigInt(text) : text, "--seed");
}

/** A decimal integer flag value (validated for range by the caller). */
export function integer(text: string): number | string {
  return /^-?\d+$/.test(text) ? Number(text) : text;
}

/** A decimal number flag value. */
export function number(text: string): number | string {
  return /^-?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(text) ? Number(text) : text;
}
