/**
 * `PipelinePool`: one model loaded once per device (`devices: ["cuda:0", "cuda:1"]` or "all"), one
 * pipeline per device sharing nothing but the host. `generate` runs each call on the pipeline with
 * the fewest calls in flight; `generateBatch` keeps two GPU batches queued on every pipeline. Each
 * image has its own seed, so an image is the same whichever device made it (within the devices'
 * numeric parity: bit-equal across identical GPUs and across CPU pipelines).
 */

import { CandlewickError, DEVICE, fromNativeError, INVALID_OPTION } from "./errors.js";
import { loadNative } from "./binding.js";
import { generateBatch, type BatchOptions, type BatchResult } from "./batch/generate-batch.js";
import type { BatchInput } from "./batch/inputs.js";
import type { GeneratedImage } from "./image.js";
import { device as checkDevice } from "./check-options.js";
import type { Device, GenerateOptions, LoadOptions, LoraInput } from "./options.js";
import { StableDiffusionPipeline } from "./pipeline.js";
import { describe, invalid } from "./validate.js";

/** How `PipelinePool.fromPretrained` loads: the pipeline's load options, and the devices instead of `device`. */
export interface PoolOptions extends Omit<LoadOptions, "device"> {
  /**
   * One pipeline per entry ("cuda:0", "cuda:1", ...; "cpu" entries too, e.g. for tests), or "all":
   * every CUDA GPU this process sees. Required.
   */
  devices: readonly Device[] | "all";
}

/** The most pipelines in one pool. */
export const MAX_POOL_SIZE = 64;

export class PipelinePool {
  readonly pipelines: readonly StableDiffusionPipeline[];
  readonly #inFlight: number[];

  private constructor(pipelines: StableDiffusionPipeline[]) {
    this.pipelines = Object.freeze(pipelines);
    this.#inFlight = pipelines.map(() => 0);
  }

  /**
   * Load `model` on every device of `options.devices`, at once (a failure on one disposes the
   * others and rejects with that device's error). A hub id is downloaded once.
   */
  static async fromPretrained(model: string, options: PoolOptions): Promise<PipelinePool> {
    const { devices: given, ...load } = (options ?? {}) as PoolOptions;
    if ("device" in load) throw new CandlewickError('Expected devices (not device) in pool options but received device', INVALID_OPTION);
    const devices = resolveDevices(given);
    const settled = await Promise.allSettled(devices.map((device) => StableDiffusionPipeline.fromPretrained(model, { ...load, device })));
    const loaded = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
    const failed = settled.findIndex((s) => s.status === "rejected");
    if (failed >= 0) {
      await Promise.all(loaded.map((p) => p.dispose()));
      const reason = (settled[failed] as PromiseRejectedResult).reason as unknown;
      throw reason instanceof CandlewickError ? new CandlewickError(`devices[${failed}] (${devices[failed]}): ${reason.message}`, reason.code, { cause: reason }) : reason;
    }
    return new PipelinePool(loaded);
  }

  /** A pool over pipelines already loaded (the pool does not copy them; `dispose` disposes them). */
  static of(pipelines: readonly StableDiffusionPipeline[]): PipelinePool {
    if (!Array.isArray(pipelines) || pipelines.length === 0 || !pipelines.every((p) => p instanceof StableDiffusionPipeline)) {
      throw new CandlewickError(`Expected non-empty array of pipelines for pipelines but received ${describe(pipelines)}`, INVALID_OPTION);
    }
    return new PipelinePool([...pipelines]);
  }

  /** Pipelines in the pool. */
  get size(): number {
    return this.pipelines.length;
  }
  /** Each pipeline's device ("cuda:0", "cpu", ...). */
  get devices(): string[] {
    return this.pipelines.map((p) => p.device);
  }
  get modelDir(): string {
    return this.pipelines[0]!.modelDir;
  }
  get defaultWidth(): number {
    return this.pipelines[0]!.defaultWidth;
  }
  get defaultHeight(): number {
    return this.pipelines[0]!.defaultHeight;
  }

  /** `generate` on the pipeline with the fewest calls in flight (the first such one). */
  async generate(options: GenerateOptions): Promise<GeneratedImage[]> {
    let best = 0;
    for (let i = 1; i < this.#inFlight.length; i++) if (this.#inFlight[i]! < this.#inFlight[best]!) best = i;
    this.#inFlight[best]!++;
    try {
      return await this.pipelines[best]!.generate(options);
    } finally {
      this.#inFlight[best]!--;
    }
  }

  /** `generateBatch` over every pipeline: two GPU batches queued on each. */
  generateBatch<I extends string | BatchInput>(
    inputs: Iterable<I> | AsyncIterable<I>,
    options: BatchOptions = {},
  ): AsyncGenerator<BatchResult<I>, void, undefined> {
    return generateBatch((o) => this.generate(o), inputs, options, 2 * this.size);
  }

  /**
   * `setLoras` on every pipeline (each after its queued calls). If one rejects, the others may
   * have changed: call it again, or with `[]`, to make them agree.
   */
  async setLoras(loras: LoraInput[]): Promise<void> {
    await Promise.all(this.pipelines.map((p) => p.setLoras(loras)));
  }

  /** Dispose every pipeline. */
  async dispose(): Promise<void> {
    await Promise.all(this.pipelines.map((p) => p.dispose()));
  }

  async [Symbol.asyncDispose ?? Symbol.for("Symbol.asyncDispose")](): Promise<void> {
    await this.dispose();
  }
}

/** `devices` as a list: each checked as a device; "all" as every CUDA GPU (an error when there is none). */
function resolveDevices(value: unknown): Device[] {
  if (value === "all") {
    let count = 0;
    try {
      count = loadNative().cudaDeviceCount();
    } catch (error) {
      throw fromNativeError(error);
    }
    if (count === 0) {
      throw new CandlewickError('devices "all" found no CUDA GPU (a CPU build, no driver, or CUDA_VISIBLE_DEVICES empty); list devices instead, e.g. ["cpu"]', DEVICE);
    }
    return Array.from({ length: count }, (_, i) => `cuda:${i}` as Device);
  }
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_POOL_SIZE) {
    throw new CandlewickError(`Expected "all" or array of 1 to ${MAX_POOL_SIZE} devices for devices but received ${describe(value)}`, INVALID_OPTION);
  }
  return value.map((d: unknown, i) => checkDevice(d, `devices[${i}]`));
}

/**
 * `model` as a pipeline or pool: one the caller loaded (`owned` false: the caller disposes it), or a
 * folder / hub id loaded now with `load` (a pool when `load.devices` is given; `owned` true).
 */
export async function openModel(
  model: unknown, load: (LoadOptions & { devices?: PoolOptions["devices"] }) | undefined,
): Promise<{ pipeline: StableDiffusionPipeline | PipelinePool; owned: boolean }> {
  if (model instanceof StableDiffusionPipeline || model instanceof PipelinePool) return { pipeline: model, owned: false };
  if (typeof model === "string" && model.length > 0) {
    const { devices, ...rest } = load ?? {};
    const pipeline = devices === undefined
      ? await StableDiffusionPipeline.fromPretrained(model, rest)
      : await PipelinePool.fromPretrained(model, { ...rest, devices });
    return { pipeline, owned: true };
  }
  throw invalid("pipeline, pool, model folder or hub id", "model", model);
}
