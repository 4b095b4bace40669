// candlewick/queue on a real Redis (scripts/redis.sh: one on PATH, else Debian's redis-server
// unpacked without root into .cache/redis) and the tiny model (test/fixtures/tiny-sd, made by
// scripts/make_fixtures.py). The fault test runs `candlewick worker` processes as users run them,
// kills one (SIGKILL) mid-batch, stops one (SIGTERM), restarts Redis mid-run, and checks that every
// job's image is in the output exactly once, byte for byte the PNG a single process makes for it,
// and that a poison job is in the failed set with the library's message.

import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import test from "ava";
import { Queue, QueueEvents } from "bullmq";

import { enqueue, enqueueFile, QueueWorker, type JobRecord } from "../src/queue/index.js";
import { imageParameters, pngText, resolvedOf } from "../src/cli/parameters.js";
import { CandlewickError, readTextChunks } from "../src/index.js";
import { StableDiffusionPipeline } from "../src/pipeline.js";
import { MAIN, scratch } from "./helpers/cli.js";
import { TINY_SD } from "./helpers/fixtures.js";
import { findRedis, RedisServer } from "./helpers/redis.js";

const found = findRedis();
const redisTest = "path" in found ? test.serial : test.serial.skip;
if ("why" in found) console.warn(`queue tests skipped: ${found.why}`);

// The smallest images the tiny model makes, without guidance: ~20 ms each on a CPU core.
const quick = { numInferenceSteps: 2, width: 16, height: 16, guidanceScale: 1 };
let redis: RedisServer;
let pipe: StableDiffusionPipeline;

test.before(async () => {
  if ("path" in found) redis = await RedisServer.start(found.path);
  pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu" });
});

test.after.always(async () => {
  await redis?.stop();
  await pipe?.dispose();
});

/** The PNG a single process makes for a job: generate alone, then the worker's text chunks. */
async function expectedPng(input: { prompt: string; seed: number; negativePrompt?: string }, model: string): Promise<Buffer> {
  const settings = { ...quick };
  const [image] = await pipe.generate({ ...settings, ...input });
  const parameters = imageParameters({}, input.prompt, input.negativePrompt ?? "", image!.seed, resolvedOf(image!), model);
  return Buffer.from(image!.toPng({ text: pngText(parameters) }));
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

redisTest("enqueue + an in-process worker: PNGs with text chunks and manifest lines under the job ids; a poison job fails at once", async (t) => {
  const queueName = "in-process";
  const out = scratch("candlewick-queue-");
  const inputs = Array.from({ length: 6 }, (_, i) => ({ ...quick, prompt: `shape ${i}`, seed: 100 + i, id: `shape-${i}` }));
  const { jobIds } = await enqueue(inputs, { queue: redis.url, queueName });
  t.deepEqual(jobIds, inputs.map((i) => `id-${i.id}`));
  // A producer that skipped the checks (another language, an old client): the worker checks too.
  const queue = new Queue(queueName, { connection: { host: "127.0.0.1", port: redis.port } });
  await queue.add("txt2img", { input: { prompt: "poison", width: 50 } }, { jobId: "poison", attempts: 5, backoff: { type: "fixed", delay: 10 } });
  const events = new QueueEvents(queueName, { connection: { host: "127.0.0.1", port: redis.port } });
  const completed: string[] = [];
  events.on("completed", ({ jobId }) => completed.push(jobId));
  await events.waitUntilReady();

  const worker = await QueueWorker.start({ queue: redis.url, queueName, model: pipe, out, batchSize: 4, batchWindowMs: 20, modelName: "tiny" });
  try {
    await waitFor(async () => (await queue.getJobCounts("completed")).completed === 6 && (await queue.getFailedCount()) === 1, "6 completed, 1 failed", 60_000);
  } finally {
    await worker.close();
    t.teardown(async () => {
      await events.close();
      await queue.close();
    });
  }

  const poison = await queue.getJob("poison");
  t.is(poison?.failedReason, "input: Expected integer multiple of 8 for width but received 50");
  t.is(poison?.attemptsMade, 1, "a bad input is not retried");
  for (const [i, input] of inputs.entries()) {
    const png = readFileSync(join(out, `id-shape-${i}.png`));
    t.true(png.equals(await expectedPng({ prompt: input.prompt, seed: input.seed }, "tiny")), `job ${i}`);
    const record = JSON.parse(readFileSync(join(out, `id-shape-${i}.json`), "utf8")) as JobRecord;
    t.like(record, { jobId: `id-shape-${i}`, file: `id-shape-${i}.png`, id: `shape-${i}`, prompt: `shape ${i}`, seed: String(100 + i), steps: 2, width: 16 });
    t.is(readTextChunks(png).prompt, `shape ${i}`);
    const job = await queue.getJob(`id-shape-${i}`);
    t.deepEqual(job?.returnvalue, record, "the job's result is its manifest line");
  }
  await waitFor(async () => completed.length === 6, "6 completed events", 5000);
  t.deepEqual(completed.sort(), jobIds.slice().sort());
  await t.throwsAsync(enqueue([{ prompt: "x", width: 50 }], { queue: redis.url, queueName }), { message: "inputs[0]: Expected integer multiple of 8 for width but received 50" });
  t.is(await queue.count(), 0, "a bad input adds nothing");
});

redisTest("a transient error (out of memory) is retried with backoff and the job completes; progress shows in BullMQ", async (t) => {
  const queueName = "transient";
  const out = scratch("candlewick-queue-");
  await enqueue([{ ...quick, prompt: "retry me", seed: 9, id: "retry" }], { queue: redis.url, queueName, backoffMs: 50 });
  const queue = new Queue(queueName, { connection: { host: "127.0.0.1", port: redis.port } });
  t.teardown(() => queue.close());
  const generate = pipe.generate.bind(pipe);
  let calls = 0;
  pipe.generate = (o) => {
    calls++;
    if (calls === 1) return Promise.reject(new CandlewickError("the device ran out of memory (test)", "ERR_CANDLEWICK_OUT_OF_MEMORY"));
    return generate(o);
  };
  const progress: unknown[] = [];
  const worker = await QueueWorker.start({ queue: redis.url, queueName, model: pipe, out, batchSize: 2, batchWindowMs: 0 });
  worker.worker.on("progress", (_job, p) => progress.push(p));
  try {
    await waitFor(async () => (await queue.getJobCounts("completed")).completed === 1, "the job to complete", 30_000);
  } finally {
    await worker.close();
    pipe.generate = generate;
  }
  const job = await queue.getJob("id-retry");
  t.is(job?.attemptsMade, 2, "failed once, then done");
  t.is(calls, 2);
  t.deepEqual(progress.at(-1), { step: 2, totalSteps: 2 });
  t.true(readFileSync(join(out, "id-retry.png")).equals(await expectedPng({ prompt: "retry me", seed: 9 }, pipe.modelDir)));
});

/** `candlewick worker` as a child process; resolves `ready` once it waits for jobs. */
function startWorker(queueName: string, out: string, tag: string): { child: ChildProcess; ready: Promise<void>; exited: Promise<number | null>; log: () => string } {
  const args = ["--import", "tsx", MAIN, "worker", "--queue", redis.url, "--queue-name", queueName, "--model", TINY_SD, "--out", out,
    "--device", "cpu", "--threads", "1", "--batch-size", "4", "--batch-window", "20", "--stall-interval", "1500"];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout!.on("data", (d: Buffer) => (log += d.toString()));
  const ready = new Promise<void>((resolve, reject) => {
    child.stderr!.on("data", (d: Buffer) => {
      log += d.toString();
      if (log.includes("Waiting for jobs")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`worker ${tag} exited with ${code} before it was ready: ${log}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code, signal) => resolve(code ?? (signal === "SIGKILL" ? 137 : null))));
  // A SIGKILLed worker's esbuild service (tsx) outlives it for a while and holds the pipes open.
  child.once("exit", () => {
    child.stdout!.destroy();
    child.stderr!.destroy();
  });
  return { child, ready, exited, log: () => log };
}

const JOBS = 200;

redisTest(`fault test: ${JOBS} jobs over 3 worker processes, one SIGKILLed mid-batch, one SIGTERMed, Redis restarted: each image once, byte-identical`, async (t) => {
  t.timeout(170_000);
  const queueName = "faults";
  const out = scratch("candlewick-faults-");
  const dir = scratch("candlewick-prompts-");
  // A prompts file as users write one: 200 lines, seeds from --seed + line, plus one line with its own settings.
  const lines = Array.from({ length: JOBS }, (_, i) => JSON.stringify(i === 7 ? { prompt: `line ${i + 1}`, id: "seven", negativePrompt: "fog" } : `line ${i + 1}`));
  writeFileSync(join(dir, "prompts.jsonl"), `${lines.join("\n")}\n`);
  const { jobIds } = await enqueueFile(join(dir, "prompts.jsonl"), { queue: redis.url, queueName, defaults: { ...quick }, baseSeed: 1000n });
  t.is(jobIds.length, JOBS);
  const queue = new Queue(queueName, { connection: { host: "127.0.0.1", port: redis.port, maxRetriesPerRequest: null } });
  await queue.add("txt2img", { input: { prompt: "poison", numInferenceSteps: 0 } }, { jobId: "poison", attempts: 3 });

  const started = Date.now();
  const at = (what: string) => t.log(`${((Date.now() - started) / 1000).toFixed(1)} s: ${what}`);
  const workers: ReturnType<typeof startWorker>[] = [];
  // BullMQ's own events: "stalled" for each job a dead worker held (the SIGKILL hit a batch in hand).
  const events = new QueueEvents(queueName, { connection: { host: "127.0.0.1", port: redis.port, maxRetriesPerRequest: null } });
  const stalled = new Set<string>();
  events.on("stalled", ({ jobId }) => stalled.add(jobId));
  await events.waitUntilReady();
  try {
    workers.push(...["a", "b", "c"].map((tag) => startWorker(queueName, out, tag)));
    await Promise.all(workers.map((w) => w.ready));
    at("3 workers ready");
    const done = async () => (await queue.getJobCounts("completed")).completed ?? 0;
    // Mid-run: kill one worker while it holds a batch, stop another gracefully, restart Redis.
    await waitFor(async () => (await done()) >= 20, "20 jobs done", 60_000);
    workers[0]!.child.kill("SIGKILL");
    at("worker a SIGKILLed");
    await waitFor(async () => (await done()) >= 60, "60 jobs done", 60_000);
    workers[1]!.child.kill("SIGTERM");
    t.is(await workers[1]!.exited, 0, `SIGTERM: the worker finishes its batch and exits 0\n${workers[1]!.log()}`);
    at("worker b stopped by SIGTERM");
    await redis.restart();
    at("Redis restarted");
    // The poison job can be the last one settled (a killed worker may have held it: it is failed only after
    // its stall is noticed), so wait for it as well as for the 200.
    const poisonFailed = async () => ((await queue.getJobCounts("failed")).failed ?? 0) >= 1;
    await waitFor(async () => (await done()) === JOBS && (await poisonFailed()), `all ${JOBS} jobs done and the poison job failed`, 120_000);
    at(`all ${JOBS} done`);
    const failed = await queue.getFailed();
    if (failed.length !== 1) t.log(failed.map((j) => `${j.id}: ${j.failedReason}`).join("\n"));
    t.deepEqual(failed.map((j) => j.id), ["poison"]);
    t.is(failed[0]!.failedReason, "input: Expected integer between 1 and 1000 for numInferenceSteps but received 0");
    t.true(stalled.size > 0, "the SIGKILLed worker held jobs, and they were taken up again");
    t.log(`${stalled.size} jobs found stalled and run again`);
    workers[2]!.child.kill("SIGTERM");
    t.is(await workers[2]!.exited, 0);
  } finally {
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGKILL");
    await queue.close();
    await events.close();
  }
  const pngs = readdirSync(out).filter((f) => f.endsWith(".png")).sort();
  t.deepEqual(pngs, jobIds.map((id) => `${id}.png`).sort(), "every job's image, once");
  const model = TINY_SD;
  for (const [i, id] of jobIds.entries()) {
    const line = i + 1;
    const input = i === 7 ? { prompt: `line ${line}`, seed: 1000 + line, negativePrompt: "fog" } : { prompt: `line ${line}`, seed: 1000 + line };
    const png = readFileSync(join(out, `${id}.png`));
    if (!png.equals(await expectedPng(input, model))) return t.fail(`job ${id}: not the image a single process makes`);
  }
  at("every image checked");
  t.pass();
});
