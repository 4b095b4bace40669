/**
 * candlewick/queue: distributed batch generation on BullMQ (Redis). A subpath of its own so that
 * `import "candlewick"` does not load BullMQ and ioredis; BullMQ is an optional peer dependency
 * (`npm install bullmq`).
 *
 * ```ts
 * import { enqueue, QueueWorker } from "candlewick/queue";
 * await enqueue([{ prompt: "a lighthouse", seed: 1, id: "lighthouse" }], { queue: "redis://127.0.0.1:6379" });
 * const worker = await QueueWorker.start({ queue: "redis://127.0.0.1:6379", model: "./stable-diffusion-v1-5", out: "renders" });
 * process.once("SIGTERM", () => worker.close());
 * ```
 */

export { enqueue, enqueueFile, type EnqueueOptions, type EnqueueResult, type QueueInput } from "./enqueue.js";
export { QueueWorker, type JobRecord, type QueueWorkerEvents, type QueueWorkerOptions } from "./worker.js";
export { DEFAULT_QUEUE_NAME, type JobData } from "./connection.js";
