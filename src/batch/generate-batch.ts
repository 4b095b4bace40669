/**
 * Batch generation: many inputs (an array, an iterable or an async iterable), packed into GPU
 * batches of inputs with the same settings, results yielded as each batch finishes, each tied to
 * its input by `index`. Every image has its own seed (the core's per-image `seeds`), so an image
 * is the same whether it was made in a batch or alone.
 *
 * Two GPU batches are kept queued on each pipeline so that it never waits for JavaScript; a group
 * that is not full runs as soon as a pipeline would otherwise idle (the source is slow, or over).
 */

import { abortError, CandlewickError, type AbortSignalLike } from "../errors.js";
import type { GeneratedImage } from "../image.js";
import { MAX_IMAGES_PER_CALL, type GenerateOptions, type GenerateProgress } from "../options.js";
import { checkOptionsObject, integerIn, invalid } from "../validate.js";
import { checkDefaults, checkInput, type BatchDefaults, type BatchInput, type CheckedInput } from "./inputs.js";

/** How a batch runs. */
export interface BatchOptions {
  /** Settings for inputs that do not give their own. Default: none (the library's defaults). */
  defaults?: BatchDefaults;
  /** The most images in one GPU batch (one native call). Default 4. */
  batchSize?: number;
  /** Stops the batch: calls in progress end before their next step and the iterator throws an AbortError. Default: none. */
  signal?: AbortSignalLike;
  /** Called after every denoising step of a GPU batch, with the indices of the inputs in it. Default: none. */
  onProgress?: (progress: BatchProgress) => void;
  /** Receives warnings (a prompt cut to 77 tokens, ...). Default: `process.emitWarning`. */
  onWarning?: (message: string) => void;
}

/** Where one GPU batch stands. */
export interface BatchProgress extends GenerateProgress {
  /** The inputs in this GPU batch (their places in the stream, from 0). */
  indices: number[];
}

/** One finished image and the input that asked for it. */
export interface BatchResult<I> {
  /** The input's place in the stream, from 0. */
  index: number;
  /** The input itself, as given. */
  input: I;
  /** The image; `image.seed` is its seed (drawn at random when the input gave none). */
  image: GeneratedImage;
}

export const DEFAULT_BATCH_SIZE = 4;
/** A GPU batch is one generate call. */
const MAX_BATCH_SIZE = MAX_IMAGES_PER_CALL;
/** Inputs read ahead of the GPU, in batches. */
const READ_AHEAD = 4;

type Generate = (options: GenerateOptions) => Promise<GeneratedImage[]>;

interface Pending<I> {
  checked: CheckedInput;
  input: I;
}

interface Run<I> {
  items: Pending<I>[];
  controller: AbortController;
  /** Settles (never rejects) with the images, or with what the call rejected with, as it was. */
  done: Promise<{ images: GeneratedImage[] } | { error: unknown }>;
}

const NOT_READY = Symbol("not ready");

/**
 * The batch engine behind `pipe.generateBatch` and `pool.generateBatch`: `inFlight` GPU batches
 * are kept queued (2 per pipeline).
 */
export async function* generateBatch<I extends string | BatchInput>(
  generate: Generate,
  inputs: Iterable<I> | AsyncIterable<I>,
  options: BatchOptions = {},
  inFlight = 2,
): AsyncGenerator<BatchResult<I>, void, undefined> {
  const o = checkOptionsObject(options, "batch options", ["defaults", "batchSize", "signal", "onProgress", "onWarning"]) as BatchOptions;
  const batchSize = o.batchSize === undefined ? DEFAULT_BATCH_SIZE : integerIn(o.batchSize, "batchSize", 1, MAX_BATCH_SIZE);
  const defaults = checkDefaults(o.defaults);
  const { signal } = o;
  const aborted = new Promise<string>((wake) => signal?.addEventListener("abort", () => wake("abort"), { once: true }));
  const source = iterate(inputs);
  const groups = new Map<string, Pending<I>[]>();
  const running: Run<I>[] = [];
  let buffered = 0;
  let read = 0;
  let exhausted = false;
  let reading: Promise<IteratorResult<I>> | undefined;
  /** A bad input stops the reading; what was read before it still runs, then this is thrown. */
  let badInput: unknown;

  const hasFullGroup = () => [...groups.values()].some((g) => g.length >= batchSize);
  const takeGroup = (partialOk: boolean): Pending<I>[] | undefined => {
    for (const [key, group] of groups) {
      if (group.length < batchSize && !partialOk) continue;
      const taken = group.splice(0, batchSize);
      if (group.length === 0) groups.delete(key);
      buffered -= taken.length;
      return taken;
    }
    return undefined;
  };
  const start = (items: Pending<I>[]): Run<I> => {
    const controller = new AbortController();
    const stop = () => controller.abort(signal?.reason);
    signal?.addEventListener("abort", stop, { once: true });
    const indices = items.map((p) => p.checked.index);
    const call: GenerateOptions = {
      ...items[0]!.checked.shared,
      prompt: items.map((p) => p.checked.prompt),
      negativePrompt: items.map((p) => p.checked.negativePrompt),
      seeds: items.map((p) => p.checked.seed),
      signal: controller.signal,
      ...(o.onProgress ? { onProgress: (p: GenerateProgress) => o.onProgress!({ ...p, indices }) } : {}),
      ...(o.onWarning ? { onWarning: o.onWarning } : {}),
    };
    const done = generate(call).then(
      (images) => ({ images }),
      (error: unknown) => ({ error }),
    ).finally(() => signal?.removeEventListener("abort", stop));
    return { items, controller, done };
  };

  try {
    for (;;) {
      if (signal?.aborted) throw abortError(signal.reason);
      // 1. Take in what the source has ready.
      while (!exhausted && buffered < READ_AHEAD * batchSize && !hasFullGroup()) {
        reading ??= source.next();
        const result = await readyOrNot(reading);
        if (result === NOT_READY) break;
        reading = undefined;
        if (result.done) {
          exhausted = true;
          break;
        }
        try {
          const checked = checkInput(result.value, read, defaults);
          const group = groups.get(checked.key) ?? [];
          group.push({ checked, input: result.value });
          groups.set(checked.key, group);
          buffered++;
          read++;
        } catch (error) {
          badInput = error;
          exhausted = true;
        }
      }
      // 2. Keep two GPU batches queued per pipeline: full ones first; one that is not full when a pipeline would idle.
      while (running.length < inFlight) {
        const idle = exhausted || (running.length < inFlight / 2 && (reading !== undefined || buffered >= READ_AHEAD * batchSize));
        const items = takeGroup(idle);
        if (!items) break;
        running.push(start(items));
      }
      if (running.length === 0) {
        if (exhausted) break;
        if (reading) await Promise.race([reading, aborted]);
        continue;
      }
      // 3. Wait for a GPU batch (the oldest when several are done), or for the source while there is
      // room to read ahead (and a pipeline without its two batches: read on to fill one).
      if (!exhausted && running.length < inFlight && buffered < READ_AHEAD * batchSize) reading ??= source.next();
      const wake: Promise<number>[] = running.map((run, i) => run.done.then(() => i));
      if (reading && buffered < READ_AHEAD * batchSize) wake.push(reading.then(() => -1, () => -1));
      const which = await Promise.race(wake);
      if (which < 0) continue;
      const first = running.splice(which, 1)[0]!;
      const outcome = await first.done;
      if ("error" in outcome) throw namingInputs(outcome.error, first.items);
      for (const [i, item] of first.items.entries()) yield { index: item.checked.index, input: item.input, image: outcome.images[i]! };
    }
    if (badInput !== undefined) throw badInput;
  } finally {
    for (const run of running) run.controller.abort();
    if (!exhausted) source.return?.()?.catch(() => undefined);
  }
}

/** A pending read, or NOT_READY when it has not settled by the next turn of the event loop. */
function readyOrNot<T>(pending: Promise<T>): Promise<T | typeof NOT_READY> {
  return Promise.race([pending, new Promise<typeof NOT_READY>((wake) => setImmediate(() => wake(NOT_READY)))]);
}

function iterate<I>(inputs: Iterable<I> | AsyncIterable<I>): AsyncIterator<I> {
  if (typeof inputs === "object" && inputs !== null) {
    if (Symbol.asyncIterator in inputs) return inputs[Symbol.asyncIterator]();
    if (Symbol.iterator in inputs) {
      const it = inputs[Symbol.iterator]();
      return {
        next: async () => it.next(),
        return: async () => it.return?.() ?? { done: true, value: undefined },
      };
    }
  }
  throw invalid("array, iterable or async iterable of inputs", "inputs", inputs);
}

/** An error of one GPU batch, naming its inputs (an abort, or what a callback threw, passes through as it is). */
function namingInputs(error: unknown, items: Pending<unknown>[]): unknown {
  if (!(error instanceof CandlewickError) || error.name === "AbortError") return error;
  const which = items.map((p) => p.checked.index).join(", ");
  return new CandlewickError(`${items.length === 1 ? "input" : "inputs"} ${which}: ${error.message}`, error.code, { cause: error });
}
