/**
 * Producing: inputs (or a prompts file's lines) become BullMQ jobs, one image each, every input
 * checked first with the library's messages (a bad one adds nothing). Each job's id comes from the
 * input (its "id", else its line, else its place in the list), so enqueueing the same file twice
 * adds nothing new (BullMQ keeps one job per id), and the worker names its files after it.
 */

import { Queue, type ConnectionOptions } from "bullmq";

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import { checkInput, type BatchDefaults, type BatchInput } from "../batch/inputs.js";
import { readPromptsFile } from "../batch/prompts-file.js";
import { checkOptionsObject, integerIn, invalid } from "../validate.js";
import { connectionFrom, queueName, type JobData } from "./connection.js";

/** One input to enqueue: a BatchInput, with an optional id (the job's id and file name). */
export type QueueInput = BatchInput & { id?: string | number };

/** How inputs are enqueued. */
export interface EnqueueOptions {
  /** The Redis URL ("redis://host:6379"). Required. */
  queue: string;
  /** The BullMQ queue's name. Default "candlewick". */
  queueName?: string;
  /** Tries per job before it fails (transient errors retry; bad inputs fail at once). Default 5. */
  attempts?: number;
  /** The first retry's delay in ms, doubling each time. Default 1000. */
  backoffMs?: number;
}

/** What was enqueued. */
export interface EnqueueResult {
  /** The jobs' ids, in input order. */
  jobIds: string[];
}

const KEYS = ["queue", "queueName", "attempts", "backoffMs"] as const;

/** A job id: "id-<id>" for an input with an id, else "<prefix>-<n>" (BullMQ refuses plain integers and colons). */
export function jobIdOf(id: string | number | undefined, prefix: string, n: number): string {
  if (id === undefined) return `${prefix}-${n}`;
  const text = String(id);
  if (!/^[A-Za-z0-9_.-]{1,200}$/.test(text)) throw invalid("id of 1-200 letters, digits, _ . or - (it names the output files)", "id", id);
  return `id-${text}`;
}

/** Check `inputs` and add one job per input; nothing is added when one is bad. */
export async function enqueue(inputs: Iterable<QueueInput>, options: EnqueueOptions): Promise<EnqueueResult> {
  const o = checkOptionsObject(options, "enqueue options", KEYS) as Partial<EnqueueOptions>;
  const jobs = [...inputs].map((value, i) => {
    const { id, ...input } = (value ?? {}) as QueueInput;
    const checked = checkInput(input, i, {});
    const data: JobData = { input: { ...checked.shared, prompt: checked.prompt, negativePrompt: checked.negativePrompt, seed: checked.seed.toString() }, ...(id !== undefined ? { id } : {}) };
    return { id: jobIdOf(id, "input", i), data };
  });
  return addJobs(jobs, o);
}

/**
 * Check every line of a prompts file (as `candlewick batch` reads it: `defaults` under each line,
 * a line without a seed gets baseSeed + line, else a random seed fixed now) and add one job per line.
 */
export async function enqueueFile(path: string, options: EnqueueOptions & { defaults?: BatchDefaults; baseSeed?: bigint }): Promise<EnqueueResult> {
  const { defaults, baseSeed, ...rest } = options;
  const lines = await readPromptsFile(path, defaults ?? {}, baseSeed);
  const jobs = lines.map((l) => ({
    id: jobIdOf(l.id, "line", l.line),
    data: { input: { ...l.input, seed: String(l.input.seed) }, line: l.line, ...(l.id !== undefined ? { id: l.id } : {}) } as JobData,
  }));
  const ids = new Set<string>();
  for (const [i, job] of jobs.entries()) {
    if (ids.has(job.id)) throw new CandlewickError(`${path}:${lines[i]!.line}: id ${JSON.stringify(lines[i]!.id)} is used by an earlier line`, INVALID_OPTION);
    ids.add(job.id);
  }
  return addJobs(jobs, rest);
}

async function addJobs(jobs: { id: string; data: JobData }[], o: Partial<EnqueueOptions>): Promise<EnqueueResult> {
  const connection = connectionFrom(o.queue);
  const name = queueName(o.queueName);
  const attempts = o.attempts === undefined ? 5 : integerIn(o.attempts, "attempts", 1, 1000);
  const backoffMs = o.backoffMs === undefined ? 1000 : integerIn(o.backoffMs, "backoffMs", 0, 3_600_000);
  // A producer should fail rather than wait forever for a Redis that is not there.
  const queue = new Queue<JobData, unknown, string>(name, { connection: { ...connection, maxRetriesPerRequest: 20 } as unknown as ConnectionOptions });
  try {
    const opts = { attempts, backoff: { type: "exponential", delay: backoffMs }, removeOnComplete: false, removeOnFail: false };
    for (let at = 0; at < jobs.length; at += 1000) {
      await queue.addBulk(jobs.slice(at, at + 1000).map((j) => ({ name: "txt2img", data: j.data, opts: { ...opts, jobId: j.id } })));
    }
    return { jobIds: jobs.map((j) => j.id) };
  } finally {
    await queue.close();
  }
}
