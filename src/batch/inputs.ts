/**
 * One input of a batch: a prompt with its own seed and settings, checked with the library's
 * validators, and the key that decides which inputs may share a GPU batch (the same size, steps,
 * guidance and scheduler; prompts, negative prompts and seeds may differ).
 */

import { randomBytes } from "node:crypto";

import { CandlewickError } from "../errors.js";
import { checkGenerateOptions } from "../check-options.js";
import type { GenerateOptions } from "../options.js";
import type { ImageSource } from "../image-input.js";
import type { SchedulerChoice } from "../schedulers.js";
import { checkOptionsObject, invalid } from "../validate.js";

/** One image to make. A plain string is a prompt with every setting at its default. */
export interface BatchInput {
  /** What to draw. Required. */
  prompt: string;
  /** What to steer away from. Default: the batch's `negativePrompt`, else none. */
  negativePrompt?: string;
  /** This image's seed. Default: a random one (read it back from `result.image.seed`). */
  seed?: number | bigint;
  /** Default: the batch's, else 50. */
  numInferenceSteps?: number;
  /** Default: the batch's, else 7.5. */
  guidanceScale?: number;
  /** Default: the batch's, else the model's. */
  width?: number;
  /** Default: the batch's, else the model's. */
  height?: number;
  /** Default: the batch's, else the model folder's DDIM config. */
  scheduler?: SchedulerChoice;
  /** A picture to start from (image to image; with `maskImage`, inpainting), as `generate` takes it. Default: the batch's, else none. */
  image?: ImageSource;
  /** Inpainting's mask (white = repaint). Default: the batch's, else none. */
  maskImage?: ImageSource;
  /** How much of `image` to repaint, in (0, 1]. Default: the batch's, else 0.8 (image to image) or 1 (inpainting). */
  strength?: number;
  /** Inpaint only the region around the mask (see `GenerateOptions.paddingMaskCrop`). Default: the batch's, else none. */
  paddingMaskCrop?: number;
  /** Decode in tiles (see `GenerateOptions.vaeTiling`). Default: the batch's, else false. */
  vaeTiling?: boolean;
  /** diffusers' plain prompt encoding (see `GenerateOptions.truncateLongPrompts`). Default: the batch's, else false. */
  truncateLongPrompts?: boolean;
  /** See `GenerateOptions.clipSkip`. Default: the batch's, else none. */
  clipSkip?: number;
  /** SDXL: the second text encoder's prompts (see `GenerateOptions.prompt2`). Default: the batch's, else the prompts. */
  prompt2?: string;
  negativePrompt2?: string;
  /** SDXL's size conditions and `denoisingEnd` (see `GenerateOptions`). Default: the batch's, else none. */
  originalSize?: readonly [number, number];
  cropsCoordsTopLeft?: readonly [number, number];
  targetSize?: readonly [number, number];
  negativeOriginalSize?: readonly [number, number];
  negativeCropsCoordsTopLeft?: readonly [number, number];
  negativeTargetSize?: readonly [number, number];
  denoisingEnd?: number;
  denoisingStart?: number;
  aestheticScore?: number;
  negativeAestheticScore?: number;
}

/** Settings every input of a batch starts from. */
export type BatchDefaults = Omit<BatchInput, "prompt" | "seed">;

/** The model families' settings (SDXL's second prompts, clipSkip, SDXL's conditions): inputs share a call only when they agree on them. */
const FAMILY_KEYS = [
  "prompt2", "negativePrompt2", "clipSkip", "originalSize", "cropsCoordsTopLeft", "targetSize", "negativeOriginalSize", "negativeCropsCoordsTopLeft",
  "negativeTargetSize", "denoisingEnd", "denoisingStart", "aestheticScore", "negativeAestheticScore",
] as const;

export const INPUT_KEYS = [
  "prompt", "negativePrompt", "seed", "numInferenceSteps", "guidanceScale", "width", "height", "scheduler", "image", "maskImage", "strength", "vaeTiling",
  "truncateLongPrompts", "paddingMaskCrop",
  ...FAMILY_KEYS,
] as const;
const DEFAULT_KEYS = INPUT_KEYS.filter((k) => k !== "prompt" && k !== "seed");

/** An input, checked, ready to join a GPU batch. */
export interface CheckedInput {
  /** The input's place in the stream, from 0. */
  index: number;
  prompt: string;
  negativePrompt: string;
  seed: bigint;
  /** The settings a GPU batch shares, as generate options (without prompt, negative prompt and seed; one second prompt for all). */
  shared: Omit<GenerateOptions, "prompt" | "negativePrompt" | "seed" | "seeds" | "prompt2" | "negativePrompt2"> & Pick<BatchInput, "prompt2" | "negativePrompt2">;
  /** Inputs with equal keys may run in one call. */
  key: string;
}

/** Check the batch-wide defaults. */
export function checkDefaults(value: unknown): BatchDefaults {
  const o = checkOptionsObject(value, "defaults", DEFAULT_KEYS) as BatchDefaults;
  checkGenerateOptions({ prompt: "", ...o });
  return o;
}

/** Check input number `index` (a string or a BatchInput) over `defaults`; errors name `name` ("inputs[3]"). */
export function checkInput(value: unknown, index: number, defaults: BatchDefaults, name = `inputs[${index}]`): CheckedInput {
  const input = typeof value === "string" ? { prompt: value } : value;
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw invalid("prompt string or object with a prompt", name, value);
  }
  let o: Record<string, unknown>;
  try {
    o = checkOptionsObject(input, name, INPUT_KEYS);
    if (typeof o.prompt !== "string") throw invalid("string", "prompt", o.prompt);
    for (const key of ["negativePrompt", "prompt2", "negativePrompt2"] as const) {
      if (o[key] !== undefined && typeof o[key] !== "string") throw invalid("string", key, o[key]);
    }
    const given = Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
    const { prompt, negativePrompt, seed, ...shared } = { ...defaults, ...given } as BatchInput;
    const { raw } = checkGenerateOptions({ prompt, seed, ...shared });
    // One call takes one image: inputs share a call only when they share the image itself.
    const images = [shared.image, shared.maskImage].map(identity);
    const family = FAMILY_KEYS.map((k) => raw[k] ?? null);
    const key = JSON.stringify([raw.numInferenceSteps, raw.guidanceScale, raw.width, raw.height, sorted(raw.scheduler), raw.strength, raw.paddingMaskCrop, raw.vaeTiling, raw.truncateLongPrompts, images, family]);
    return { index, prompt, negativePrompt: negativePrompt ?? "", seed: raw.seed ?? randomSeed(), shared, key };
  } catch (error) {
    if (error instanceof CandlewickError && !error.message.includes(name)) {
      throw new CandlewickError(`${name}: ${error.message}`, error.code, { cause: error });
    }
    throw error;
  }
}

const ids = new WeakMap<object, number>();
let nextId = 1;
/** A path as itself, bytes or pixels by the object they are (each object its own number), none as null. */
function identity(image: ImageSource | undefined): string | number | null {
  if (image === undefined) return null;
  if (typeof image === "string") return image;
  if (!ids.has(image)) ids.set(image, nextId++);
  return ids.get(image)!;
}

/** A random u64 seed. */
export function randomSeed(): bigint {
  return randomBytes(8).readBigUInt64LE();
}

/** An object with its keys in order, so that equal settings give equal keys. */
function sorted(value: unknown): unknown {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return value;
  return Object.fromEntries(Object.entries(value).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, sorted(v)]));
}
