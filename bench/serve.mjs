// NOT YET RUN (no GPU where it was written). Issue 20's measurements, point 5: the server's
// throughput and p50/p99 latency at 1, 8 and 32 concurrent clients against calling `generate`
// directly (batch 1 and batch 8), and a worker's images per second draining a 500-job queue.
//
//   npm run build && node bench/serve.mjs --model /path/to/stable-diffusion-v1-5 [--steps 30] [--size 512]
//     [--requests 64] [--jobs 500] [--redis "$(bash scripts/redis.sh)"] > bench/results/serve-<gpu>.json
//
// Writes one JSON object to stdout; progress to stderr. Run on an idle GPU; the first call of each
// shape (cuDNN plans, CUDA graphs) is warmed up before timing.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as netServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { createServer, StableDiffusionPipeline } from "../dist/index.js";
import { enqueue, QueueWorker } from "../dist/queue/index.js";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    steps: { type: "string", default: "30" },
    size: { type: "string", default: "512" },
    requests: { type: "string", default: "64" },
    jobs: { type: "string", default: "500" },
    redis: { type: "string" },
  },
});
if (!values.model) throw new Error("--model <dir> is required");
const steps = Number(values.steps);
const side = Number(values.size);
const requests = Number(values.requests);
const say = (text) => process.stderr.write(`${text}\n`);
const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const settings = { numInferenceSteps: steps, width: side, height: side };

const pipe = await StableDiffusionPipeline.fromPretrained(values.model);
const result = { device: pipe.device, dtype: pipe.dtype, steps, size: side, direct: {}, server: {}, worker: undefined };
say(`on ${pipe.device} (${pipe.dtype}), ${steps} steps, ${side}x${side}`);

// 1. generate directly: images per second at batch 1 and batch 8.
for (const batch of [1, 8]) {
  const call = (seed) => pipe.generate({ ...settings, prompt: Array(batch).fill("a photo of a lighthouse at dusk"), seeds: Array.from({ length: batch }, (_, i) => seed + i) });
  await call(0);
  await call(0);
  const rounds = Math.max(2, Math.ceil(requests / batch / 2));
  const started = performance.now();
  for (let r = 0; r < rounds; r++) await call(r * batch);
  const seconds = (performance.now() - started) / 1000;
  result.direct[`batch${batch}`] = { imagesPerSecond: (rounds * batch) / seconds };
  say(`direct batch ${batch}: ${(rounds * batch / seconds).toFixed(2)} images/s`);
}

// 2. The server at 1, 8 and 32 concurrent clients, each sending one-image requests back to back.
const server = await createServer({ model: pipe, maxBatchSize: 8, maxQueue: 1024 });
const url = await server.listen({ port: 0 });
const body = (seed) => JSON.stringify({ prompt: "a photo of a lighthouse at dusk", size: `${side}x${side}`, steps, seed });
const post = async (seed) => {
  const started = performance.now();
  const response = await fetch(`${url}/v1/images/generations`, { method: "POST", headers: { "content-type": "application/json" }, body: body(seed) });
  if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${await response.text()}`);
  await response.arrayBuffer();
  return performance.now() - started;
};
await Promise.all(Array.from({ length: 8 }, (_, i) => post(i)));
for (const clients of [1, 8, 32]) {
  const latencies = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    while (next < requests) latencies.push(await post(next++));
  }));
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  result.server[`clients${clients}`] = {
    imagesPerSecond: latencies.length / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
  say(`server, ${clients} clients: ${(latencies.length / seconds).toFixed(2)} images/s, p50 ${percentile(latencies, 50).toFixed(0)} ms, p99 ${percentile(latencies, 99).toFixed(0)} ms`);
}
await server.close();

// 3. One worker draining a queue of --jobs jobs.
if (values.redis) {
  const port = await new Promise((resolve) => {
    const s = netServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
  const dir = mkdtempSync(join(tmpdir(), "candlewick-bench-"));
  const redis = spawn(values.redis, ["--port", String(port), "--dir", dir, "--save", ""], { stdio: "ignore" });
  await new Promise((r) => setTimeout(r, 500));
  const queue = `redis://127.0.0.1:${port}`;
  const jobs = Number(values.jobs);
  await enqueue(Array.from({ length: jobs }, (_, i) => ({ ...settings, prompt: `a photo of lighthouse number ${i}`, seed: i })), { queue });
  const started = performance.now();
  const worker = await QueueWorker.start({ queue, model: pipe, out: join(dir, "out"), batchSize: 8 });
  let done = 0;
  await new Promise((resolve) => worker.worker.on("completed", () => ++done === jobs && resolve()));
  const seconds = (performance.now() - started) / 1000;
  await worker.close();
  redis.kill();
  rmSync(dir, { recursive: true, force: true });
  result.worker = { jobs, imagesPerSecond: jobs / seconds };
  say(`worker: ${jobs} jobs in ${seconds.toFixed(1)} s, ${(jobs / seconds).toFixed(2)} images/s`);
}

await pipe.dispose();
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
