/**
 * Public options of candlewick's calls, each with its default, and the limits they take. They are
 * checked in check-options.ts, before anything crosses into Rust, with messages that name the option.
 */

import type { HubOptions } from "./hub/download.js";
import type { ImageSource } from "./image-input.js";
import type { SchedulerChoice } from "./schedulers.js";
import type { AbortSignalLike } from "./errors.js";

/** "cuda" is the first GPU; "cuda:N" the GPU with ordinal N (as PyTorch numbers them, after CUDA_VISIBLE_DEVICES). */
export type Device = "auto" | "cpu" | "cuda" | `cuda:${number}`;
export type DType = "auto" | "f32" | "f16";

export type AttentionBackend = "auto" | "cudnn" | "flash" | "math";
export type ConvolutionPath = "auto" | "cudnn-nhwc" | "cudnn-nchw" | "candle";

export const DEVICES: readonly Device[] = ["auto", "cpu", "cuda"];
/** The highest GPU ordinal "cuda:N" may name. */
export const MAX_CUDA_ORDINAL = 1023;

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
export const SIZE_CONDITIONS = [
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

/** The most CPU threads one pipeline may ask for. */
export const MAX_THREADS = 1024;
