/**
 * A queue worker: pulls jobs from a BullMQ queue, packs compatible ones into GPU batches (the
 * server's dynamic batcher, fed by BullMQ's `concurrency` = batch size x pipelines), and writes
 * each image as `<jobId>.png` (its parameters in text chunks) with its manifest line
 * `<jobId>.json` into an output folder the workers may share. Both files are written to a
 * temporary name unique to the writer and renamed into place, so a job delivered twice (a worker
 * killed after writing, Redis restarted before the completion reached it) leaves one file, the
 * same bytes either way (an image depends only on its job); a job whose files are there already is
 * completed without generating again.
 *
 * Failures: a bad input fails its job at once (BullMQ's UnrecoverableError, no retries) with the
 * library's message; anything else (out of memory, a lost device) is retried with the backoff the
 * job was enqueued with. A SIGKILLed worker's jobs go back to the queue after BullMQ's stall
 * interval (`stalledIntervalMs`); `close()` finishes the jobs in hand, then stops.
 */

import { createHash, randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { UnrecoverableError, Worker, type ConnectionOptions, type Job } from "bullmq";

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import type { GeneratedImage } from "../image.js";
import type { LoadOptions } from "../options.js";
import { StableDiffusionPipeline } from "../pipeline.js";
import { openModel, PipelinePool, type PoolOptions } from "../pool.js";
import { modelFiles } from "../cli/hashes.js";
import { imageParameters, pngText, resolvedOf, type ImageParameters } from "../cli/parameters.js";
import { writeOutput } from "../cli/output.js";
import { checkInput } from "../batch/inputs.js";
import { checkOptionsObject, integerIn, invalid } from "../validate.js";
import { DynamicBatcher, type BatchRequest } from "../server/batcher.js";
import { connectionFrom, queueName, type JobData } from "./connection.js";

/** How a worker runs. */
export interface QueueWorkerOptions {
  /** The Redis URL ("redis://host:6379"). Required. */
  queue: string;
  /** The BullMQ queue's name. Default "candlewick". */
  queueName?: string;
  /** A loaded pipeline or pool (not disposed by the worker), or a folder / hub id to load. Required. */
  model: StableDiffusionPipeline | PipelinePool | string;
  /** Load options when `model` is a string (`devices` makes a pool). Default: none. */
  load?: LoadOptions & { devices?: PoolOptions["devices"] };
  /** The output folder (created if missing), shared by the workers. Required. */
  out: string;
  /** The most images in one GPU batch. Default 4. */
  batchSize?: number;
  /** How long a job waits for compatible jobs to share its batch, in ms. Default 50. */
  batchWindowMs?: number;
  /** BullMQ's lock on a job in hand, renewed while it runs; a dead worker's jobs are free after it. Default 30000. */
  lockDurationMs?: number;
  /** How often BullMQ looks for jobs whose worker died. Default 30000. */
  stalledIntervalMs?: number;
  /** How often a job may be found stalled before it fails. Default 5. */
  maxStalledCount?: number;
  /** The model's name in PNG text chunks and manifest lines. Default: `model` when a string, else the pipeline's folder. */
  modelName?: string;
}

/** One job's manifest line (`<jobId>.json`): its parameters and where its image is. */
export interface JobRecord extends ImageParameters {
  jobId: string;
  /** The PNG, relative to the output folder. */
  file: string;
  line?: number;
  id?: string | number;
}

/** The events of BullMQ's Worker that a QueueWorker user listens to (typed here so that the declarations need neither BullMQ's nor Node's types). */
export interface QueueWorkerEvents {
  on(event: "completed", listener: (job: { id?: string; returnvalue: JobRecord }) => void): unknown;
  on(event: "failed", listener: (job: { id?: string; failedReason: string; attemptsMade: number } | undefined, error: Error) => void): unknown;
  on(event: "progress", listener: (job: { id?: string }, progress: unknown) => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
}

const KEYS = ["queue", "queueName", "model", "load", "out", "batchSize", "batchWindowMs", "lockDurationMs", "stalledIntervalMs", "maxStalledCount", "modelName"] as const;
/** Errors that no retry can mend. */
const PERMANENT = new Set([INVALID_OPTION]);

export class QueueWorker {
  readonly #worker: Worker<JobData, JobRecord>;
  readonly #batcher: DynamicBatcher;
  readonly #pipeline: StableDiffusionPipeline | PipelinePool;
  readonly #owned: boolean;
  #closing: Promise<void> | undefined;

  private constructor(pipeline: StableDiffusionPipeline | PipelinePool, owned: boolean, o: Settings) {
    this.#pipeline = pipeline;
    this.#owned = owned;
    const pipelines = pipeline instanceof PipelinePool ? pipeline.size : 1;
    this.#batcher = new DynamicBatcher({
      generate: (options) => pipeline.generate(options),
      maxBatchSize: o.batchSize,
      windowMs: o.batchWindowMs,
      maxQueue: o.batchSize * pipelines * 2,
      concurrency: pipelines,
    });
    this.#worker = new Worker<JobData, JobRecord>(o.queueName, (job) => this.#process(job, o), {
      connection: o.connection as ConnectionOptions,
      concurrency: o.batchSize * pipelines,
      lockDuration: o.lockDurationMs,
      stalledInterval: o.stalledIntervalMs,
      maxStalledCount: o.maxStalledCount,
    });
    // Without a listener an "error" event (Redis gone for a while) would end the process; BullMQ reconnects by itself.
    this.#worker.on("error", () => undefined);
  }

  /** BullMQ's worker, for its events ("completed", "failed", "progress", "error"). */
  get worker(): QueueWorkerEvents {
    return this.#worker as unknown as QueueWorkerEvents;
  }

  /** Check the options, load the model (unless given one) and start taking jobs. */
  static async start(options: QueueWorkerOptions): Promise<QueueWorker> {
    const o = checkOptionsObject(options, "worker options", KEYS) as Partial<QueueWorkerOptions>;
    const connection = connectionFrom(o.queue);
    if (typeof o.out !== "string" || o.out.length === 0) throw invalid("output folder", "out", o.out);
    const settings: Settings = {
      connection,
      queueName: queueName(o.queueName),
      out: o.out,
      batchSize: o.batchSize === undefined ? 4 : integerIn(o.batchSize, "batchSize", 1, 64),
      batchWindowMs: o.batchWindowMs === undefined ? 50 : integerIn(o.batchWindowMs, "batchWindowMs", 0, 60_000),
      lockDurationMs: o.lockDurationMs === undefined ? 30_000 : integerIn(o.lockDurationMs, "lockDurationMs", 1000, 3_600_000),
      stalledIntervalMs: o.stalledIntervalMs === undefined ? 30_000 : integerIn(o.stalledIntervalMs, "stalledIntervalMs", 1000, 3_600_000),
      maxStalledCount: o.maxStalledCount === undefined ? 5 : integerIn(o.maxStalledCount, "maxStalledCount", 0, 1000),
      modelName: "",
    };
    await writeOutput(settings.out, () => mkdir(settings.out, { recursive: true }));
    const { pipeline, owned } = await openModel(o.model, o.load);
    settings.modelName = o.modelName ?? (typeof o.model === "string" ? o.model : pipeline.modelDir);
    return new QueueWorker(pipeline, owned, settings);
  }

  /** Finish the jobs in hand (the current batch), take no more, and dispose the model when the worker loaded it. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#worker.close();
      this.#batcher.close();
      if (this.#owned) await this.#pipeline.dispose();
    })();
    return this.#closing;
  }

  async #process(job: Job<JobData, JobRecord>, o: Settings): Promise<JobRecord> {
    const jobId = job.id!;
    const png = join(o.out, `${jobId}.png`);
    const json = join(o.out, `${jobId}.json`);
    // Delivered again after its files were written (its completion was lost): done already.
    const done = await readFile(json, "utf8").then((t) => JSON.parse(t) as JobRecord, () => undefined);
    if (done) return done;
    let request: BatchRequest;
    try {
      request = requestOf(job.data, jobId);
    } catch (error) {
      throw new UnrecoverableError(error instanceof Error ? error.message : String(error));
    }
    let last = 0;
    request.onProgress = (p) => {
      // At most every 250 ms: a call to Redis per step per job would cost more than a tiny model's step.
      if (Date.now() - last < 250 && p.step < p.totalSteps) return;
      last = Date.now();
      job.updateProgress({ step: p.step, totalSteps: p.totalSteps }).catch(() => undefined);
    };
    let images: GeneratedImage[];
    try {
      images = await this.#batcher.submit(request);
    } catch (error) {
      if (error instanceof CandlewickError && PERMANENT.has(error.code)) throw new UnrecoverableError(error.message);
      throw error;
    }
    const image = images[0]!;
    const { input } = job.data;
    const pipe = this.#pipeline instanceof PipelinePool ? this.#pipeline.pipelines[0]! : this.#pipeline;
    const files = await modelFiles(pipe.modelDir, pipe.info.loras).catch(() => ({}));
    const parameters = imageParameters(request.shared, input.prompt, input.negativePrompt ?? "", image.seed, resolvedOf(image), o.modelName, files);
    const record: JobRecord = {
      jobId,
      file: `${jobId}.png`,
      ...(job.data.line !== undefined ? { line: job.data.line } : {}),
      ...(job.data.id !== undefined ? { id: job.data.id } : {}),
      ...parameters,
    };
    await writeAtomically(png, image.toPng({ text: pngText(parameters) }));
    await writeAtomically(json, `${JSON.stringify(record)}\n`);
    return record;
  }
}

type Settings = Required<Omit<QueueWorkerOptions, "queue" | "model" | "load">> & { connection: ReturnType<typeof connectionFrom> };

/**
 * A job's data as the batcher's request, checked with the library's messages. A job without a seed
 * (from a producer other than `enqueue`) gets one derived from its id, so that running it again
 * makes the same image.
 */
function requestOf(data: JobData, jobId: string): BatchRequest {
  if (typeof data !== "object" || data === null || typeof data.input !== "object" || data.input === null) {
    throw invalid("job data { input: { prompt, ... } }", "job data", data);
  }
  const { seed, ...input } = data.input;
  if (seed !== undefined && (typeof seed !== "string" || !/^\d{1,20}$/.test(seed))) throw invalid("decimal string", "input.seed", seed);
  const seedOf = seed !== undefined ? BigInt(seed) : createHash("sha256").update(jobId).digest().readBigUInt64LE(0);
  const checked = checkInput({ ...input, seed: seedOf }, 0, {}, "input");
  return {
    images: [{ prompt: checked.prompt, negativePrompt: checked.negativePrompt, seed: checked.seed }],
    shared: checked.shared,
    key: checked.key,
  };
}

/** Write `data` to a temporary name of this writer's own, then rename it over `path`. */
async function writeAtomically(path: string, data: Uint8Array | string): Promise<void> {
  const temporary = `${path}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
  try {
    await writeOutput(path, () => writeFile(temporary, data));
    await writeOutput(path, () => rename(temporary, path));
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}
