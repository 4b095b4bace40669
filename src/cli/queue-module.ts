/**
 * The queue commands load candlewick/queue on demand: BullMQ is an optional peer dependency
 * (`npm install bullmq`), so that installing candlewick does not pull in a Redis client nobody uses.
 */

import { CandlewickError, INVALID_OPTION } from "../errors.js";

type QueueModule = typeof import("../queue/index.js");

/** candlewick/queue, or an error saying to install BullMQ. */
export async function loadQueueModule(command: string): Promise<QueueModule> {
  try {
    return await import("../queue/index.js");
  } catch (error) {
    const e = error as { code?: string; message?: string };
    if (e.code === "ERR_MODULE_NOT_FOUND" && /bullmq/.test(e.message ?? "")) {
      throw new CandlewickError(`candlewick ${command} needs BullMQ, an optional dependency: npm install bullmq`, INVALID_OPTION, { cause: error });
    }
    throw error;
  }
}
