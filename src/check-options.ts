/**
 * The checks of the public options (options.ts): every value is checked here, before anything
 * crosses into Rust, with messages that name the option, and converted to the binding's shape.
 */

import { resolve as resolvePath } from "node:path";

import type { RawGenerateOptions, RawLatents, RawLoadOptions } from "./generated/native.js";
import type { HubOptions } from "./hub/download.js";
import { VARIANTS } from "./hub/files.js";
import { checkImage, type CheckedImage } from "./image-input.js";
import { toRawScheduler } from "./schedulers.js";
import { CandlewickError, INVALID_OPTION, type AbortSignalLike } from "./errors.js";
import {
  ATTENTION_BACKENDS, CONVOLUTION_PATHS, DEVICES, DTYPES, MAX_CUDA_ORDINAL, MAX_IMAGES_PER_CALL, MAX_IMAGES_PER_PROMPT, MAX_LORA_WEIGHT,
  MAX_SIDE, MAX_SIZE_CONDITION, MAX_STEPS, MAX_THREADS, SIZE_CONDITIONS, type Device, type GenerateProgress,
} from "./options.js";
import { boolean, checkOptionsObject, count, integerIn, invalid, isPlainObject, numberIn, oneOf } from "./validate.js";

/** A device: one of DEVICES, or "cuda:N". */
export function device(value: unknown, option: string): Device {
  if (typeof value === "string" && value.startsWith("cuda:")) {
    const n = value.slice(5);
    if (!/^\d{1,4}$/.test(n) || Number(n) > MAX_CUDA_ORDINAL) throw invalid(`"cuda:N" with N between 0 and ${MAX_CUDA_ORDINAL}`, option, value);
    return value as Device;
  }
  return oneOf(value, option, DEVICES);
}

/** Check a list of LoRAs (`loras`, `setLoras`). @internal */
export function checkLoras(value: unknown, option = "loras"): { path: string; weight: number }[] {
  if (!Array.isArray(value)) throw invalid("array of { path, weight }", option, value);
  return value.map((entry, i) => {
    const o = checkOptionsObject(entry, `${option}[${i}]`, ["path", "weight"]);
    const path = nonEmptyString(o.path, `${option}[${i}].path`);
    const weight = o.weight === undefined ? 1 : numberIn(o.weight, `${option}[${i}].weight`, -MAX_LORA_WEIGHT, MAX_LORA_WEIGHT);
    return { path: resolvePath(path), weight };
  });
}

const NATIVE_LOAD_KEYS = [
  "device", "dtype", "attention", "convolution", "cudaGraphs", "autotune", "tf32", "fp8", "threads", "textualInversions", "config", "vae", "loras",
] as const;
const AUTOTUNE_KEYS = ["cudnn", "gemm"] as const;
/** The boolean switches that the grouped GPU options replaced, each with what it became. */
const REPLACED_LOAD_KEYS = new Map<string, [option: string, example: string]>([
  ["flashAttention", ["attention", 'flashAttention: false is attention: "math"']],
  ["cudnnAttention", ["attention", 'cudnnAttention: false is attention: "flash"']],
  ["cudnn", ["convolution", 'cudnn: false is convolution: "candle"']],
  ["channelsLast", ["convolution", 'channelsLast: false is convolution: "cudnn-nchw"']],
  ["cudnnBenchmark", ["autotune", "cudnnBenchmark: true is autotune: { cudnn: true }"]],
  ["gemmBenchmark", ["autotune", "gemmBenchmark: true is autotune: { gemm: true }"]],
]);
const HUB_KEYS = ["revision", "variant", "cacheDir", "token", "endpoint", "offline", "onDownloadProgress", "signal"] as const;
const GENERATE_KEYS = [
  "prompt", "negativePrompt", "prompt2", "negativePrompt2", "numInferenceSteps", "guidanceScale", "width", "height", "numImagesPerPrompt",
  "seed", "seeds", "latents", "scheduler", "onProgress", "signal", "onWarning", "image", "maskImage", "strength",
  "paddingMaskCrop", "vaeTiling", "vaeSlicing", "previewEvery", "truncateLongPrompts", "clipSkip", "denoisingEnd", "denoisingStart", "aestheticScore", "negativeAestheticScore", ...SIZE_CONDITIONS.map(([key]) => key),
] as const;

/** Load options, checked: the binding's part and the hub's part. @internal */
export interface CheckedLoadOptions {
  raw: RawLoadOptions;
  hub: HubOptions;
}

/** Check load options and split them into the binding's shape and the hub options. @internal */
export function checkLoadOptions(value: unknown): CheckedLoadOptions {
  refuseReplacedKeys(value);
  const o = checkOptionsObject(value, "load options", [...NATIVE_LOAD_KEYS, ...HUB_KEYS]);
  const hub: HubOptions = {};
  for (const key of ["revision", "cacheDir", "endpoint"] as const) {
    if (o[key] !== undefined) hub[key] = nonEmptyString(o[key], key);
  }
  if (o.token !== undefined) hub.token = o.token === false ? false : nonEmptyString(o.token, "token");
  if (hub.endpoint !== undefined && !/^https?:\/\/[^/]/.test(hub.endpoint)) throw invalid("http(s) URL", "endpoint", hub.endpoint);
  if (o.variant !== undefined) hub.variant = oneOf(o.variant, "variant", VARIANTS);
  if (o.offline !== undefined) hub.offline = boolean(o.offline, "offline");
  if (o.onDownloadProgress !== undefined) hub.onDownloadProgress = callback(o.onDownloadProgress, "onDownloadProgress") as HubOptions["onDownloadProgress"];
  if (o.signal !== undefined) hub.signal = abortSignal(o.signal);
  const native = Object.fromEntries(NATIVE_LOAD_KEYS.filter((k) => k in o).map((k) => [k, o[k]]));
  return { raw: toRawLoadOptions(native), hub };
}

/** Check the binding's load options and convert them to its shape. @internal */
export function toRawLoadOptions(value: unknown): RawLoadOptions {
  refuseReplacedKeys(value);
  const o = checkOptionsObject(value, "load options", NATIVE_LOAD_KEYS);
  const raw: RawLoadOptions = {};
  if (o.device !== undefined) raw.device = device(o.device, "device");
  if (o.dtype !== undefined) raw.dtype = oneOf(o.dtype, "dtype", DTYPES);
  if (o.attention !== undefined) raw.attention = oneOf(o.attention, "attention", ATTENTION_BACKENDS);
  if (o.convolution !== undefined) raw.convolution = oneOf(o.convolution, "convolution", CONVOLUTION_PATHS);
  if (o.cudaGraphs !== undefined) raw.cudaGraphs = boolean(o.cudaGraphs, "cudaGraphs");
  if (o.autotune !== undefined) {
    const a = checkOptionsObject(o.autotune, "autotune", AUTOTUNE_KEYS);
    raw.autotune = {};
    if (a.cudnn !== undefined) raw.autotune.cudnn = boolean(a.cudnn, "autotune.cudnn");
    if (a.gemm !== undefined) raw.autotune.gemm = boolean(a.gemm, "autotune.gemm");
  }
  if (o.tf32 !== undefined) raw.tf32 = boolean(o.tf32, "tf32");
  if (o.fp8 !== undefined) raw.fp8 = boolean(o.fp8, "fp8");
  if (o.threads !== undefined) raw.threads = integerIn(o.threads, "threads", 1, MAX_THREADS);
  if (o.textualInversions !== undefined) raw.textualInversions = textualInversions(o.textualInversions);
  if (o.config !== undefined) raw.config = resolvePath(nonEmptyString(o.config, "config"));
  if (o.vae !== undefined) raw.vae = resolvePath(nonEmptyString(o.vae, "vae"));
  if (o.loras !== undefined) raw.loras = checkLoras(o.loras);
  return raw;
}

/** A switch the grouped GPU options replaced: refused, with the option to use instead. */
function refuseReplacedKeys(value: unknown): void {
  if (!isPlainObject(value)) return;
  for (const key of Object.keys(value)) {
    const replaced = REPLACED_LOAD_KEYS.get(key);
    if (replaced) {
      const [option, example] = replaced;
      throw new CandlewickError(`Unknown option "${key}" in load options; did you mean "${option}"? (${example})`, INVALID_OPTION);
    }
  }
}

/** A generate call's options, split into what crosses into Rust and what stays in JavaScript. @internal */
export interface CheckedGenerateOptions {
  raw: RawGenerateOptions;
  onProgress?: (progress: GenerateProgress) => void;
  signal?: AbortSignalLike;
  onWarning?: (message: string) => void;
  /** Images still to read (paths) or already in the binding's shape. */
  image?: CheckedImage;
  maskImage?: CheckedImage;
}

/** Check generate options and convert them to the binding's shape. @internal */
export function checkGenerateOptions(value: unknown): CheckedGenerateOptions {
  if (value === undefined) throw invalid("options object with a prompt", "generate options", value);
  const o = checkOptionsObject(value, "generate options", GENERATE_KEYS);
  const prompt = prompts(o.prompt);
  const raw: RawGenerateOptions = { prompt };
  if (o.negativePrompt !== undefined) raw.negativePrompt = promptsPerPrompt(o.negativePrompt, "negativePrompt", prompt.length);
  // diffusers' `prompt_2 or prompt`: an empty string is no second prompt.
  for (const key of ["prompt2", "negativePrompt2"] as const) {
    if (o[key] !== undefined && o[key] !== "") raw[key] = promptsPerPrompt(o[key], key, prompt.length);
  }
  if (o.numInferenceSteps !== undefined) raw.numInferenceSteps = integerIn(o.numInferenceSteps, "numInferenceSteps", 1, MAX_STEPS);
  if (o.guidanceScale !== undefined) raw.guidanceScale = numberIn(o.guidanceScale, "guidanceScale", 0);
  if (o.width !== undefined) raw.width = side(o.width, "width");
  if (o.height !== undefined) raw.height = side(o.height, "height");
  if (o.numImagesPerPrompt !== undefined) {
    raw.numImagesPerPrompt = integerIn(o.numImagesPerPrompt, "numImagesPerPrompt", 1, MAX_IMAGES_PER_PROMPT);
  }
  const perPrompt = raw.numImagesPerPrompt ?? 1;
  if (prompt.length * perPrompt > MAX_IMAGES_PER_CALL) {
    const received = `${count(prompt.length, "prompt")} x ${perPrompt} = ${count(prompt.length * perPrompt, "image")}`;
    const message = `Expected at most ${MAX_IMAGES_PER_CALL} images in one call (prompts x numImagesPerPrompt) but received ${received}; generateBatch makes any number`;
    throw new CandlewickError(message, INVALID_OPTION);
  }
  if (o.seed !== undefined) raw.seed = seed(o.seed, "seed");
  if (o.seeds !== undefined) raw.seeds = seedList(o.seeds, prompt.length * perPrompt, raw.seed !== undefined);
  if (o.latents !== undefined) raw.latents = latents(o.latents, prompt.length * perPrompt);
  if (o.scheduler !== undefined) raw.scheduler = toRawScheduler(o.scheduler);
  if (o.strength !== undefined) raw.strength = strength(o.strength);
  // Its other rules (an image and a mask, a mask with a nonzero pixel) are the core's.
  if (o.paddingMaskCrop !== undefined) raw.paddingMaskCrop = integerIn(o.paddingMaskCrop, "paddingMaskCrop", 0, MAX_SIDE);
  if (o.vaeTiling !== undefined) raw.vaeTiling = boolean(o.vaeTiling, "vaeTiling");
  if (o.vaeSlicing !== undefined) raw.vaeSlicing = boolean(o.vaeSlicing, "vaeSlicing");
  if (o.truncateLongPrompts !== undefined) raw.truncateLongPrompts = boolean(o.truncateLongPrompts, "truncateLongPrompts");
  if (o.previewEvery !== undefined) raw.previewEvery = integerIn(o.previewEvery, "previewEvery", 1, MAX_STEPS);
  // The upper bound depends on the model's text encoder: checked there.
  if (o.clipSkip !== undefined) raw.clipSkip = integerIn(o.clipSkip, "clipSkip", 0, 64);
  for (const key of ["denoisingEnd", "denoisingStart"] as const) {
    const value = o[key];
    if (value === undefined) continue;
    if (typeof value !== "number" || !(value > 0 && value < 1)) throw invalid("number > 0 and < 1", key, value);
    raw[key] = value;
  }
  for (const key of ["aestheticScore", "negativeAestheticScore"] as const) {
    if (o[key] !== undefined) raw[key] = numberIn(o[key], key, -1e6, 1e6);
  }
  for (const [key, min] of SIZE_CONDITIONS) {
    if (o[key] !== undefined) raw[key] = sizePair(o[key], key, min);
  }
  const checked: CheckedGenerateOptions = { raw };
  if (o.image !== undefined) checked.image = checkImage(o.image, "image");
  if (o.maskImage !== undefined) checked.maskImage = checkImage(o.maskImage, "maskImage");
  if (o.onProgress !== undefined) checked.onProgress = callback(o.onProgress, "onProgress") as CheckedGenerateOptions["onProgress"];
  if (o.onWarning !== undefined) checked.onWarning = callback(o.onWarning, "onWarning") as CheckedGenerateOptions["onWarning"];
  if (o.signal !== undefined) checked.signal = abortSignal(o.signal);
  return checked;
}

function prompts(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (Array.isArray(value) && value.length > 0) {
    value.forEach((p, i) => {
      if (typeof p !== "string") throw invalid("string", `prompt[${i}]`, p);
    });
    return [...value] as string[];
  }
  throw invalid("string or non-empty array of strings", "prompt", value);
}

/** `negativePrompt`, `prompt2`, `negativePrompt2`: one string for all prompts, or one per prompt. */
function promptsPerPrompt(value: unknown, option: string, prompts: number): string[] {
  const what = prompts === 1 ? "string or array of 1 string" : `string or array of 1 or ${prompts} strings (one per prompt)`;
  if (typeof value === "string") return [value];
  if (Array.isArray(value)) {
    if (value.length !== 1 && value.length !== prompts) throw invalid(what, option, value);
    value.forEach((p, i) => {
      if (typeof p !== "string") throw invalid("string", `${option}[${i}]`, p);
    });
    return [...value] as string[];
  }
  throw invalid(what, option, value);
}

/** Width or height: a positive multiple of 8 up to MAX_SIDE. */
export function side(value: unknown, option: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value <= 0 || value % 8 !== 0) {
    throw invalid("integer multiple of 8", option, value);
  }
  if (value > MAX_SIDE) throw invalid(`integer between 8 and ${MAX_SIDE}`, option, value);
  return value;
}

/** An SDXL size condition: two integers between `min` and MAX_SIZE_CONDITION. */
function sizePair(value: unknown, option: string, min: number): number[] {
  const what = min === 0 ? "[top, left]" : "[height, width]";
  const ok = (v: unknown) => typeof v === "number" && Number.isInteger(v) && v >= min && v <= MAX_SIZE_CONDITION;
  if (!Array.isArray(value) || value.length !== 2 || !value.every(ok)) {
    throw invalid(`${what} of integers between ${min} and ${MAX_SIZE_CONDITION}`, option, value);
  }
  return [...value] as number[];
}

/** img2img's and inpainting's strength: a number in (0, 1]. */
export function strength(value: unknown, option = "strength"): number {
  if (typeof value !== "number" || !(value > 0 && value <= 1)) throw invalid("number > 0 and <= 1", option, value);
  return value;
}

const MAX_SEED = (1n << 64n) - 1n;

/** A seed: a non-negative safe integer or a bigint below 2^64, as a bigint. */
export function seed(value: unknown, option: string): bigint {
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  if (typeof value === "bigint" && value >= 0n && value <= MAX_SEED) return value;
  throw invalid("safe integer >= 0 or bigint between 0 and 2^64 - 1", option, value);
}

function seedList(value: unknown, images: number, withSeed: boolean): bigint[] {
  if (withSeed) throw new CandlewickError("Expected seed or seeds, not both, but received both", INVALID_OPTION);
  if (!Array.isArray(value) || value.length !== images) {
    throw invalid(`array of ${count(images, "seed")} (one per image: prompts x numImagesPerPrompt)`, "seeds", value);
  }
  return value.map((s: unknown, i) => seed(s, `seeds[${i}]`));
}

function textualInversions(value: unknown): { path: string; token?: string }[] {
  if (!Array.isArray(value)) throw invalid("array of paths or { path, token } objects", "textualInversions", value);
  return value.map((entry: unknown, i) => {
    const option = `textualInversions[${i}]`;
    if (typeof entry === "string") return { path: nonEmptyString(entry, option) };
    const o = checkOptionsObject(entry, option, ["path", "token"]);
    const checked: { path: string; token?: string } = { path: nonEmptyString(o.path, `${option}.path`) };
    if (o.token !== undefined) checked.token = nonEmptyString(o.token, `${option}.token`);
    return checked;
  });
}

function nonEmptyString(value: unknown, option: string): string {
  if (typeof value !== "string" || value.length === 0) throw invalid("non-empty string", option, value);
  return value;
}

function latents(value: unknown, batch: number): RawLatents {
  const o = checkOptionsObject(value, "latents", ["shape", "data"]);
  const shape = o.shape;
  if (!Array.isArray(shape) || shape.length !== 4 || !shape.every((d) => Number.isInteger(d) && d > 0)) {
    throw invalid("array of 4 positive integers [batch, channels, height, width]", "latents.shape", shape);
  }
  if (shape[0] !== batch) {
    throw invalid(`batch of ${batch} (prompts x numImagesPerPrompt)`, "latents.shape[0]", shape[0]);
  }
  if (!(o.data instanceof Float32Array)) throw invalid("Float32Array", "latents.data", o.data);
  const values = (shape as number[]).reduce((a, b) => a * b, 1);
  if (o.data.length !== values) {
    const message = `Expected Float32Array of ${count(values, "value")} (shape [${shape.join(", ")}]) for latents.data but received ${count(o.data.length, "value")}`;
    throw new CandlewickError(message, INVALID_OPTION);
  }
  // NaN or Infinity would spread through every step and come out as an all-black image.
  // (A plain loop: 5x faster than findIndex, ~30 ms for 64 latents of a 1024x1024 image.)
  const data = o.data;
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) throw invalid("finite number", `latents.data[${i}]`, data[i]);
  }
  return { shape: [...shape] as number[], data: o.data };
}

function callback(value: unknown, option: string): (...args: never[]) => unknown {
  if (typeof value !== "function") throw invalid("function", option, value);
  return value as (...args: never[]) => unknown;
}

function abortSignal(value: unknown): AbortSignalLike {
  const looksLikeSignal =
    typeof value === "object" && value !== null && typeof (value as AbortSignalLike).aborted === "boolean" &&
    typeof (value as AbortSignalLike).addEventListener === "function";
  if (!looksLikeSignal) throw invalid("AbortSignal", "signal", value);
  return value as AbortSignalLike;
}
