// PipelinePool and device "cuda:N", on CPU pipelines standing in for devices (the tiny model of
// scripts/make_fixtures.py, test/fixtures/tiny-sd): work spreads over every pipeline, each image
// is the one its seed makes whichever pipeline made it, the server uses the pool, and device
// names and failures give the library's messages.

import test from "ava";

import { createServer, PipelinePool, type GenerateOptions } from "../src/index.js";
import { nativeInfo } from "../src/binding.js";
import { StableDiffusionPipeline } from "../src/pipeline.js";
import { TINY_SD } from "./helpers/fixtures.js";

const quick = { numInferenceSteps: 1, width: 16, height: 16, guidanceScale: 1 };
let pool: PipelinePool;
/** Calls each pool pipeline ran. */
const calls: number[] = [0, 0];

test.before(async () => {
  pool = await PipelinePool.fromPretrained(TINY_SD, { devices: ["cpu", "cpu"], threads: 1 });
  for (const [i, pipe] of pool.pipelines.entries()) {
    const generate = pipe.generate.bind(pipe);
    pipe.generate = (o: GenerateOptions) => {
      calls[i]!++;
      return generate(o);
    };
  }
});

test.after.always(async () => {
  await pool?.dispose();
});

test.serial("generateBatch spreads batches over every pipeline; each image is its seed's image alone", async (t) => {
  calls.fill(0);
  t.is(pool.size, 2);
  t.deepEqual(pool.devices, ["cpu", "cpu"]);
  const inputs = Array.from({ length: 16 }, (_, i) => ({ prompt: `thing ${i}`, seed: 50 + i }));
  const results = [];
  for await (const r of pool.generateBatch(inputs, { batchSize: 2, defaults: quick })) results.push(r);
  t.deepEqual(results.map((r) => r.index).sort((a, b) => a - b), [...Array(16).keys()]);
  t.true(calls[0]! > 0 && calls[1]! > 0, `both pipelines work: ${calls.join(", ")}`);
  t.is(calls[0]! + calls[1]!, 8);
  const alone = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu" });
  try {
    for (const { index, image } of results) {
      const [expected] = await alone.generate({ ...quick, ...inputs[index]! });
      t.true(Buffer.from(image.data).equals(Buffer.from(expected!.data)), `input ${index}`);
    }
  } finally {
    await alone.dispose();
  }
});

test.serial("the server runs batches on every pipeline of a pool at once", async (t) => {
  calls.fill(0);
  const server = await createServer({ model: pool, maxBatchSize: 2, batchWindowMs: 5 });
  const url = await server.listen({ port: 0 });
  try {
    const health = (await (await fetch(`${url}/health`)).json()) as { devices: string[] };
    t.deepEqual(health.devices, ["cpu", "cpu"]);
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) =>
      fetch(`${url}/v1/images/generations`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: `p${i}`, seed: i, steps: 1, size: "16x16", guidance_scale: 1 }),
      }).then((r) => r.status)));
    t.deepEqual(answers, Array(12).fill(200));
    t.true(calls[0]! > 0 && calls[1]! > 0, `both pipelines work: ${calls.join(", ")}`);
  } finally {
    await server.close();
  }
});

test("device names: \"cuda:N\" is a device; malformed ones and bad pool options say what is allowed", async (t) => {
  await t.throwsAsync(StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cuda:x" as never }), {
    message: 'Expected "cuda:N" with N between 0 and 1023 for device but received "cuda:x"',
  });
  await t.throwsAsync(StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "gpu" as never }), {
    message: 'Expected one of "auto", "cpu", "cuda" for device but received "gpu"',
  });
  await t.throwsAsync(PipelinePool.fromPretrained(TINY_SD, { devices: ["cpu", "cuda:1024" as never] }), {
    message: 'Expected "cuda:N" with N between 0 and 1023 for devices[1] but received "cuda:1024"',
  });
  await t.throwsAsync(PipelinePool.fromPretrained(TINY_SD, { devices: [] }), {
    message: 'Expected "all" or array of 1 to 64 devices for devices but received an array of length 0',
  });
  await t.throwsAsync(PipelinePool.fromPretrained(TINY_SD, { devices: ["cpu"], device: "cpu" } as never), {
    message: "Expected devices (not device) in pool options but received device",
  });
});

test("without CUDA: \"cuda:1\" is a device error naming it, a pool says which device failed, \"all\" finds none", async (t) => {
  if (nativeInfo().cuda) return t.pass("this build has CUDA: covered by the GPU tests");
  const one = await t.throwsAsync(StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cuda:1" }));
  t.is((one as { code?: string }).code, "ERR_CANDLEWICK_DEVICE");
  t.regex(one!.message, /^device "cuda:1" was requested but /);
  const pooled = await t.throwsAsync(PipelinePool.fromPretrained(TINY_SD, { devices: ["cpu", "cuda:1"] }));
  t.regex(pooled!.message, /^devices\[1\] \(cuda:1\): device "cuda:1" was requested but /);
  await t.throwsAsync(PipelinePool.fromPretrained(TINY_SD, { devices: "all" }), {
    message: 'devices "all" found no CUDA GPU (a CPU build, no driver, or CUDA_VISIBLE_DEVICES empty); list devices instead, e.g. ["cpu"]',
  });
});
