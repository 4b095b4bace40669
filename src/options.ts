/**
 * Public options of candlewick's calls, with their defaults, and their validation: every value is
 * checked here, before anything crosses into Rust, with messages that name the option.
 */

import { resolve as resolvePath } from "node:path";

import type { RawGenerateOptions, RawLatents, RawLoadOptions } from "./generated/native.js";
import type { HubOptions } from "./hub/download.js";
import { VARIANTS } from "./hub/files.js";
import { checkImage, type CheckedImage, type ImageSource } from "./image-input.js";
import { toRawScheduler, type SchedulerChoice } from "./schedulers.js";
import { CandlewickError, INVALID_OPTION, type AbortSignalLike } from "./errors.js";
import { boolean, checkOptionsObject, count, integerIn, invalid, isPlainObject, numberIn, oneOf } from "./validate.js";

/** "cuda" is the first GPU; "cuda:N" the GPU with ordinal N (as PyTorch numbers them, after CUDA_VISIBLE_DEVICES). */
export type Device = "auto" | "cpu" | "cuda" | `cuda:${number}`;
export type DType = "auto" | "f32" | "f16";

export type AttentionBackend = "auto" | "cudnn" | "flash" | "math";
export type ConvolutionPath = "auto" | "cudnn-nhwc" | "cudnn-nchw" | "candle";

export const DEVICES: readonly Device[] = ["auto", "cpu", "cuda"];
/** The highest GPU ordinal "cuda:N" may name. */
export const MAX_CUDA_ORDINAL = 1023;

/** A device: one of DEVICES, or "cuda:N". */
export function device(value: unknown, option: string): Device {
  if (typeof value === "string" && value.startsWith("cuda:")) {
    const n = value.slice(5);
    if (!/^\d{1,4}$/.test(n) || Number(n) > MAX_CUDA_ORDINAL) throw invalid(`"cuda:N" with N between 0 and ${MAX_CUDA_ORDINAL}`, option, value);
    return value as Device;
  }
  return oneOf(value, option, DEVICES);
}
export const DTYPES: readonly DType[] = ["auto", "f32", "f16"];
export const ATTENTION_BACKENDS: readonly AttentionBackend[] = ["auto", "cudnn", "flash", "math"];
export const CONVOLUTION_PATHS: readonly ConvolutionPath[] = ["auto", "cudnn-nhwc", "cudnn-nchw", "candle"];

/**
 * How `StableDiffusionPipeline.fromPretrained` loads a model. The hub options (`revision`, `variant`,
 * `cacheDir`, `token`, `endpoint`, `offline`, `onDownloadProgress`, `signal`) apply to hub ids only.
 */
export interface LoadOptions extends HubOptions {
  /**
   * Where to run. "auto" takes the first CUDA GPU when this build has CUDA and one is present, else
   * the CPU; "cuda:N" the GPU with ordinal N. Default "auto".
   */
  device?: Device;
  /** Weights and activations. "auto" is f16 on CUDA and f32 on the CPU; f16 loads the folder's `*.fp16.safetensors` when present. Default "auto". */
  dtype?: DType;
  /**
   * Which kernel runs attention (diffusers' attention backends). "auto": cuDNN's fused kernel for
   * self-attention (on Hopper faster at Stable Diffusion's head dims; cuDNN builds its kernel for
   * each new shape the first time, a few hundred milliseconds once per process), FlashAttention-2
   * for cross-attention and shapes cuDNN refuses, each where the build has it. "cudnn": cuDNN's
   * fused attention for all attention; "flash": FlashAttention-2 for all; "math": candle's
   * matmul + softmax. The fused kernels need a CUDA build and f16; a shape a kernel does not take
   * runs as "math". `pipe.info.attention` says what was resolved (`pipe.info.cudaFallbacks` why a
   * requested backend is unavailable). Default "auto".
   */
  attention?: AttentionBackend;
  /**
   * How convolutions run. "cudnn-nhwc": through cuDNN's execution plans (one per shape, built on
   * first use and cached), with kxk filters kept channels-last (converted once at load) on cuDNN's
   * NHWC kernels and the bias, time embedding and residual add fused into the layout change back;
   * "cudnn-nchw": cuDNN's plans on NCHW tensors (cuDNN converts them on every call); "candle":
   * candle's im2col + GEMM. "auto" is "cudnn-nhwc" in CUDA builds on a GPU, else "candle".
   * Default "auto".
   */
  convolution?: ConvolutionPath;
  /**
   * Capture the UNet step (and the text encoder) as a CUDA graph the second time a shape (size and
   * batch) is seen, and replay it for every later step: one launch instead of ~600 (CUDA builds).
   * Each captured shape keeps its own activation memory (the two most recent shapes are kept). Default true.
   */
  cudaGraphs?: boolean;
  /**
   * Choose each new shape's plan by timing the library's first few candidates the first time it
   * runs, instead of its heuristics' first choice: a slower first call at each new size, and
   * since the choice follows timings, images may differ in the last bits from one process to the next.
   */
  autotune?: {
    /** cuDNN's convolution plans (PyTorch's `torch.backends.cudnn.benchmark`; with a cuDNN `convolution`). Default false. */
    cudnn?: boolean;
    /** cuBLASLt's matrix-product algorithms (PyTorch's TunableOp; CUDA, f16). Default false. */
    gemm?: boolean;
  };
  /** Let f32 matrix products use TF32 units on CUDA (faster, ~1e-3 relative error). Default false. */
  tf32?: boolean;
  /**
   * FP8 (e4m3) matrix products for the UNet's linear layers on GPUs of compute capability 8.9 and
   * up (Ada, Hopper; CUDA, f16): weights quantized once at load, each layer's input at every call,
   * one scale a tensor. Faster, but not diffusers' numbers: the image differs from the f16 one
   * (README, Speed). Elsewhere it falls back to f16 with a line in `info.cudaFallbacks`. Default false.
   */
  fp8?: boolean;
  /**
   * Threads for this pipeline's CPU tensor work, in a pool of its own (1 to 1024). On a busy
   * machine fewer threads than cores can be faster. Default: the cores available to the process.
   */
  threads?: number;
  /**
   * Textual inversion embeddings added to the tokenizer and text encoder at load (diffusers'
   * `load_textual_inversion`): `.safetensors` files in diffusers' format (`learned_embeds.safetensors`,
   * `{ token: vectors }`) or AUTOMATIC1111's (`{ emb_params: vectors }`, token = the file's name), a
   * path or `{ path, token }` (the token to write in prompts, replacing the file's). Multi-vector
   * embeddings take as many tokens. SDXL takes `{ clip_l, clip_g }` files (AUTOMATIC1111's and ComfyUI's SDXL
   * format, token = the file's name): `clip_l` into the first tokenizer and text encoder, `clip_g` into the
   * second. Pickle files (`.pt`, `.bin`) are refused. Default: none.
   */
  textualInversions?: readonly (string | TextualInversionOptions)[];
  /**
   * For a single-file checkpoint (`model` is a `.safetensors` file in the original Stable Diffusion
   * layout, as A1111 and ComfyUI use): a local diffusers folder whose tokenizer (required: a
   * checkpoint holds none) and configs it takes, as diffusers' `from_single_file(config=...)`, of
   * the checkpoint's family (SD1.x/SD2.x, SDXL base, SDXL refiner: another is refused). For SD1.x a
   * folder with only `tokenizer/` takes diffusers' SD1.x defaults (v1-inference) for the rest;
   * SD2.x and SDXL need the folder's configs (and SDXL its `tokenizer_2/`).
   * Ignored for diffusers folders. Default: none (a single file then fails, saying so).
   */
  config?: string;
  /**
   * Another VAE instead of the model's: a diffusers VAE folder (config.json + weights), or a VAE
   * `.safetensors` file in diffusers' names or the original layout (A1111's VAE files): for SDXL in f16, the
   * fp16-fix VAE (madebyollin/sdxl-vae-fp16-fix, downloaded beforehand), whose config says `force_upcast: false`,
   * decodes in f16. Default: the model's.
   */
  vae?: string;
  /**
   * LoRAs fused into the UNet's and the text encoders' weights at load (diffusers'
   * `load_lora_weights` + `set_adapters(names, weights)` + `fuse_lora()`): kohya/A1111 files
   * (`lora_unet_*`, `lora_te_*`, SDXL's `lora_te1_*`/`lora_te2_*`, with alphas; LoCon convolution
   * layers) and diffusers/PEFT files (`unet.*.lora_A.weight`, `text_encoder_2.*`). Fused, they cost
   * nothing per step. `pipe.setLoras` replaces them
   * later. Default: none.
   */
  loras?: LoraInput[];
}

/** One textual inversion embedding: its `.safetensors` file and, optionally, the token to use in prompts. */
export interface TextualInversionOptions {
  path: string;
  /** Default: the file's token (diffusers' key, or the file's name for AUTOMATIC1111's and SDXL's files). */
  token?: string;
}

/** One LoRA file and how strongly it applies. */
export interface LoraInput {
  /** A `.safetensors` LoRA file. */
  path: string;
  /** The adapter weight (diffusers' `adapter_weights`, A1111's `<lora:name:weight>`), -16 to 16. Default 1. */
  weight?: number;
}

/** The largest |weight| a LoRA may take. */
export const MAX_LORA_WEIGHT = 16;

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

/** Where the denoising loop stands, after each step. */
export interface GenerateProgress {
  /** 1 after the first step, `totalSteps` after the last. */
  step: number;
  totalSteps: number;
  /** The scheduler timestep that step denoised (981, 961, ... for SD1.5 with 50 steps). */
  timestep: number;
  /**
   * With `previewEvery`, on every previewEvery-th step and the last: one small picture of the
   * current latents per image (width / 8 x height / 8 pixels for SD1.x), made by a fixed
   * latent-to-RGB map (no extra model). Absent on other steps and for other latent layouts.
   */
  preview?: PreviewImage[];
}

/** A preview of an image's latents: 8-bit RGB, rows top to bottom. */
export interface PreviewImage {
  width: number;
  height: number;
  /** width x height x 3 bytes. */
  data: Uint8Array;
}

/** Initial latents, for exact reproduction of another run. */
export interface LatentsOptions {
  /** [batch, channels, height / vaeScaleFactor, width / vaeScaleFactor], batch = prompts x numImagesPerPrompt. */
  shape: readonly [number, number, number, number];
  /** shape's product of values, NCHW order. */
  data: Float32Array;
}

/**
 * One call, as diffusers' pipelines take it: text to image (`StableDiffusionPipeline`); with
 * `image`, image to image (`StableDiffusionImg2ImgPipeline`); with `image` and `maskImage`,
 * inpainting (`StableDiffusionInpaintPipeline`); their `StableDiffusionXL*` twins for SDXL models.
 */
export interface GenerateOptions {
  /** What to draw: one prompt, or several (each gives `numImagesPerPrompt` images). Required. */
  prompt: string | readonly string[];
  /** What to steer away from: one for all prompts, or one per prompt. Default none (the empty prompt). */
  negativePrompt?: string | readonly string[];
  /**
   * SDXL only: what the second text encoder (`text_encoder_2`) reads instead of `prompt`, one for all prompts
   * or one per prompt (diffusers' `prompt_2`); the first encoder still reads `prompt`. The SDXL refiner, whose
   * only text encoder is the second, reads `prompt` and ignores this (a warning says so), as diffusers does.
   * Default: `prompt` (an empty string too, as diffusers' `prompt_2 or prompt`).
   */
  prompt2?: string | readonly string[];
  /**
   * SDXL only: `negativePrompt` for the second text encoder (diffusers' `negative_prompt_2`). Without
   * `negativePrompt`, SDXL base (`force_zeros_for_empty_prompt`) conditions the unconditional pass on zeros and
   * ignores it, as diffusers does (a warning says so). Default: `negativePrompt` (an empty string too).
   */
  negativePrompt2?: string | readonly string[];
  /** Denoising steps: more is slower and finer. Default 50. */
  numInferenceSteps?: number;
  /** Classifier-free guidance: how strongly to follow the prompt; <= 1 turns guidance off. Default 7.5. */
  guidanceScale?: number;
  /** Image width in pixels, a multiple of 8. Default: the model's (`pipe.defaultWidth`, 512 for SD1.5). */
  width?: number;
  /** Image height in pixels, a multiple of 8. Default: the model's (`pipe.defaultHeight`, 512 for SD1.5). */
  height?: number;
  /** Images per prompt. Default 1. */
  numImagesPerPrompt?: number;
  /**
   * Seeds the initial noise (and DDIM's eta noise): same seed, same image. Image i of the call gets
   * seed + i (wrapping at 2^64), as web UIs number a batch, so each image's `image.seed` makes that
   * image alone. A safe integer or a bigint below 2^64. Default: random (read it back from `image.seed`).
   */
  seed?: number | bigint;
  /**
   * One seed per image (prompt.length x numImagesPerPrompt, in output order) instead of `seed`: each
   * image is then the image its seed makes alone, so one image of a batch can be made again by itself. Default: none.
   */
  seeds?: readonly (number | bigint)[];
  /**
   * Start from these latents instead of seeded noise (text to image); with `maskImage`, inpainting's
   * noise, as diffusers' `latents` (the run starts from them whatever the strength); with `maskImage`
   * and `denoisingStart` and no `image` (SDXL), the image's latents: a base's `denoisingEnd` latents
   * continued (the inpainting handoff). Default: none.
   */
  latents?: LatentsOptions;
  /**
   * The scheduler: a name ("ddim", "DDIMScheduler", a preset such as "dpm++-2m-karras") or
   * `{ type, ...fields }`, fields in camelCase merged over the model folder's scheduler config.
   * Default: the folder's scheduler (`pipe.info.scheduler`) with its config.
   */
  scheduler?: SchedulerChoice;
  /** Called after each denoising step. Default: none. */
  onProgress?: (progress: GenerateProgress) => void;
  /** Cancels the call: the promise rejects with an AbortError (code ERR_CANDLEWICK_CANCELLED). Default: none. */
  signal?: AbortSignalLike;
  /** Receives warnings (a prompt cut to 77 tokens, ...). Default: `process.emitWarning`. */
  onWarning?: (message: string) => void;
  /**
   * The picture to start from (image to image, or inpainting with `maskImage`): a path to a PNG,
   * JPEG or WebP file, the file's bytes, or pixels `{ width, height, channels, data }` (a
   * `GeneratedImage` too). EXIF orientation is applied; an alpha channel is dropped. At most
   * 8192 pixels a side, checked from the file's header before decoding. The output takes its
   * size rounded down to a multiple of 8, unless `width` and `height` are given; the image is
   * resized to the output size with Lanczos (diffusers' default). Default: none (text to image).
   */
  image?: ImageSource;
  /**
   * Inpainting's mask, the size of `image`: white (>= 50% gray) is repainted, black kept. Gray or
   * RGB, no alpha channel. Works with inpainting models (a UNet of 9 input channels, such as
   * sd-v1-5-inpainting) and ordinary ones (the kept region is put back after every step). Default: none.
   */
  maskImage?: ImageSource;
  /**
   * How much of `image` to repaint, in (0, 1]: the last `strength` of the `numInferenceSteps`
   * steps run, from the image noised to that point (1: from pure noise). Default: 0.8 for image to
   * image, 1 for inpainting; for SDXL 0.3 and 0.9999 (diffusers' defaults).
   */
  strength?: number;
  /**
   * Inpaint only the region around the mask (diffusers' `padding_mask_crop`, AUTOMATIC1111's
   * "inpaint only masked"): the box around the mask's nonzero pixels, this many pixels wider on
   * each side and grown to the output's aspect ratio, is cut from `image` and `maskImage`, resized
   * to `width` x `height`, inpainted there, and laid back over the original image through the mask:
   * the images come out at the size of `image`. An integer >= 0; needs `image` and `maskImage`.
   * Default: none (the whole image is inpainted at the output's size).
   */
  paddingMaskCrop?: number;
  /**
   * Decode the latents in overlapping tiles (diffusers' `enable_vae_tiling`): the decode's memory
   * follows the tile (512x512 pixels for SD1.5), not the image; tiles blend at their seams. Off, a
   * decode that runs out of memory is redone in tiles, with a warning. Default false.
   */
  vaeTiling?: boolean;
  /**
   * Decode the call's images one at a time (diffusers' `enable_vae_slicing`). Default false: a batch
   * of large images (about 0.5 megapixels and up, such as SDXL's 1024x1024, where one image keeps the
   * GPU busy) is decoded one at a time anyway, in a fraction of the memory (images within one 8-bit
   * level of the whole batch's: cuDNN may pick other algorithms for one image).
   */
  vaeSlicing?: boolean;
  /**
   * Encode prompts as diffusers' `StableDiffusionPipeline` does: the text taken literally and cut at
   * 77 tokens, with a warning (compel's `truncate_long_prompts`). Default false: prompts take
   * AUTOMATIC1111's weighting syntax (`(word:1.3)`, `(word)` = x1.1, `[word]` = /1.1, `\(` for a
   * literal bracket, `BREAK` to start a new chunk) and any length, encoded in 75-token chunks as
   * compel does (README, "Long and weighted prompts").
   */
  truncateLongPrompts?: boolean;
  /** Give `onProgress` a preview of the latents every this many steps (and after the last). Default: none. */
  previewEvery?: number;
  /**
   * Condition on the text encoder's hidden states this many layers before the last (diffusers'
   * `clip_skip`): 1 takes the penultimate layer's output (through the final layer norm for SD
   * 1.x/2.x; SDXL already starts from the penultimate layer and skips further). The negative
   * prompt is encoded without it, as diffusers does. At most the encoder's layers minus 1 (minus 2
   * for SDXL). Default: none (0).
   */
  clipSkip?: number;
  /**
   * SDXL only: stop denoising this share of the way through the schedule, in (0, 1) (diffusers'
   * `denoising_end`): with `generateLatents`, the latents a refiner continues from (with
   * `denoisingStart`). Default: none (the whole schedule).
   */
  denoisingEnd?: number;
  /**
   * SDXL only: start this share of the way through the schedule, in (0, 1) (diffusers'
   * `denoising_start`): from `image` without adding noise, or from `latents` as they are: the
   * refiner's half of a base-to-refiner handoff (the base's `generateLatents` with `denoisingEnd`).
   * `strength` is then ignored. Default: none.
   */
  denoisingStart?: number;
  /** SDXL refiner (`requires_aesthetics_score`): the aesthetic score to condition on. Default 6. */
  aestheticScore?: number;
  /** SDXL refiner: the unconditional pass's aesthetic score. Default 2.5. */
  negativeAestheticScore?: number;
  /**
   * SDXL only: the size `[height, width]` the image is presented as having had before any resize
   * (SDXL's micro-conditioning, diffusers' `original_size`). Default: the output size.
   */
  originalSize?: readonly [number, number];
  /** SDXL only: where the image is presented as cropped from, `[top, left]` (`crops_coords_top_left`). Default [0, 0]. */
  cropsCoordsTopLeft?: readonly [number, number];
  /** SDXL only: the size `[height, width]` the image is presented as having (`target_size`). Default: the output size. */
  targetSize?: readonly [number, number];
  /**
   * SDXL only: `originalSize` for the unconditional pass (`negative_original_size`); used when
   * `negativeTargetSize` is given too, else the unconditional pass reads the positive sizes. Default: none.
   */
  negativeOriginalSize?: readonly [number, number];
  /** SDXL only: `cropsCoordsTopLeft` for the unconditional pass. Default [0, 0]. */
  negativeCropsCoordsTopLeft?: readonly [number, number];
  /** SDXL only: `targetSize` for the unconditional pass (with `negativeOriginalSize`). Default: none. */
  negativeTargetSize?: readonly [number, number];
}

/** The largest SDXL size condition (pixels). */
export const MAX_SIZE_CONDITION = 16 * 8192;
/** SDXL's size-condition options and the smallest value each takes. */
const SIZE_CONDITIONS = [
  ["originalSize", 1], ["cropsCoordsTopLeft", 0], ["targetSize", 1],
  ["negativeOriginalSize", 1], ["negativeCropsCoordsTopLeft", 0], ["negativeTargetSize", 1],
] as const;

/** The most pixels along one side. */
export const MAX_SIDE = 8192;
/** The most inference steps (DDIM cannot take more steps than the model's training timesteps, 1000). */
export const MAX_STEPS = 1000;
/**
 * The most images one call may make in all (prompts x numImagesPerPrompt). One call is one batch,
 * held in memory at once: GPU memory grows by ~0.9 GiB per 512x512 f16 image (7.64 GiB peak at
 * batch 8 on an H200, README's table), so 64 images take ~60 GiB, and a typo such as 100 prompts
 * x 64 would fail on memory after minutes of work. A bigger batch is not faster either: from two
 * images on, a UNet step is compute-bound on an H200 (docs/anchors.md). More images belong in
 * `generateBatch`, which makes any number in calls of up to this many.
 */
export const MAX_IMAGES_PER_CALL = 64;
/** The most images per prompt (one prompt may take the whole call). */
export const MAX_IMAGES_PER_PROMPT = MAX_IMAGES_PER_CALL;

const NATIVE_LOAD_KEYS = [
  "device", "dtype", "attention", "convolution", "cudaGraphs", "autotune", "tf32", "fp8", "threads", "textualInversions", "config", "vae", "loras",
] as const;
/** The most CPU threads one pipeline may ask for. */
export const MAX_THREADS = 1024;
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

