// Issue 22's run on one host with several GPUs, in one process and its children:
//
//   DEVICES=cuda:0,cuda:1 REDIS=/path/to/redis-server node bench/gpu/multi_gpu.mjs MODEL_DIR OUT_DIR
//
// 1. The device pool: a PipelinePool over every device of DEVICES, and one over its first pipeline alone, each making
//    the same IMAGES (64) mixed prompts with generateBatch (batches of BATCH, 8) after a warm-up batch on every
//    pipeline; images a second of each and their ratio; every image of the pool against the one-device pool's
//    image of the same index (bytes equal, largest difference, PSNR), and how many batches each pipeline ran.
// 2. The server (createServer, in this process) over the same two pools: CLIENTS (32) concurrent clients, each
//    sending PER_CLIENT (2) requests one after another to /v1/images/generations; images a second and statuses.
// 3. Queue workers (when REDIS names a redis-server): a Redis started here, JOBS (200) jobs enqueued with
//    `candlewick enqueue` at JOB_STEPS (20) steps, one `candlewick worker` process per device, the first SIGKILLed
//    once a third of the images are written; the run ends when every job's PNG is there (or QUEUE_S, 300, pass).
//    Reported: BullMQ's completed and failed counts, the jobs found stalled (the killed worker's), the PNG files,
//    and a sample of them against the pool's own image of the same prompt and seed.
// Writes OUT_DIR/multi-gpu.json and prints a summary. On the development machine the same script runs on CPU
// pipelines standing in for devices (DEVICES=cpu,cpu THREADS=1 SIZE=16 STEPS=1 JOB_STEPS=1 with test/fixtures/tiny-sd),
// which checks the script, not the scaling.
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { mixedPrompt as prompt } from "./prompts.mjs";

const [modelDir, outDir] = process.argv.slice(2);
if (!modelDir || !outDir) throw new Error("usage: node bench/gpu/multi_gpu.mjs MODEL_DIR OUT_DIR");
const env = (name, fallback) => process.env[name] ?? fallback;
const devices = env("DEVICES", "cuda:0,cuda:1").split(",").map((d) => d.trim());
const [size, steps, images, batch] = ["SIZE", "STEPS", "IMAGES", "BATCH"].map((k, i) => Number(env(k, [512, 50, 64, 8][i])));
const [clients, perClient, jobs, jobSteps, queueSeconds] = ["CLIENTS", "PER_CLIENT", "JOBS", "JOB_STEPS", "QUEUE_S"].map((k, i) => Number(env(k, [32, 2, 200, 20, 300][i])));
const threads = process.env.THREADS ? { threads: Number(process.env.THREADS) } : {};
const root = fileURLToPath(new URL("../../", import.meta.url));
const { PipelinePool, createServer } = await import(join(root, "dist/index.js"));
const { PNG } = await import("pngjs");
mkdirSync(outDir, { recursive: true });
const result = { bench: "multi-gpu", devices, size, steps, images, batch, started: new Date().toISOString() };
const save = () => writeFileSync(join(outDir, "multi-gpu.json"), JSON.stringify(result, null, 1));
const log = (...a) => console.error(`[${(performance.now() / 1000).toFixed(1)}s]`, ...a);

const inputs = Array.from({ length: images }, (_, i) => ({ prompt: prompt(i), seed: 1000 + i, ...(i % 4 === 0 ? { negativePrompt: "blurry" } : {}) }));
const defaults = { numInferenceSteps: steps, width: size, height: size };

/** Largest byte difference and PSNR of two RGB8 buffers. */
function compare(a, b) {
  let max = 0, sq = 0;
  for (let i = 0; i < a.length; i++) { const d = a[i] - b[i]; max = Math.max(max, Math.abs(d)); sq += d * d; }
  const mse = sq / a.length;
  return { equal: max === 0, maxDiff: max, psnrDb: mse === 0 ? "equal" : 10 * Math.log10((255 * 255) / mse) };
}

/** The generate calls each pipeline has run, by pipeline (counted from here on). */
const calls = new Map();
function countCalls(pipelines) {
  for (const pipe of pipelines) {
    const generate = pipe.generate.bind(pipe);
    calls.set(pipe, 0);
    pipe.generate = (o) => { calls.set(pipe, calls.get(pipe) + 1); return generate(o); };
  }
}

async function warmUp(pool) {
  await Promise.all(pool.pipelines.map((pipe) => pipe.generate({ ...defaults, prompt: "warm up", numImagesPerPrompt: batch, seed: 1 })));
}

async function poolRun(pool, label) {
  await warmUp(pool);
  const before = pool.pipelines.map((pipe) => calls.get(pipe));
  const t = performance.now();
  const made = new Map();
  for await (const { index, image } of pool.generateBatch(inputs, { batchSize: batch, defaults })) made.set(index, Buffer.from(image.data));
  const seconds = (performance.now() - t) / 1000;
  const row = { label, devices: pool.devices, images: made.size, seconds, imagesPerSecond: made.size / seconds, batchesPerPipeline: pool.pipelines.map((pipe, i) => calls.get(pipe) - before[i]) };
  log(`${label}: ${made.size} images in ${seconds.toFixed(2)} s (${row.imagesPerSecond.toFixed(2)}/s), batches ${row.batchesPerPipeline.join(", ")}`);
  return { row, made };
}

async function serverRun(pool, label) {
  const server = await createServer({ model: pool, maxBatchSize: batch, batchWindowMs: 20, maxQueue: clients * perClient * 2 });
  const url = await server.listen({ port: 0 });
  const statuses = {};
  const latencies = [];
  const t = performance.now();
  try {
    await Promise.all(Array.from({ length: clients }, async (_, c) => {
      for (let r = 0; r < perClient; r++) {
        const i = c * perClient + r;
        const start = performance.now();
        const answer = await fetch(`${url}/v1/images/generations`, {
          method: "POST", headers: { "content-type": "application/json" },
          body: JSON.stringify({ prompt: prompt(i), seed: 5000 + i, steps, size: `${size}x${size}`, response_format: "b64_json" }),
        });
        await answer.arrayBuffer();
        latencies.push((performance.now() - start) / 1000);
        statuses[answer.status] = (statuses[answer.status] ?? 0) + 1;
      }
    }));
  } finally {
    await server.close();
  }
  const seconds = (performance.now() - t) / 1000;
  latencies.sort((a, b) => a - b);
  const ok = statuses[200] ?? 0;
  const row = { label, devices: pool.devices, clients, requests: clients * perClient, statuses, seconds, imagesPerSecond: ok / seconds,
    p50s: latencies[Math.floor(latencies.length / 2)], p99s: latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))] };
  log(`server ${label}: ${ok} images in ${seconds.toFixed(2)} s (${row.imagesPerSecond.toFixed(2)}/s), statuses ${JSON.stringify(statuses)}`);
  return row;
}

/** A child process with its output kept; `waitFor(text)` resolves when it has printed text. */
function child(cmd, args, tag) {
  const proc = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  const listeners = [];
  const take = (d) => { out += d.toString(); for (const l of listeners) l(); };
  proc.stdout.on("data", take);
  proc.stderr.on("data", take);
  const exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve(code ?? signal)));
  const waitFor = (text, ms) => new Promise((resolve, reject) => {
    const check = () => { if (out.includes(text)) resolve(); };
    listeners.push(check); check();
    setTimeout(() => reject(new Error(`${tag} did not print "${text}" in ${ms} ms: ${out.slice(-2000)}`)), ms).unref();
    exited.then((code) => reject(new Error(`${tag} exited (${code}) before printing "${text}": ${out.slice(-2000)}`)));
  });
  return { proc, exited, waitFor, output: () => out };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pngs = (dir) => readdirSync(dir).filter((f) => f.endsWith(".png"));

async function queueRun(pool, redisServer) {
  const port = Number(env("REDIS_PORT", 6390));
  const url = `redis://127.0.0.1:${port}`;
  const work = mkdtempSync(join(tmpdir(), "multi-gpu-queue-"));
  const out = join(work, "renders");
  const redis = child(redisServer, ["--port", String(port), "--save", "", "--appendonly", "no", "--dir", work], "redis-server");
  const main = join(root, "dist/cli/main.js");
  const workers = [];
  try {
    await redis.waitFor("Ready to accept connections", 20_000);
    writeFileSync(join(work, "jobs.jsonl"), Array.from({ length: jobs }, (_, i) => JSON.stringify({ prompt: prompt(i) })).join("\n") + "\n");
    const enq = child(process.execPath, [main, "enqueue", join(work, "jobs.jsonl"), "--queue", url, "--queue-name", "multi",
      "--steps", String(jobSteps), "--width", String(size), "--height", String(size), "--seed", "1"], "enqueue");
    const code = await enq.exited;
    if (code !== 0) throw new Error(`enqueue exited ${code}: ${enq.output()}`);
    const { Queue, QueueEvents } = await import("bullmq");
    const connection = { host: "127.0.0.1", port };
    const queue = new Queue("multi", { connection });
    const events = new QueueEvents("multi", { connection });
    const stalled = new Set();
    events.on("stalled", ({ jobId }) => stalled.add(jobId));
    await events.waitUntilReady();
    for (const [i, device] of devices.entries()) {
      workers.push(child(process.execPath, [main, "worker", "--queue", url, "--queue-name", "multi", "--model", modelDir, "--out", out,
        "--device", device, ...(process.env.THREADS ? ["--threads", process.env.THREADS] : []), "--batch-size", String(batch),
        "--batch-window", "50", "--stall-interval", "5000"], `worker ${i} (${device})`));
    }
    await Promise.all(workers.map((w) => w.waitFor("Waiting for jobs", 180_000)));
    const t = performance.now();
    log(`queue: ${jobs} jobs, ${workers.length} workers waiting`);
    let killedAt = null;
    const deadline = t + queueSeconds * 1000;
    while (performance.now() < deadline) {
      const done = pngs(out).length;
      if (killedAt === null && done >= jobs / 3) {
        workers[0].proc.kill("SIGKILL");
        killedAt = { seconds: (performance.now() - t) / 1000, imagesWritten: done };
        log(`queue: worker 0 SIGKILLed with ${done} images written`);
      }
      if (done >= jobs) break;
      await sleep(200);
    }
    const seconds = (performance.now() - t) / 1000;
    const counts = await queue.getJobCounts("completed", "failed", "waiting", "active", "delayed");
    const files = pngs(out).sort();
    const manifests = readdirSync(out).filter((f) => f.endsWith(".json")).length;
    // A sample of the queue's images against the pool's own of the same prompt and seed (from each job's manifest line).
    const sample = [];
    for (const file of [files[0], files[Math.floor(files.length / 2)], files.at(-1)].filter(Boolean)) {
      const record = JSON.parse(readFileSync(join(out, file.replace(/\.png$/, ".json")), "utf8"));
      const png = PNG.sync.read(readFileSync(join(out, file)));
      const rgb = Buffer.alloc(png.width * png.height * 3);
      for (let p = 0; p < png.width * png.height; p++) for (let c = 0; c < 3; c++) rgb[p * 3 + c] = png.data[p * 4 + c];
      const [own] = await pool.pipelines[0].generate({ prompt: record.prompt, seed: Number(record.seed), numInferenceSteps: jobSteps, width: size, height: size });
      sample.push({ job: record.jobId, seed: record.seed, ...compare(rgb, Buffer.from(own.data)) });
    }
    await queue.close();
    await events.close();
    const row = { jobs, jobSteps, workers: devices, seconds, imagesPerSecond: files.length / seconds, killed: killedAt, pngFiles: files.length, manifests,
      counts, stalledJobs: stalled.size, nothingLost: files.length === jobs && manifests === jobs && counts.completed === jobs && counts.failed === 0, sampleAgainstPool: sample };
    log(`queue: ${files.length} of ${jobs} images in ${seconds.toFixed(1)} s, counts ${JSON.stringify(counts)}, stalled ${stalled.size}`);
    return row;
  } finally {
    for (const w of workers) w.proc.kill("SIGTERM");
    const stopped = await Promise.all(workers.map((w) => {
      const timer = setTimeout(() => w.proc.kill("SIGKILL"), 60_000);
      return w.exited.finally(() => clearTimeout(timer));
    }));
    log(`workers stopped: ${stopped.join(", ")}`);
    redis.proc.kill("SIGTERM");
    await redis.exited;
  }
}

const all = await PipelinePool.fromPretrained(modelDir, { devices, ...threads });
const one = PipelinePool.of([all.pipelines[0]]);
countCalls(all.pipelines);
try {
  const single = await poolRun(one, "one device");
  const pooled = await poolRun(all, `${devices.length} devices`);
  const diffs = [...pooled.made].map(([i, data]) => compare(data, single.made.get(i)));
  result.pool = {
    one: single.row, all: pooled.row, scaling: pooled.row.imagesPerSecond / single.row.imagesPerSecond,
    imagesAgainstOneDevice: { equal: diffs.filter((d) => d.equal).length, of: diffs.length, maxDiff: Math.max(...diffs.map((d) => d.maxDiff)), minPsnrDb: diffs.every((d) => d.equal) ? "equal" : Math.min(...diffs.filter((d) => !d.equal).map((d) => d.psnrDb)) },
  };
  log(`pool scaling ${result.pool.scaling.toFixed(3)}x; images equal to one device's: ${result.pool.imagesAgainstOneDevice.equal} of ${diffs.length}`);
  save();
  result.server = { one: await serverRun(one, "one device"), all: await serverRun(all, `${devices.length} devices`) };
  result.server.scaling = result.server.all.imagesPerSecond / result.server.one.imagesPerSecond;
  save();
  if (process.env.REDIS) result.queue = await queueRun(all, process.env.REDIS);
  else result.queue = { skipped: "REDIS (a redis-server's path) not set" };
} finally {
  result.ended = new Date().toISOString();
  save();
  await all.dispose();
}
console.log(JSON.stringify({ pool: result.pool && { scaling: result.pool.scaling, equal: result.pool.imagesAgainstOneDevice }, server: result.server && { scaling: result.server.scaling },
  queue: result.queue && { nothingLost: result.queue.nothingLost, stalledJobs: result.queue.stalledJobs, killed: result.queue.killed } }));
