/**
 * Dynamic batching for the server: requests wait in one bounded queue; requests with the same
 * settings (size, steps, guidance, scheduler) are packed into one generate call of up to
 * `maxBatchSize` images, each image with its own seed (so it is the image its seed makes alone).
 *
 * The window: a request waits at most `windowMs` after it arrives for companions, then leaves with
 * the next free slot (at once when enough compatible images are queued to fill a batch). While
 * every slot is busy, requests gather by themselves and leave as soon as a slot frees. A request whose client goes away is dropped from the queue; a batch whose requests have all
 * gone away is cancelled before its next step.
 */

import { abortError, CandlewickError, type AbortSignalLike } from "../errors.js";
import type { GeneratedImage } from "../image.js";
import type { GenerateOptions, GenerateProgress, PreviewImage } from "../options.js";

/** One image of a request: its prompts and seed. */
export interface BatchImage {
  prompt: string;
  negativePrompt: string;
  seed: bigint;
}

/** What a request asks for. `shared` settings are the same for every image; `key` says which requests may share a call. */
export interface BatchRequest {
  images: BatchImage[];
  shared: Omit<GenerateOptions, "prompt" | "negativePrompt" | "seed" | "seeds" | "signal" | "onProgress" | "onWarning">;
  key: string;
  /** Aborting it drops the request (from the queue, or from its batch). */
  signal?: AbortSignalLike;
  /** Called after each denoising step of the batch it is in. */
  onProgress?: (progress: GenerateProgress) => void;
}

/** How the batcher runs. */
export interface BatcherOptions {
  /** Makes one batch (a pipeline's or a pool's `generate`). */
  generate: (options: GenerateOptions) => Promise<GeneratedImage[]>;
  /** The most images in one call. */
  maxBatchSize: number;
  /** How long a request waits for companions when a slot is free, in milliseconds. */
  windowMs: number;
  /** The most images waiting (not yet in a running batch); more are refused with QueueFullError. */
  maxQueue: number;
  /** Calls running at once (1 per pipeline; the pool's size for a pool). */
  concurrency: number;
  /** Ask each call for a preview of its latents every this many steps (the batch's first image is kept for `state()`). Default: none. */
  previewEvery?: number;
}

/** The queue is full: answer 503 with `retryAfter` seconds. */
export class QueueFullError extends CandlewickError {
  constructor(readonly retryAfter: number, queued: number) {
    super(`the queue is full (${queued} images waiting); retry in ${retryAfter} s`, "ERR_CANDLEWICK_QUEUE_FULL");
  }
}

/** Where the batcher stands (for /sdapi/v1/progress and /health). */
export interface BatcherState {
  /** Images waiting. */
  queued: number;
  /** Requests waiting. */
  queuedRequests: number;
  /** Batches running, with their last step. */
  running: { images: number; step: number; totalSteps: number; startedAt: number; preview: PreviewImage | undefined }[];
  /** Mean seconds per finished batch (0 before the first). */
  secondsPerBatch: number;
}

interface Pending {
  request: BatchRequest;
  resolve: (images: GeneratedImage[]) => void;
  reject: (error: unknown) => void;
  gone: boolean;
  queuedAt: number;
  onAbort?: () => void;
}

interface Running {
  members: Pending[];
  controller: AbortController;
  images: number;
  step: number;
  totalSteps: number;
  startedAt: number;
  /** The latest preview of the batch's first image. */
  preview: PreviewImage | undefined;
}

export class DynamicBatcher {
  readonly #o: BatcherOptions;
  readonly #queue: Pending[] = [];
  readonly #running = new Set<Running>();
  #queuedImages = 0;
  #timer: NodeJS.Timeout | undefined;
  #finished = 0;
  #busySeconds = 0;
  #closed = false;

  constructor(options: BatcherOptions) {
    this.#o = options;
  }

  /** Queue a request; resolves with its images in order. Throws QueueFullError at once when full. */
  submit(request: BatchRequest): Promise<GeneratedImage[]> {
    if (this.#closed) return Promise.reject(new CandlewickError("the server is closing", "ERR_CANDLEWICK_DISPOSED"));
    if (request.signal?.aborted) return Promise.reject(abortError(request.signal.reason, "The request was cancelled"));
    const size = request.images.length;
    if (this.#queuedImages + size > this.#o.maxQueue) throw new QueueFullError(this.retryAfter(), this.#queuedImages);
    return new Promise<GeneratedImage[]>((resolve, reject) => {
      const pending: Pending = { request, resolve, reject, gone: false, queuedAt: performance.now() };
      pending.onAbort = () => this.#cancel(pending);
      request.signal?.addEventListener("abort", pending.onAbort, { once: true });
      this.#queue.push(pending);
      this.#queuedImages += size;
      this.#schedule();
    });
  }

  /** Seconds a refused client should wait: the queue's batches at the mean batch time, over the slots. */
  retryAfter(): number {
    const batches = Math.ceil(this.#queuedImages / this.#o.maxBatchSize) + this.#running.size;
    const perBatch = this.#finished > 0 ? this.#busySeconds / this.#finished : 1;
    return Math.max(1, Math.ceil((batches * perBatch) / this.#o.concurrency));
  }

  state(): BatcherState {
    return {
      queued: this.#queuedImages,
      queuedRequests: this.#queue.length,
      running: [...this.#running].map(({ images, step, totalSteps, startedAt, preview }) => ({ images, step, totalSteps, startedAt, preview })),
      secondsPerBatch: this.#finished > 0 ? this.#busySeconds / this.#finished : 0,
    };
  }

  /** Stop the running batches (A1111's interrupt): their requests reject with an AbortError. */
  interrupt(): number {
    for (const run of this.#running) run.controller.abort(new Error("interrupted"));
    return this.#running.size;
  }

  /** Refuse new requests, reject the queued ones, stop the running batches. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    for (const pending of this.#queue.splice(0)) this.#settle(pending, () => pending.reject(new CandlewickError("the server is closing", "ERR_CANDLEWICK_DISPOSED")));
    this.#queuedImages = 0;
    this.interrupt();
  }

  #cancel(pending: Pending): void {
    if (pending.gone) return;
    const at = this.#queue.indexOf(pending);
    if (at >= 0) {
      this.#queue.splice(at, 1);
      this.#queuedImages -= pending.request.images.length;
    }
    this.#settle(pending, () => pending.reject(abortError(pending.request.signal?.reason, "The request was cancelled")));
    // A batch nobody waits for any more stops before its next step.
    for (const run of this.#running) if (run.members.every((m) => m.gone)) run.controller.abort();
  }

  #settle(pending: Pending, outcome: () => void): void {
    if (pending.gone) return;
    pending.gone = true;
    if (pending.onAbort) pending.request.signal?.removeEventListener("abort", pending.onAbort);
    outcome();
  }

  /** Start what can start now; else wake when the oldest request's window ends. */
  #schedule(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#running.size < this.#o.concurrency && this.#queue.length > 0) {
      const first = this.#queue[0]!;
      const compatible = this.#queue.filter((p) => p.request.key === first.request.key).reduce((n, p) => n + p.request.images.length, 0);
      const waited = performance.now() - first.queuedAt;
      if (compatible < this.#o.maxBatchSize && waited < this.#o.windowMs) {
        this.#timer = setTimeout(() => this.#schedule(), this.#o.windowMs - waited);
        return;
      }
      this.#start(this.#take(first.request.key));
    }
  }

  /** The oldest requests with `key`, up to a batch (a request larger than a batch runs alone). */
  #take(key: string): Pending[] {
    const taken: Pending[] = [];
    let images = 0;
    for (let i = 0; i < this.#queue.length; ) {
      const p = this.#queue[i]!;
      const size = p.request.images.length;
      if (p.request.key === key && (taken.length === 0 || images + size <= this.#o.maxBatchSize)) {
        taken.push(p);
        images += size;
        this.#queue.splice(i, 1);
        this.#queuedImages -= size;
        if (images >= this.#o.maxBatchSize) break;
      } else {
        i++;
      }
    }
    return taken;
  }

  #start(members: Pending[]): void {
    const images = members.flatMap((m) => m.request.images);
    const controller = new AbortController();
    const run: Running = { members, controller, images: images.length, step: 0, totalSteps: 0, startedAt: Date.now(), preview: undefined };
    this.#running.add(run);
    const call: GenerateOptions = {
      ...members[0]!.request.shared,
      prompt: images.map((i) => i.prompt),
      negativePrompt: images.map((i) => i.negativePrompt),
      seeds: images.map((i) => i.seed),
      signal: controller.signal,
      ...(this.#o.previewEvery ? { previewEvery: this.#o.previewEvery } : {}),
      onProgress: (p: GenerateProgress) => {
        run.step = p.step;
        run.totalSteps = p.totalSteps;
        if (p.preview?.[0]) run.preview = p.preview[0];
        for (const m of members) if (!m.gone) m.request.onProgress?.(p);
      },
      onWarning: () => undefined,
    };
    const started = performance.now();
    this.#o.generate(call).then(
      (out) => {
        let at = 0;
        for (const m of members) {
          const mine = out.slice(at, at + m.request.images.length);
          at += m.request.images.length;
          this.#settle(m, () => m.resolve(mine));
        }
      },
      (error: unknown) => {
        for (const m of members) this.#settle(m, () => m.reject(error));
      },
    ).finally(() => {
      this.#running.delete(run);
      this.#finished++;
      this.#busySeconds += (performance.now() - started) / 1000;
      this.#schedule();
    });
  }
}
