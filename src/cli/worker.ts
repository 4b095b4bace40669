/** `candlewick worker --queue redis://... --out <dir>`: make the images of a BullMQ queue's jobs until SIGTERM or SIGINT. */

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import { device as checkDevice } from "../check-options.js";
import type { Device } from "../options.js";
import { DEFAULT_QUEUE_NAME } from "../queue/connection.js";
import { integerIn } from "../validate.js";
import { COMMON_FLAGS, COMMON_HELP, integer, loadOptionsFrom, parseFlags } from "./flags.js";
import { reportError } from "./generate.js";
import { loadQueueModule } from "./queue-module.js";
import { DEFAULT_MODEL } from "./model.js";
import { onSecondSignal, untilSignal } from "./signals.js";
import { UsageError } from "./usage.js";

export const WORKER_HELP = `Usage: candlewick worker --queue <redis://host:port> --out <dir> [options]

Take jobs from a BullMQ queue ("candlewick enqueue" adds them), pack compatible ones into GPU
batches and write each image as <dir>/<jobId>.png (its parameters in text chunks) with its manifest
line <dir>/<jobId>.json, atomically. Run any number of workers, on any hosts, with the same --out
folder (a shared file system). A bad job fails at once with its reason; other errors retry with
backoff. SIGTERM or Ctrl-C finishes the batch in hand, then stops; a killed worker's jobs go back
to the queue after the stall interval.

Options:
  --queue <url>             Redis URL, redis://[user:password@]host[:port][/db] (required)
  --out, -o <dir>           Output folder, created if missing (required)
  --queue-name <name>       BullMQ queue name (default: ${DEFAULT_QUEUE_NAME})
${COMMON_HELP.model}
  --batch-size <n>          The most images in one GPU batch, 1-64 (default: 4)
  --batch-window <ms>       How long a job waits for others to share its batch (default: 50)
  --devices <list>          A pool: one pipeline per device, comma-separated (cuda:0,cuda:1) or "all"
  --stall-interval <ms>     How soon a dead worker's jobs go back to the queue (default: 30000)
${COMMON_HELP.device}

Example:
  candlewick worker --queue redis://127.0.0.1:6379 --model ./stable-diffusion-v1-5 --out renders/
`;

const OPTIONS = {
  model: COMMON_FLAGS.model,
  config: COMMON_FLAGS.config,
  vae: COMMON_FLAGS.vae,
  lora: COMMON_FLAGS.lora,
  revision: COMMON_FLAGS.revision,
  variant: COMMON_FLAGS.variant,
  device: COMMON_FLAGS.device,
  dtype: COMMON_FLAGS.dtype,
  threads: COMMON_FLAGS.threads,
  fp8: COMMON_FLAGS.fp8,
  quiet: COMMON_FLAGS.quiet,
  help: COMMON_FLAGS.help,
  queue: { type: "string" },
  "queue-name": { type: "string" },
  out: { type: "string", short: "o" },
  "batch-size": { type: "string" },
  "batch-window": { type: "string" },
  devices: { type: "string" },
  "stall-interval": { type: "string" },
} as const;

export async function workerCommand(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseFlags(args, OPTIONS, "worker");
  if (values.help) {
    process.stdout.write(WORKER_HELP);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`, "worker");
  if (values.queue === undefined) throw new UsageError("missing --queue <redis://host:port>", "worker");
  if (values.out === undefined) throw new UsageError("missing --out <dir>", "worker");
  const quiet = values.quiet === true;
  const say = (text: string) => quiet || process.stderr.write(`${text}\n`);
  let settings;
  try {
    let devices: Device[] | "all" | undefined;
    if (values.devices !== undefined) {
      if (values.device !== undefined) throw new CandlewickError("Expected --device or --devices, not both, but received both", INVALID_OPTION);
      devices = values.devices === "all" ? "all" : values.devices.split(",").map((d, i) => checkDevice(d.trim(), `--devices[${i}]`));
    }
    const stall = values["stall-interval"] === undefined ? undefined : integerIn(integer(values["stall-interval"]), "--stall-interval", 1000, 3_600_000);
    settings = {
      queue: values.queue,
      out: values.out,
      model: values.model ?? DEFAULT_MODEL,
      modelName: values.model ?? "shapes-sd",
      load: { ...loadOptionsFrom(values as Parameters<typeof loadOptionsFrom>[0]), ...(devices ? { devices } : {}) },
      ...(values["queue-name"] !== undefined ? { queueName: values["queue-name"] } : {}),
      ...(values["batch-size"] !== undefined ? { batchSize: integerIn(integer(values["batch-size"]), "--batch-size", 1, 64) } : {}),
      ...(values["batch-window"] !== undefined ? { batchWindowMs: integerIn(integer(values["batch-window"]), "--batch-window", 0, 60_000) } : {}),
      // The lock is renewed at half its length; a dead worker's jobs are free once it lapses and the stall check runs.
      ...(stall !== undefined ? { stalledIntervalMs: stall, lockDurationMs: Math.max(1000, stall) } : {}),
    };
  } catch (error) {
    if (error instanceof CandlewickError && error.code === INVALID_OPTION) throw new UsageError(error.message, "worker");
    throw error;
  }
  try {
    say(`Loading ${settings.model}`);
    const { QueueWorker } = await loadQueueModule("worker");
    const worker = await QueueWorker.start(settings);
    worker.worker.on("completed", (job) => process.stdout.write(`${job.returnvalue.file}\n`));
    worker.worker.on("failed", (job, error) => say(`job ${job?.id ?? "?"} failed: ${error.message}`));
    say(`Waiting for jobs on ${values.queue} (${values["queue-name"] ?? DEFAULT_QUEUE_NAME}), writing to ${values.out}`);
    await untilSignal();
    say("Finishing the batch in hand, then stopping (signal again to stop at once)");
    onSecondSignal(() => say("Stopping at once: the jobs in hand go back to the queue after the stall interval"));
    await worker.close();
    return 0;
  } catch (error) {
    if (error instanceof CandlewickError) return reportError(error);
    process.stderr.write(`candlewick: ${(error as Error).message}\n`);
    return 1;
  }
}
