// createServer() on the tiny model (test/fixtures/tiny-sd, made by scripts/make_fixtures.py), called
// by clients nobody here wrote: the official `openai` npm client, and plain fetch for the
// AUTOMATIC1111 routes. Every image is checked against what a direct `generate` with its seed
// makes; dynamic batching, the bounded queue (503), body limits (413), auth (401), validation
// (400), interrupt and client disconnects are each exercised.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";

import test from "ava";
import OpenAI from "openai";
import pngjs from "pngjs";

import { createServer, readTextChunks, type CandlewickServer, type GenerateOptions } from "../src/index.js";
import { StableDiffusionPipeline } from "../src/pipeline.js";
import { MAIN } from "./helpers/cli.js";
import { ROOT, TINY_SD } from "./helpers/fixtures.js";

const quick = { numInferenceSteps: 2, width: 32, height: 32 };
let pipe: StableDiffusionPipeline;
let server: CandlewickServer;
let url: string;
/** Images per generate call the server made (its batches). */
const batches: number[] = [];

test.before(async () => {
  pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu" });
  // Count the server's batches (the pipeline's own generate does the work).
  const generate = pipe.generate.bind(pipe);
  pipe.generate = (o: GenerateOptions) => {
    batches.push(Array.isArray(o.prompt) ? o.prompt.length : 1);
    return generate(o);
  };
  server = await createServer({ model: pipe, maxBatchSize: 8, batchWindowMs: 30, maxQueue: 200, modelName: "tiny-sd" });
  url = await server.listen({ port: 0 });
});

test.after.always(async () => {
  await server?.close();
  await pipe?.dispose();
});

/** The RGB pixels of a base64 PNG. */
function pixels(b64: string): { width: number; height: number; data: Buffer } {
  const png = pngjs.PNG.sync.read(Buffer.from(b64, "base64"));
  const rgb = Buffer.alloc(png.width * png.height * 3);
  for (let i = 0; i < png.width * png.height; i++) png.data.copy(rgb, i * 3, i * 4, i * 4 + 3);
  return { width: png.width, height: png.height, data: rgb };
}

/** What a direct generate with this seed makes, alone. */
async function direct(prompt: string, seed: number | bigint, extra: Partial<GenerateOptions> = {}): Promise<Buffer> {
  const [image] = await pipe.generate({ ...quick, prompt, seed, ...extra });
  return Buffer.from(image!.data);
}

async function post(path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url + path, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
}

test.serial("binds 127.0.0.1 unless told otherwise; /health answers", async (t) => {
  t.regex(url, /^http:\/\/127\.0\.0\.1:\d+$/);
  const health = (await (await fetch(`${url}/health`)).json()) as Record<string, unknown>;
  t.like(health, { status: "ok", model: "tiny-sd", devices: ["cpu"] });
});

test.serial("the official openai client's images.generate round trip: b64 PNGs, each its seed's image", async (t) => {
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused" });
  const body = { prompt: "a red apple", n: 2, size: "32x32", response_format: "b64_json", steps: 2, seed: 41 } as const;
  const answer = await client.images.generate(body as unknown as OpenAI.Images.ImageGenerateParamsNonStreaming);
  t.is(answer.data?.length, 2);
  for (const [i, item] of answer.data!.entries()) {
    const image = pixels(item.b64_json!);
    t.is(image.width, 32);
    t.true(image.data.equals(await direct("a red apple", 41 + i)), `image ${i} is not seed ${41 + i}'s image`);
    const text = readTextChunks(Buffer.from(item.b64_json!, "base64"));
    t.is(text.prompt, "a red apple");
    t.is(text.seed, String(41 + i));
    t.is((item as { seed?: string }).seed, String(41 + i));
  }
  const bad = await t.throwsAsync(client.images.generate({ prompt: "x", size: "50x50" } as unknown as OpenAI.Images.ImageGenerateParamsNonStreaming));
  t.true(bad instanceof OpenAI.BadRequestError);
  t.is((bad as InstanceType<typeof OpenAI.BadRequestError>).status, 400);
  t.regex(bad!.message, /Expected integer multiple of 8 for size \(width\) but received 50/);
  const url2 = await t.throwsAsync(client.images.generate({ prompt: "x", response_format: "url" }));
  t.regex(url2!.message, /Expected one of "b64_json" for response_format but received "url"/);
});

test.serial("A1111 txt2img over plain fetch: images, info with every seed, the web UI's sampler names", async (t) => {
  const response = await post("/sdapi/v1/txt2img", {
    prompt: "a blue bird", negative_prompt: "fog", steps: 2, width: 32, height: 32, seed: 7, batch_size: 2, sampler_name: "DDIM",
    cfg_scale: 5, enable_hr: false, restore_faces: false, styles: [], override_settings: {},
  });
  t.is(response.status, 200);
  const answer = (await response.json()) as { images: string[]; info: string; parameters: Record<string, unknown> };
  const info = JSON.parse(answer.info) as { all_seeds: number[]; infotexts: string[] };
  t.deepEqual(info.all_seeds, [7, 8]);
  t.is(answer.parameters.prompt, "a blue bird");
  t.regex(info.infotexts[0]!, /^a blue bird\nNegative prompt: fog\nSteps: 2, Sampler: DDIM, CFG scale: 5, Seed: 7, Size: 32x32/);
  for (const [i, png] of answer.images.entries()) {
    const expected = await direct("a blue bird", 7 + i, { negativePrompt: "fog", scheduler: "ddim", guidanceScale: 5 });
    t.true(pixels(png).data.equals(expected), `image ${i}`);
  }
  const unsupported = await post("/sdapi/v1/txt2img", { prompt: "x", enable_hr: true });
  t.is(unsupported.status, 400);
  t.like(await unsupported.json(), { error: "ERR_CANDLEWICK_INVALID_OPTION", detail: 'enable_hr true is not supported by Candlewick\'s server (leave it out or at its default)' });
  const badSteps = await post("/sdapi/v1/txt2img", { prompt: "x", steps: 0 });
  t.is(badSteps.status, 400);
  t.is(((await badSteps.json()) as { detail: string }).detail, "Expected integer between 1 and 1000 for steps but received 0");
  const typo = await post("/sdapi/v1/txt2img", { prompt: "x", stpes: 2 });
  t.is(((await typo.json()) as { detail: string }).detail, 'Unknown option "stpes" in request body; did you mean "steps"?');
  const badScheduler = await post("/sdapi/v1/txt2img", { prompt: "x", ...{ steps: 2, width: 32, height: 32 }, sampler_name: "nonesuch" });
  t.is(badScheduler.status, 400);
});

test.serial("100 concurrent requests: nothing lost or mixed up, compatible ones share batches", async (t) => {
  batches.length = 0;
  const requests = Array.from({ length: 100 }, (_, i) => ({
    prompt: `prompt number ${i}`,
    seed: 1000 + i,
    // Two kinds of settings: they never share a batch.
    steps: i % 3 === 0 ? 2 : 1,
  }));
  // The smallest images the tiny model makes, without guidance: ~20 ms each on a CPU core.
  const small = { size: "16x16", guidance_scale: 1 };
  const answers = await Promise.all(requests.map(async (r) => {
    const response = await post("/v1/images/generations", { prompt: r.prompt, seed: r.seed, steps: r.steps, ...small });
    t.is(response.status, 200);
    return ((await response.json()) as { data: { b64_json: string; seed: string }[] }).data[0]!;
  }));
  t.true(batches.length < 100 / 2, `expected batching, got ${batches.length} calls for 100 requests`);
  t.true(Math.max(...batches) > 1);
  t.is(batches.reduce((a, b) => a + b, 0), 100);
  for (const [i, answer] of answers.entries()) {
    t.is(answer.seed, String(requests[i]!.seed));
    const expected = await direct(requests[i]!.prompt, requests[i]!.seed, { numInferenceSteps: requests[i]!.steps, width: 16, height: 16, guidanceScale: 1 });
    t.true(pixels(answer.b64_json).data.equals(expected), `request ${i} got another image`);
  }
});

/** A request that runs long on the tiny model (started, not awaited). */
function slowRequest(base: string, signal?: AbortSignal): Promise<Response> {
  return fetch(`${base}/sdapi/v1/txt2img`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: "slow", steps: 900, width: 64, height: 64, seed: 1 }),
    ...(signal ? { signal } : {}),
  });
}

async function untilRunning(base: string): Promise<void> {
  for (;;) {
    const p = (await (await fetch(`${base}/sdapi/v1/progress`)).json()) as { state: { sampling_step: number } };
    if (p.state.sampling_step > 0) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

test.serial("progress (with a preview) while a batch runs; interrupt stops it (409) and the server goes on", async (t) => {
  const slow = slowRequest(url);
  await untilRunning(url);
  const progress = (await (await fetch(`${url}/sdapi/v1/progress`)).json()) as { progress: number; state: { sampling_steps: number; job_count: number } };
  t.true(progress.progress > 0 && progress.progress < 1);
  t.is(progress.state.sampling_steps, 900);
  // A preview of the first image's latents every 5 steps (previewEvery's default), unless skipped.
  let preview: string | null = null;
  while (preview === null) {
    preview = ((await (await fetch(`${url}/sdapi/v1/progress`)).json()) as { current_image: string | null }).current_image;
    if (preview === null) await new Promise((r) => setTimeout(r, 20));
  }
  const png = pngjs.PNG.sync.read(Buffer.from(preview, "base64"));
  t.deepEqual([png.width, png.height], [64 / pipe.vaeScaleFactor, 64 / pipe.vaeScaleFactor]);
  const skipped = (await (await fetch(`${url}/sdapi/v1/progress?skip_current_image=true`)).json()) as { current_image: string | null };
  t.is(skipped.current_image, null);
  t.is((await post("/sdapi/v1/interrupt", {})).status, 200);
  const stopped = await slow;
  t.is(stopped.status, 409);
  const after = await post("/v1/images/generations", { prompt: "after", seed: 3, steps: 2, size: "32x32" });
  t.is(after.status, 200);
});

test.serial("a full queue answers 503 with Retry-After; a client that goes away leaves the queue", async (t) => {
  const small = await createServer({ model: pipe, maxBatchSize: 1, batchWindowMs: 0, maxQueue: 1 });
  const base = await small.listen({ port: 0 });
  try {
    const running = slowRequest(base);
    await untilRunning(base);
    const leaving = new AbortController();
    const queued = slowRequest(base, leaving.signal).catch((e: unknown) => e);
    for (;;) {
      const health = (await (await fetch(`${base}/health`)).json()) as { queued: number };
      if (health.queued === 1) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    const refused = await fetch(`${base}/v1/images/generations`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "x" }) });
    t.is(refused.status, 503);
    t.regex(refused.headers.get("retry-after") ?? "", /^[1-9]\d*$/);
    t.regex(((await refused.json()) as { error: { message: string } }).error.message, /^the queue is full \(1 images waiting\)/);
    leaving.abort();
    await queued;
    for (let i = 0; ; i++) {
      const health = (await (await fetch(`${base}/health`)).json()) as { queued: number };
      if (health.queued === 0) break;
      if (i > 200) return t.fail("the queue kept the request of a client that went away");
      await new Promise((r) => setTimeout(r, 10));
    }
    t.pass();
    await fetch(`${base}/sdapi/v1/interrupt`, { method: "POST" });
    t.is((await running).status, 409);
  } finally {
    await small.close();
  }
});

test.serial("an oversized body gets 413, declared or streamed; a body that is not JSON 400", async (t) => {
  const big = JSON.stringify({ prompt: "x".repeat(2 << 20) });
  const declared = await fetch(`${url}/v1/images/generations`, { method: "POST", headers: { "content-type": "application/json" }, body: big });
  t.is(declared.status, 413);
  t.regex(((await declared.json()) as { error: { message: string } }).error.message, /takes at most 1048576/);
  // Chunked, no Content-Length: the limit holds while reading.
  const streamed = await new Promise<number>((resolve, reject) => {
    const req = request(`${url}/sdapi/v1/txt2img`, { method: "POST", headers: { "content-type": "application/json" } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    for (let i = 0; i < 40; i++) req.write("x".repeat(64 << 10));
    req.end();
  });
  t.is(streamed, 413);
  const notJson = await fetch(`${url}/sdapi/v1/txt2img`, { method: "POST", body: "{prompt" });
  t.is(notJson.status, 400);
});

test.serial("with a token: 401 without it or with another, 200 with it; /health stays open", async (t) => {
  const guarded = await createServer({ model: pipe, token: "s3cret" });
  const base = await guarded.listen({ port: 0 });
  try {
    const body = JSON.stringify({ prompt: "x", steps: 2, size: "32x32", seed: 1 });
    const headers = { "content-type": "application/json" };
    const none = await fetch(`${base}/v1/images/generations`, { method: "POST", headers, body });
    t.is(none.status, 401);
    t.is(none.headers.get("www-authenticate"), "Bearer");
    const wrong = await fetch(`${base}/sdapi/v1/progress`, { headers: { authorization: "Bearer nope" } });
    t.is(wrong.status, 401);
    const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "wrong", maxRetries: 0 });
    const refused = await t.throwsAsync(client.images.generate({ prompt: "x" }));
    t.true(refused instanceof OpenAI.AuthenticationError);
    const right = new OpenAI({ baseURL: `${base}/v1`, apiKey: "s3cret" });
    const ok = await right.images.generate({ prompt: "x", steps: 2, size: "32x32" } as unknown as OpenAI.Images.ImageGenerateParamsNonStreaming);
    t.is(ok.data?.length, 1);
    t.is((await fetch(`${base}/health`)).status, 200);
  } finally {
    await guarded.close();
  }
});

test.serial("options are checked with the library's messages", async (t) => {
  await t.throwsAsync(createServer({ model: pipe, maxBatchSize: 0 }), { message: "Expected integer between 1 and 64 for maxBatchSize but received 0" });
  await t.throwsAsync(createServer({ model: pipe, tokn: "x" } as never), { message: 'Unknown option "tokn" in server options; did you mean "token"?' });
  await t.throwsAsync(createServer({ model: 42 } as never), { message: "Expected pipeline, pool, model folder or hub id for model but received 42" });
});

test.serial("the page at / is served (its form posts to the A1111 route)", async (t) => {
  const page = await fetch(`${url}/`);
  t.is(page.status, 200);
  t.regex(page.headers.get("content-type") ?? "", /^text\/html/);
  const html = await page.text();
  for (const id of ["prompt", "negative", "width", "height", "steps", "scheduler", "seed", "gallery"]) t.true(html.includes(`id="${id}"`), id);
  t.true(html.includes('fetch("/sdapi/v1/txt2img"'));
  t.true(html.includes('fetch("/sdapi/v1/progress"'));
});

// node:http, so it runs under Bun as well (Bun runs the TypeScript sources itself).
const RUNTIMES = [
  { name: "Node", command: process.execPath, args: ["--import", "tsx", MAIN] },
  { name: "Bun", command: join(ROOT, "node_modules/.bin/bun"), args: [MAIN] },
];

for (const runtime of RUNTIMES) test.serial(`candlewick serve under ${runtime.name}: listens on 127.0.0.1, answers, stops on SIGTERM with exit code 0`, async (t) => {
  if (!existsSync(runtime.command)) return t.pass(`skipped: no ${runtime.command} (npm install gets it)`);
  const child = spawn(runtime.command, [...runtime.args, "serve", "--model", TINY_SD, "--device", "cpu", "--port", "0", "--token", "tok"], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const listening = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const match = /Listening on (http:\/\/127\.0\.0\.1:\d+) \(bearer token required\)/.exec(out);
      if (match) resolve(match[1]!);
    });
    child.once("exit", (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
  });
  const refused = await fetch(`${listening}/sdapi/v1/progress`);
  t.is(refused.status, 401);
  const made = await fetch(`${listening}/v1/images/generations`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer tok" },
    body: JSON.stringify({ prompt: "x", size: "16x16", steps: 1, guidance_scale: 1, seed: 2 }),
  });
  t.is(made.status, 200);
  child.kill("SIGTERM");
  t.is(await exited, 0, stderr);
});
