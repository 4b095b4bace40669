/** `StableDiffusionPipeline`: load a diffusers model folder, generate images from text. */

import { debuglog } from "node:util";

import { abortError, CandlewickError, DEVICE, fromNativeError, INTERNAL, INVALID_OPTION } from "./errors.js";
import { loadNative, whyNoCuda } from "./binding.js";
import { GeneratedImage, type ResolvedSettings } from "./image.js";
import { readImage } from "./image-input.js";
import { generateBatch, type BatchOptions, type BatchResult } from "./batch/generate-batch.js";
import type { BatchInput } from "./batch/inputs.js";
import { resolveModel } from "./hub/resolve.js";
import { checkGenerateOptions, checkLoadOptions, checkLoras } from "./check-options.js";
import type { AttentionBackend, ConvolutionPath, GenerateOptions, LoadOptions, LoraInput } from "./options.js";
import { withDriverHint } from "./load-errors.js";
import { describe } from "./validate.js";

import type { GenerateCall, Pipeline, RawGenerateEvent, RawGenerateResult, RawPipelineInfo } from "./generated/native.js";

/** `NODE_DEBUG=candlewick` logs which device each pipeline runs on and why. */
const debug = debuglog("candlewick");

/**
 * GPU memory of this process's tensors on the pipeline's device, in bytes: PyTorch's
 * `memory_allocated`, `max_memory_allocated` and `memory_reserved`. All pipelines on one GPU
 * share these numbers; the CUDA context and the libraries' own buffers are not included.
 */
export interface GpuMemory {
  /** Held by live tensors now. */
  used: number;
  /** The most `used` has been since the process started or `resetGpuMemoryPeak()`. */
  peakUsed: number;
  /** Taken from the driver: used, or cached for reuse. */
  reserved: number;
}

/** What a loaded pipeline runs on and produces by default. */
export interface PipelineInfo {
  /** The model folder, as an absolute path. */
  modelDir: string;
  /** "cpu" or "cuda:N" ("cuda:0" for "cuda"). */
  device: string;
  /** Why that device was chosen ("device \"auto\" fell back to the CPU: ..."). */
  deviceReason: string;
  /** "f32" or "f16". */
  dtype: string;
  /**
   * The model folder's pipeline class (model_index.json's `_class_name`): "StableDiffusionPipeline",
   * "StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "LatentConsistencyModelPipeline", ...
   */
  pipelineClass: string;
  /**
   * The load option `attention` as resolved for this build, device and dtype: "auto" (cuDNN's
   * kernel for self-attention, FlashAttention-2 for the rest, at least one of them here), "cudnn",
   * "flash", or "math" (candle's ops: always on the CPU).
   */
  attention: AttentionBackend;
  /** The load option `convolution` as resolved: "cudnn-nhwc", "cudnn-nchw" or "candle" (always on the CPU). */
  convolution: Exclude<ConvolutionPath, "auto">;
  /** Whether the UNet step and the text encoder are captured and replayed as CUDA graphs (CUDA, `cudaGraphs` not false). */
  cudaGraphs: boolean;
  /** Whether cuDNN's convolution plans (with a cuDNN `convolution`) and cuBLASLt's algorithms (CUDA, f16) are chosen by timing them. */
  autotune: { cudnn: boolean; gemm: boolean };
  /** Whether f32 matrix products may use TF32 (CUDA, `tf32: true`). */
  tf32: boolean;
  /** Whether the UNet's linear layers multiply in FP8 (`fp8: true` where the GPU has it). */
  fp8: boolean;
  /** Why a requested GPU path could not be taken and what runs instead, one sentence each (empty when all were). */
  cudaFallbacks: string[];
  /** Width when `generate` is given none (the UNet's sample_size x vaeScaleFactor). */
  defaultWidth: number;
  /** Height when `generate` is given none. */
  defaultHeight: number;
  /** Pixels per latent cell along each side (8 for SD1.x/2.x). */
  vaeScaleFactor: number;
  /** Tokens per prompt; longer prompts are cut, with a warning (77 for CLIP). */
  maxPromptTokens: number;
  /** The model's training timesteps: the most inference steps DDIM allows. */
  numTrainTimesteps: number;
  /** The folder's scheduler class (scheduler_config.json's `_class_name`, e.g. "PNDMScheduler"): what runs unless a call's `scheduler` picks another. */
  scheduler: string;
  /** Threads of the pipeline's own pool for CPU tensor work (the `threads` load option, or the cores available). */
  threads: number;
  /** The LoRAs fused into the weights (load option `loras`, then `setLoras`), paths absolute. */
  loras: { path: string; weight: number }[];
}

/** A Stable Diffusion model (SD 1.x/2.x, SDXL and its refiner, LCM, Turbo in diffusers' folder layout), loaded and ready to generate. */
export class StableDiffusionPipeline {
  readonly #native: Pipeline;
  #info: PipelineInfo;

  private constructor(native: Pipeline, noCuda: string | undefined) {
    this.#native = native;
    const info: RawPipelineInfo = native.info;
    // "auto" on a CPU build: say why no CUDA build runs (not installed, or installed but not loading).
    const deviceReason = info.device === "cpu" && noCuda && !/"cpu" was requested/.test(info.deviceReason)
      ? `device "auto" fell back to the CPU: ${noCuda}`
      : info.deviceReason;
    this.#info = StableDiffusionPipeline.#publicInfo(info, withDriverHint(deviceReason));
  }

  static #publicInfo(info: RawPipelineInfo, deviceReason: string): PipelineInfo {
    return Object.freeze({
      ...info,
      attention: info.attention as PipelineInfo["attention"],
      convolution: info.convolution as PipelineInfo["convolution"],
      deviceReason,
      loras: Object.freeze(info.loras.map((l) => Object.freeze({ ...l }))) as PipelineInfo["loras"],
    });
  }

  /**
   * Fuse these LoRAs in place of the ones fused now (diffusers' `unfuse_lora`, `set_adapters`,
   * `fuse_lora`); `[]` restores the base weights. The new weights are computed from the base
   * weights kept in memory at load, not read from the model's files again. Runs after the calls
   * queued before it; CUDA graphs are captured again on later calls. Rejects with
   * ERR_CANDLEWICK_MODEL naming the LoRA file and key when a LoRA does not fit the model (the
   * pipeline keeps its weights), ERR_CANDLEWICK_INVALID_OPTION for a malformed list.
   */
  async setLoras(loras: LoraInput[]): Promise<void> {
    const checked = checkLoras(loras);
    try {
      const info = await this.#native.setLoras(checked);
      this.#info = StableDiffusionPipeline.#publicInfo(info, this.#info.deviceReason);
    } catch (error) {
      throw fromNativeError(error);
    }
  }

  /**
   * Load a model: a folder in diffusers' layout (model_index.json, tokenizer/, text_encoder/, unet/,
   * vae/, scheduler/), or a Hugging Face hub id ("org/name"), downloaded into the shared cache.
   * Loading runs off the JavaScript thread. Rejects with a CandlewickError whose `code` is
   * ERR_CANDLEWICK_MODEL (the message names the missing or damaged file), ERR_CANDLEWICK_DEVICE,
   * ERR_CANDLEWICK_INVALID_OPTION, or for hub ids ERR_CANDLEWICK_HUB_NOT_FOUND, ERR_CANDLEWICK_HUB_AUTH,
   * ERR_CANDLEWICK_HUB or ERR_CANDLEWICK_CACHE.
   */
  static async fromPretrained(model: string, options: LoadOptions = {}): Promise<StableDiffusionPipeline> {
    if (typeof model !== "string" || model.length === 0) {
      throw new CandlewickError(`Expected model folder or hub id ("org/name") for model but received ${describe(model)}`, INVALID_OPTION);
    }
    const { raw, hub } = checkLoadOptions(options);
    const native = loadNative();
    const noCuda = whyNoCuda();
    if (raw.device?.startsWith("cuda") && noCuda) {
      throw new CandlewickError(withDriverHint(`device "${raw.device}" was requested but ${noCuda}`), DEVICE);
    }
    const modelDir = await resolveModel(model, hub);
    let pipe: StableDiffusionPipeline;
    try {
      pipe = new StableDiffusionPipeline(await native.loadPipeline(modelDir, raw), noCuda);
    } catch (error) {
      const e = fromNativeError(error);
      if (e.code === "ERR_CANDLEWICK_DEVICE") throw new CandlewickError(withDriverHint(e.message), e.code, { cause: e });
      throw e;
    }
    debug("loaded %s on %s (%s): %s", pipe.modelDir, pipe.device, pipe.dtype, pipe.deviceReason);
    return pipe;
  }

  /** Everything below in one object. */
  get info(): PipelineInfo {
    return this.#info;
  }
  get modelDir(): string {
    return this.#info.modelDir;
  }
  get device(): string {
    return this.#info.device;
  }
  get deviceReason(): string {
    return this.#info.deviceReason;
  }
  get dtype(): string {
    return this.#info.dtype;
  }
  get attention(): PipelineInfo["attention"] {
    return this.#info.attention;
  }
  get convolution(): PipelineInfo["convolution"] {
    return this.#info.convolution;
  }
  get cudaGraphs(): boolean {
    return this.#info.cudaGraphs;
  }
  get defaultWidth(): number {
    return this.#info.defaultWidth;
  }
  get defaultHeight(): number {
    return this.#info.defaultHeight;
  }
  get vaeScaleFactor(): number {
    return this.#info.vaeScaleFactor;
  }

  /** GPU memory in use on this pipeline's device; undefined on the CPU. */
  gpuMemory(): GpuMemory | undefined {
    const ordinal = this.#cudaOrdinal();
    if (ordinal === undefined) return undefined;
    try {
      return loadNative().gpuMemory(ordinal);
    } catch (error) {
      throw fromNativeError(error);
    }
  }

  /** Start a new `gpuMemory().peakUsed` from what is in use now (no-op on the CPU). */
  resetGpuMemoryPeak(): void {
    const ordinal = this.#cudaOrdinal();
    if (ordinal === undefined) return;
    try {
      loadNative().resetGpuMemoryPeak(ordinal);
    } catch (error) {
      throw fromNativeError(error);
    }
  }

  #cudaOrdinal(): number | undefined {
    const match = /^cuda:(\d+)$/.exec(this.#info.device);
    return match ? Number(match[1]) : undefined;
  }

  /**
   * Let queued calls finish, then free the model (GPU memory included) and end its thread.
   * Later calls reject with code ERR_CANDLEWICK_DISPOSED. Also `await using pipe = ...`.
   */
  async dispose(): Promise<void> {
    await this.#native.dispose();
  }

  async [Symbol.asyncDispose ?? Symbol.for("Symbol.asyncDispose")](): Promise<void> {
    await this.dispose();
  }

  /**
   * Generate images from text (or, with `image`, from an image; with `maskImage` too, inpaint
   * it): `prompt.length x numImagesPerPrompt` of them. Calls on one pipeline
   * queue and run one at a time; the pipeline stays usable after errors and cancellation.
   * Rejects with a CandlewickError (ERR_CANDLEWICK_INVALID_OPTION for bad options, before any work;
   * name "AbortError" and code ERR_CANDLEWICK_CANCELLED when `signal` aborts).
   */
  async generate(options: GenerateOptions): Promise<GeneratedImage[]> {
    const { images, seeds, timings, settings } = await this.#run(options, false);
    const frozen = Object.freeze({ ...timings });
    const { strength, task, ...rest } = settings;
    // Unset optional settings (clipSkip, SDXL's sizes) are left out rather than null.
    const present = Object.fromEntries(Object.entries(rest).filter(([, v]) => v != null));
    const resolved: ResolvedSettings = Object.freeze({
      ...(present as Omit<ResolvedSettings, "schedulerConfig" | "task" | "strength">),
      schedulerConfig: Object.freeze(camelKeys(settings.schedulerConfig)),
      task: task as ResolvedSettings["task"],
      ...(strength == null ? {} : { strength }),
    });
    return images.map((image, i) => {
      const data = new Uint8Array(image.data.buffer, image.data.byteOffset, image.data.byteLength);
      return new GeneratedImage(image.width, image.height, data, imageSeed(seeds, i, images.length), frozen, resolved);
    });
  }

  /**
   * Like `generate`, but returns the denoised latents instead of decoding them (diffusers'
   * `output_type="latent"`): NCHW f32, `shape` [images, channels, height / vaeScaleFactor, width / vaeScaleFactor].
   */
  async generateLatents(options: GenerateOptions): Promise<GeneratedLatents> {
    const { latents, seed, seeds } = await this.#run(options, true);
    if (!latents) throw new CandlewickError("the native module returned no latents", INTERNAL);
    const count = latents.shape[0] ?? 0;
    const perImage = Array.from({ length: count }, (_, i) => imageSeed(seeds, i, count));
    return { shape: latents.shape as [number, number, number, number], data: latents.data, seed, seeds: perImage };
  }

  /** One native call: progress, cancellation, warnings; resolves with the raw result. */
  async #run(options: GenerateOptions, outputLatents: boolean): Promise<RawGenerateResult> {
    const { raw, onProgress, signal, onWarning, image, maskImage } = checkGenerateOptions(options);
    if (signal?.aborted) throw abortError(signal.reason);
    raw.outputLatents = outputLatents;
    // Paths are read here; the core decodes the bytes (and checks their size from the header).
    if (image) raw.image = await readImage(image, "image");
    if (maskImage) raw.maskImage = await readImage(maskImage, "maskImage");
    if (signal?.aborted) throw abortError(signal.reason);

    return new Promise<RawGenerateResult>((resolvePromise, reject) => {
      let call: GenerateCall | undefined;
      let settled = false;
      const settle = (outcome: () => void) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener("abort", onAbort);
        outcome();
      };
      // Reject at once; the native call stops before its next denoising step.
      const onAbort = () => {
        call?.cancel();
        settle(() => reject(abortError(signal?.reason)));
      };
      const onEvent = (error: Error | null, event: RawGenerateEvent) => {
        if (settled) return;
        if (error) return settle(() => reject(fromNativeError(error)));
        if (event.progress && onProgress) {
          try {
            const { preview, ...progress } = event.progress;
            onProgress(preview ? { ...progress, preview: preview.map(({ width, height, data }) => ({ width, height, data })) } : progress);
          } catch (thrown) {
            // An exception in the caller's callback ends the call with that exception.
            call?.cancel();
            settle(() => reject(thrown));
          }
          return;
        }
        if (event.result) {
          const result = event.result;
          const warn = onWarning ?? ((message: string) => process.emitWarning(message, "CandlewickWarning"));
          try {
            result.warnings.forEach((w) => warn(w));
          } catch (thrown) {
            // As from onProgress: the caller's exception ends the call (this runs in a native
            // callback, where an exception would otherwise be uncaught and end the process).
            return settle(() => reject(thrown));
          }
          settle(() => resolvePromise(result));
        }
      };
      try {
        call = this.#native.generate(raw, onEvent);
      } catch (error) {
        return settle(() => reject(fromNativeError(error)));
      }
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * Generate many images: `inputs` is an array, an iterable or an async iterable of prompts or
   * `BatchInput`s (each with its own seed and settings). Inputs with the same size, steps, guidance
   * and scheduler are packed into GPU batches of up to `batchSize`; results come as each batch
   * finishes (not in input order), each with its input's `index`. Each image is the one its seed
   * makes alone. Stop with `options.signal` or by leaving the `for await` loop. A bad input stops
   * the reading: what was read before it is still made and yielded, then the iterator throws an
   * error naming it (`inputs[7]: Expected ...`).
   */
  generateBatch<I extends string | BatchInput>(
    inputs: Iterable<I> | AsyncIterable<I>,
    options: BatchOptions = {},
  ): AsyncGenerator<BatchResult<I>, void, undefined> {
    return generateBatch((o) => this.generate(o), inputs, options);
  }
}

/** Image i's seed, from the core's per-image seeds (never the call's seed in its place). */
function imageSeed(seeds: readonly bigint[], i: number, images: number): bigint {
  const seed = seeds[i];
  if (seed === undefined) throw new CandlewickError(`the native module returned ${seeds.length} seeds for ${images} images`, INTERNAL);
  return seed;
}

/** What `generateLatents` resolves to. */
export interface GeneratedLatents {
  /** [images, channels, height / vaeScaleFactor, width / vaeScaleFactor]. */
  shape: [number, number, number, number];
  /** NCHW, not divided by the VAE's scaling factor. */
  data: Float32Array;
  /** The call's seed (drawn at random when none was given). */
  seed: bigint;
  /** Each image's seed, as `GeneratedImage.seed`: generating with it alone makes that image's latents again. */
  seeds: bigint[];
}

/** diffusers' snake_case field names in JavaScript's camelCase (`beta_end` -> `betaEnd`). */
function camelKeys(fields: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(fields).map(([k, v]) => [k.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()), v]));
}
