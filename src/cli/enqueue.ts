/** `candlewick enqueue <prompts.jsonl> --queue redis://...`: one BullMQ job per line, for `candlewick worker`s to make. */

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import type { BatchDefaults } from "../batch/inputs.js";
import { DEFAULT_QUEUE_NAME } from "../queue/connection.js";
import { count, integerIn } from "../validate.js";
import { COMMON_FLAGS, COMMON_HELP, integer, parseFlags, seedFrom, settingsFrom } from "./flags.js";
import { reportError } from "./generate.js";
import { loadQueueModule } from "./queue-module.js";
import { UsageError } from "./usage.js";

export const ENQUEUE_HELP = `Usage: candlewick enqueue <prompts.jsonl> --queue <redis://host:port> [options]

Check every line of a prompts file (as "candlewick batch" reads it) and add one job per line to a
BullMQ queue in Redis; "candlewick worker" processes on any number of hosts make the images. A job's
id is "id-<id>" for a line with an "id", else "line-<N>"; enqueueing a file again adds only the
jobs that are not in the queue yet. Lines without a seed get --seed + line number, else a random
seed fixed now, so a job makes the same image whichever worker runs it, however often.

Options:
  --queue <url>             Redis URL, redis://[user:password@]host[:port][/db] (required)
  --queue-name <name>       BullMQ queue name (default: ${DEFAULT_QUEUE_NAME})
  --attempts <n>            Tries per job for transient errors (default: 5; bad inputs fail at once)
${COMMON_HELP.settings}
  --seed <n>                Base seed: line N without its own seed gets n + N (default: random seeds)

Example:
  candlewick enqueue prompts.jsonl --queue redis://127.0.0.1:6379 --steps 30 --seed 1
`;

const OPTIONS = {
  ...COMMON_FLAGS,
  queue: { type: "string" },
  "queue-name": { type: "string" },
  attempts: { type: "string" },
} as const;

export async function enqueueCommand(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseFlags(args, OPTIONS, "enqueue");
  if (values.help) {
    process.stdout.write(ENQUEUE_HELP);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new UsageError(positionals.length === 0 ? "missing the prompts file" : `expected one prompts file but received ${positionals.length}`, "enqueue");
  }
  if (values.queue === undefined) throw new UsageError("missing --queue <redis://host:port>", "enqueue");
  let defaults: BatchDefaults;
  let baseSeed: bigint | undefined;
  let attempts: number | undefined;
  try {
    defaults = settingsFrom(values) as BatchDefaults;
    baseSeed = values.seed === undefined ? undefined : seedFrom(values.seed);
    attempts = values.attempts === undefined ? undefined : integerIn(integer(values.attempts), "--attempts", 1, 1000);
  } catch (error) {
    if (error instanceof CandlewickError && error.code === INVALID_OPTION) throw new UsageError(error.message, "enqueue");
    throw error;
  }
  try {
    const { enqueueFile } = await loadQueueModule("enqueue");
    const { jobIds } = await enqueueFile(positionals[0]!, {
      queue: values.queue,
      ...(values["queue-name"] !== undefined ? { queueName: values["queue-name"] } : {}),
      ...(attempts !== undefined ? { attempts } : {}),
      defaults,
      ...(baseSeed !== undefined ? { baseSeed } : {}),
    });
    if (values.quiet !== true) process.stderr.write(`Enqueued ${count(jobIds.length, "job")} on ${values.queue}\n`);
    return 0;
  } catch (error) {
    if (error instanceof CandlewickError) return reportError(error);
    // ioredis and BullMQ errors (Redis unreachable): say so, exit 1.
    process.stderr.write(`candlewick: ${(error as Error).message}\n`);
    return 1;
  }
}
