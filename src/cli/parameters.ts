/**
 * What made an image, as the CLI records it: in the PNG's text chunks (`generate` and `batch`
 * alike) and in batch's manifest. Each parameter has its own chunk, and `parameters` holds them in
 * the form Stable Diffusion web UIs write and read (AUTOMATIC1111's infotext): the prompt, then
 * "Negative prompt: ...", then "Steps: 30, Sampler: DDIM, CFG scale: 7.5, Seed: 1, Size: 512x512,
 * Model: ..., Eta DDIM: 0.5" (the web UIs' name of the scheduler; DDIM's eta only when it is not
 * 0, its default there; "Denoising strength: 0.75" for img2img and inpainting, whose `task` and
 * `strength` also have their own chunks).
 */

import { createRequire } from "node:module";

import { CandlewickError, INTERNAL } from "../errors.js";
import type { ResolvedSettings } from "../image.js";
import type { GenerateOptions } from "../options.js";

/** One image's generation parameters. */
export interface ImageParameters {
  prompt: string;
  negativePrompt: string;
  /** SDXL: the second text encoder's prompt and negative prompt, when the call gave them. */
  prompt2?: string;
  negativePrompt2?: string;
  /** A u64, as a decimal string. */
  seed: string;
  steps: number;
  guidance: number;
  width: number;
  height: number;
  /** The scheduler as the call named it ("ddim", "DDIMScheduler", ...; the model's when the call named none), then its fields as JSON when it set any. */
  scheduler: string;
  /** DDIM's eta (0 unless the scheduler options set it). */
  eta: number;
  /** The --model value (a folder or a hub id). */
  model: string;
  /** A single-file checkpoint's hash as the web UI's "Model hash" (10 hex digits of its sha256); absent for folders. */
  modelHash?: string;
  /** The LoRAs fused in (absent when none). */
  loras?: LoraRecord[];
  /** "img2img" or "inpaint" (absent for text to image). */
  task?: "img2img" | "inpaint";
  /** How much of the image was repainted (img2img and inpaint). */
  strength?: number;
  /** Inpainting's `paddingMaskCrop` (absent when none). */
  paddingMaskCrop?: number;
  /** diffusers' `clip_skip` (absent when none). */
  clipSkip?: number;
  /** SDXL's size conditions as they ran, "HxW" (crops "top,left"); absent for other models. */
  originalSize?: string;
  cropsCoordsTopLeft?: string;
  targetSize?: string;
  negativeOriginalSize?: string;
  negativeCropsCoordsTopLeft?: string;
  negativeTargetSize?: string;
}

/** A LoRA as images record it. */
export interface LoraRecord {
  /** Its name in `<lora:name:weight>` and `Lora hashes` (the file name without .safetensors, or the tag's name). */
  name: string;
  /** The file, as given. */
  path: string;
  weight: number;
  /** The web UI's LoRA hash: 12 hex digits of the sha256 of its tensor data (autov3). */
  hash: string;
}

/** The resolved settings' SDXL size conditions and clipSkip, as ImageParameters records them. */
const SIZE_KEYS = [
  "originalSize", "cropsCoordsTopLeft", "targetSize", "negativeOriginalSize", "negativeCropsCoordsTopLeft", "negativeTargetSize",
] as const;

/** What the library says a call ran with (`image.settings`: every default filled in). */
type Resolved = Pick<ResolvedSettings, "numInferenceSteps" | "guidanceScale" | "width" | "height" | "scheduler" | "schedulerConfig"> &
  Partial<Pick<ResolvedSettings, "task" | "strength" | "paddingMaskCrop" | "clipSkip" | (typeof SIZE_KEYS)[number]>>;

/** A generated image's resolved settings (every image from `generate` has them). */
export function resolvedOf(image: { settings?: Resolved | undefined }): Resolved {
  if (!image.settings) throw new CandlewickError("the image carries no settings from the native module", INTERNAL);
  return image.settings;
}

/**
 * The parameters of an image: its prompts and seed, the settings the library resolved for the call
 * (`resolved`), the scheduler fields the call itself set (`settings.scheduler`, kept as given), and
 * the model file's and LoRAs' hashes (`files`).
 */
export function imageParameters(
  settings: Pick<GenerateOptions, "scheduler" | "prompt2" | "negativePrompt2">, prompt: string, negativePrompt: string, seed: bigint, resolved: Resolved, model: string,
  files: { modelHash?: string | undefined; loras?: readonly LoraRecord[] } = {},
): ImageParameters {
  const chosen = typeof settings.scheduler === "string" ? {} : { ...settings.scheduler };
  const { type: _, ...overrides } = chosen as Record<string, unknown> & { type?: string };
  const name = resolved.scheduler;
  const eta = resolved.schedulerConfig.eta;
  const loras = files.loras ?? [];
  return {
    prompt: withLoraTags(prompt, loras),
    negativePrompt,
    ...secondPrompts(settings),
    seed: seed.toString(),
    steps: resolved.numInferenceSteps,
    guidance: resolved.guidanceScale,
    width: resolved.width,
    height: resolved.height,
    scheduler: Object.keys(overrides).length > 0 ? `${name} ${JSON.stringify(overrides)}` : name,
    eta: typeof eta === "number" ? eta : 0,
    model,
    ...(files.modelHash ? { modelHash: files.modelHash } : {}),
    ...(loras.length > 0 ? { loras: loras.map((l) => ({ ...l })) } : {}),
    ...(resolved.task && resolved.task !== "txt2img" ? { task: resolved.task, strength: resolved.strength ?? 1 } : {}),
    ...(resolved.paddingMaskCrop !== undefined ? { paddingMaskCrop: resolved.paddingMaskCrop } : {}),
    ...(resolved.clipSkip ? { clipSkip: resolved.clipSkip } : {}),
    ...Object.fromEntries(SIZE_KEYS.flatMap((key) => {
      const value = resolved[key];
      return value ? [[key, key.startsWith("crops") || key.startsWith("negativeCrops") ? value.join(",") : value.join("x")]] : [];
    })),
  };
}

/** SDXL's `prompt2` and `negativePrompt2` as given (one text for the image; empty ones are none, as in the call). */
function secondPrompts(settings: Pick<GenerateOptions, "prompt2" | "negativePrompt2">): Pick<ImageParameters, "prompt2" | "negativePrompt2"> {
  const text = (v: string | readonly string[] | undefined) => (typeof v === "string" ? v : v?.length === 1 ? v[0] : undefined);
  const [prompt2, negativePrompt2] = [text(settings.prompt2), text(settings.negativePrompt2)];
  return { ...(prompt2 ? { prompt2 } : {}), ...(negativePrompt2 ? { negativePrompt2 } : {}) };
}

/** `<lora:name:weight>`, as the web UI writes the tag. */
export function loraTag(l: { name: string; weight: number }): string {
  return `<lora:${l.name}:${l.weight}>`;
}

/** The prompt with a tag for each LoRA it does not already name (the web UI keeps the tags in the prompt it records). */
export function withLoraTags(prompt: string, loras: readonly { name: string; weight: number }[]): string {
  const missing = loras.filter((l) => !prompt.includes(`<lora:${l.name}:`) && !prompt.includes(`<lora:${l.name}>`)).map(loraTag);
  return missing.length === 0 ? prompt : [prompt, ...missing].join(" ");
}

/**
 * The web UIs' names of diffusers' scheduler classes (and of candlewick's short names for them);
 * a scheduler not listed keeps its own name.
 */
const SAMPLERS: Record<string, string> = {
  ddim: "DDIM",
  DDIMScheduler: "DDIM",
  PNDMScheduler: "PLMS",
  EulerDiscreteScheduler: "Euler",
  EulerAncestralDiscreteScheduler: "Euler a",
  LMSDiscreteScheduler: "LMS",
  DPMSolverMultistepScheduler: "DPM++ 2M",
};

/** PNG text entries: each parameter by name, `parameters` as web UIs write it, and `Software`. */
export function pngText(p: ImageParameters): Record<string, string> {
  const type = p.scheduler.split(" ")[0]!;
  const settings = [
    `Steps: ${p.steps}`,
    `Sampler: ${SAMPLERS[type] ?? type}`,
    `CFG scale: ${p.guidance}`,
    `Seed: ${p.seed}`,
    `Size: ${p.width}x${p.height}`,
    ...(p.modelHash ? [`Model hash: ${p.modelHash}`] : []),
    `Model: ${quote(p.model)}`,
    ...(p.eta !== 0 ? [`${/ddim/i.test(type) ? "Eta DDIM" : "Eta"}: ${p.eta}`] : []),
    // The web UIs' name of img2img's and inpainting's strength.
    ...(p.task ? [`Denoising strength: ${p.strength}`] : []),
    // The web UIs count the last layer as 1: their "Clip skip: 2" is diffusers' clip_skip 1.
    ...(p.clipSkip ? [`Clip skip: ${p.clipSkip + 1}`] : []),
    // The web UI's Lora extension: "name: hash" with ":" and "," taken out of the name, quoted as a whole.
    ...(p.loras?.length ? [`Lora hashes: ${quote(p.loras.map((l) => `${l.name.replace(/[:,]/g, "")}: ${l.hash}`).join(", "))}`] : []),
  ];
  const parameters = [p.prompt, ...(p.negativePrompt ? [`Negative prompt: ${p.negativePrompt}`] : []), settings.join(", ")].join("\n");
  return {
    prompt: p.prompt,
    negativePrompt: p.negativePrompt,
    ...(p.prompt2 ? { prompt2: p.prompt2 } : {}),
    ...(p.negativePrompt2 ? { negativePrompt2: p.negativePrompt2 } : {}),
    seed: p.seed,
    steps: String(p.steps),
    guidance: String(p.guidance),
    scheduler: p.scheduler,
    eta: String(p.eta),
    model: p.model,
    ...(p.modelHash ? { modelHash: p.modelHash } : {}),
    ...(p.loras?.length ? { loras: JSON.stringify(p.loras) } : {}),
    size: `${p.width}x${p.height}`,
    ...(p.task ? { task: p.task, strength: String(p.strength) } : {}),
    ...(p.paddingMaskCrop !== undefined ? { paddingMaskCrop: String(p.paddingMaskCrop) } : {}),
    ...(p.clipSkip ? { clipSkip: String(p.clipSkip) } : {}),
    ...Object.fromEntries(SIZE_KEYS.flatMap((key) => (p[key] ? [[key, p[key]!]] : []))),
    parameters,
    Software: `candlewick ${version()}`,
  };
}

/** A value as web UIs write it in `parameters`: JSON-quoted when it holds a comma, colon or newline. */
function quote(value: string): string {
  return /[,:\n]/.test(value) ? JSON.stringify(value) : value;
}

/** The package's version. */
export function version(): string {
  return (createRequire(import.meta.url)("../../package.json") as { version: string }).version;
}
