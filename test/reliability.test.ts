// Panics and concurrency from JavaScript, on the tiny model (test/fixtures/tiny-sd, made by
// scripts/make_fixtures.py): a panic anywhere in the native code comes back as an error with code
// ERR_CANDLEWICK_INTERNAL and the pipeline takes the next call; many callers at once, two pipelines
// at once and pipelines in worker threads get exactly the bytes that calls made one at a time get.
// Needs the native module (npm run build:native).

import { Worker } from "node:worker_threads";

import test from "ava";

import { CandlewickError, StableDiffusionPipeline } from "../src/index.js";
import { loadNative } from "../src/binding.js";
import { fromNativeError } from "../src/errors.js";
import { TINY_SD } from "./helpers/fixtures.js";

import type { RawGenerateEvent } from "../src/generated/native.js";

const INTERNAL = "ERR_CANDLEWICK_INTERNAL";
const call = (prompt: string, seed: number) => ({ prompt, seed, width: 16, height: 24, numInferenceSteps: 2 });
/** Eight calls with different prompts, seeds and sizes. */
const CALLS = Array.from({ length: 8 }, (_, i) => ({ ...call(i % 2 ? "a red apple" : "a blue car", 100 + i), width: 16 + 8 * (i % 3) }));

let pipe: StableDiffusionPipeline;
/** CALLS, made one at a time. */
let sequential: Uint8Array[];

test.before(async () => {
  pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", dtype: "f32" });
  sequential = [];
  for (const options of CALLS) sequential.push((await pipe.generate(options))[0]!.data);
});

test("a panic inside a binding call throws an error with code ERR_CANDLEWICK_INTERNAL", (t) => {
  const native = loadNative();
  const error = t.throws(() => native.__panicForTest("call"));
  t.is((error as { code?: string }).code, INTERNAL);
  t.is(error?.message, "internal error (a bug in candlewick, please report it): a panic in a binding call, for a test");
  t.is(fromNativeError(error).code, INTERNAL);
});

test("a panic inside an AsyncTask on the libuv pool rejects with code ERR_CANDLEWICK_INTERNAL", async (t) => {
  const error = await t.throwsAsync(loadNative().__panicForTest("task"));
  t.is((error as { code?: string }).code, INTERNAL);
  t.is(error?.message, "internal error (a bug in candlewick, please report it): a panic in an AsyncTask, for a test");
});

test("a panic on the pipeline thread fails that call only; the pipeline takes the next call", async (t) => {
  const native = await loadNative().loadPipeline(TINY_SD, { device: "cpu", dtype: "f32" });
  const outcome = (start: (onEvent: (err: Error | null, event: RawGenerateEvent) => void) => void) =>
    new Promise<RawGenerateEvent | Error>((resolve) =>
      start((err, event) => {
        if (err) resolve(err);
        else if (event.result) resolve(event);
      }),
    );
  const failed = await outcome((onEvent) => native.__panicInJobForTest(onEvent));
  t.true(failed instanceof Error);
  t.is((failed as { code?: string }).code, INTERNAL);
  t.is((failed as Error).message, "internal error (a bug in candlewick, please report it): a panic on the pipeline thread, for a test");
  const { prompt, seed, ...size } = CALLS[0]!;
  const raw = { prompt: [prompt], seed: BigInt(seed), ...size };
  const next = await outcome((onEvent) => native.generate(raw, onEvent));
  t.false(next instanceof Error, String(next));
  t.deepEqual(new Uint8Array((next as RawGenerateEvent).result!.images[0]!.data), sequential[0]);
  await native.dispose();
});

test("the core checks the limits again for callers of the raw binding that skip the TypeScript checks", async (t) => {
  const native = await loadNative().loadPipeline(TINY_SD, { device: "cpu", dtype: "f32" });
  const rejectsWith = (raw: Record<string, unknown>) =>
    new Promise<Error | null>((resolve) => {
      try {
        native.generate({ prompt: ["x"], width: 16, height: 16, numInferenceSteps: 1, ...raw }, (err, event) => {
          if (err || event.result) resolve(err);
        });
      } catch (error) {
        resolve(error as Error);
      }
    });
  const cases: [Record<string, unknown>, string][] = [
    [{ width: 65536 }, "Expected integer between 8 and 8192 for width but received 65536"],
    [{ height: 12 }, "Expected integer multiple of 8 for height but received 12"],
    [{ numImagesPerPrompt: 1000 }, "Expected integer between 1 and 64 for numImagesPerPrompt but received 1000"],
    [{ numInferenceSteps: 1_000_000 }, "Expected integer between 1 and 1000 for numInferenceSteps but received 1000000"],
    [{ guidanceScale: NaN }, "Expected finite number >= 0 for guidanceScale but received NaN"],
    [{ prompt: [] }, "Expected at least one prompt for prompt but received an empty list"],
  ];
  for (const [raw, message] of cases) {
    const error = await rejectsWith(raw);
    t.is(error?.message, message);
    t.is((error as { code?: string } | null)?.code, "ERR_CANDLEWICK_INVALID_OPTION");
  }
  t.is(await rejectsWith({}), null, "and then it generates");
  await native.dispose();
});

test("the core names the GPU load option, the value and the allowed values for callers of the raw binding", async (t) => {
  const cases: [Record<string, unknown>, string][] = [
    [{ attention: "xformers" }, 'Expected one of "auto", "cudnn", "flash", "math" for attention but received "xformers"'],
    [{ convolution: "nhwc" }, 'Expected one of "auto", "cudnn-nhwc", "cudnn-nchw", "candle" for convolution but received "nhwc"'],
  ];
  for (const [raw, message] of cases) {
    // The conversion fails before the load starts: a throw, or a rejection.
    const error = await t.throwsAsync(async () => loadNative().loadPipeline(TINY_SD, { device: "cpu", ...raw }));
    t.is(error?.message, message);
    t.is((error as { code?: string } | undefined)?.code, "ERR_CANDLEWICK_INVALID_OPTION");
  }
});

test("a napi failure without a candlewick code becomes ERR_CANDLEWICK_INTERNAL", (t) => {
  const napiError = Object.assign(new Error("panic from Rust code"), { code: "GenericFailure" });
  const error = fromNativeError(napiError);
  t.true(error instanceof CandlewickError);
  t.is(error.code, INTERNAL);
  t.is(error.cause, napiError);
});

test("8 calls at once on one pipeline give the bytes that the same calls made one at a time give", async (t) => {
  const together = await Promise.all(CALLS.map((options) => pipe.generate(options)));
  t.deepEqual(together.map(([image]) => image!.data), sequential);
});

test("32 callers at once, some aborted and some invalid: every other call gets its own bytes", async (t) => {
  const outcomes = await Promise.allSettled(
    Array.from({ length: 32 }, (_, i) => {
      const options = CALLS[i % 8]!;
      if (i % 8 === 3) return pipe.generate({ ...options, width: 12 });
      if (i % 8 === 5) return pipe.generate({ ...options, signal: AbortSignal.abort() });
      return pipe.generate(options);
    }),
  );
  outcomes.forEach((outcome, i) => {
    if (i % 8 === 3) t.is(outcome.status === "rejected" && (outcome.reason as CandlewickError).code, "ERR_CANDLEWICK_INVALID_OPTION");
    else if (i % 8 === 5) t.is(outcome.status === "rejected" && (outcome.reason as CandlewickError).name, "AbortError");
    else t.deepEqual(outcome.status === "fulfilled" && outcome.value[0]!.data, sequential[i % 8], `call ${i}`);
  });
});

test("two pipelines used at once from one thread do not mix their results", async (t) => {
  const other = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", dtype: "f32" });
  try {
    const [a, b] = await Promise.all([
      Promise.all(CALLS.map((options) => pipe.generate(options))),
      Promise.all([...CALLS].reverse().map((options) => other.generate(options))),
    ]);
    t.deepEqual(a.map(([image]) => image!.data), sequential);
    t.deepEqual(b.map(([image]) => image!.data), [...sequential].reverse());
  } finally {
    await other.dispose();
  }
});

/** A worker thread running test/helpers/generate-worker.ts (through tsx, as the tests run). */
function startWorker(data: object): Worker {
  const module = new URL("./helpers/generate-worker.ts", import.meta.url).href;
  return new Worker(new URL("./helpers/ts-worker.mjs", import.meta.url), { workerData: { ...data, module } });
}

function runWorker(data: object): Promise<Uint8Array[]> {
  return new Promise((resolve, reject) => {
    const worker = startWorker(data);
    worker.once("message", (message: { images: Uint8Array[] }) => resolve(message.images));
    worker.once("error", reject);
    worker.once("exit", (code) => code !== 0 && reject(new Error(`worker exited with ${code}`)));
  });
}

test("two pipelines in two worker threads at once, with the main thread's pipeline busy too", async (t) => {
  const [first, second, main] = await Promise.all([
    runWorker({ modelDir: TINY_SD, calls: CALLS.slice(0, 4) }),
    runWorker({ modelDir: TINY_SD, calls: CALLS.slice(4) }),
    Promise.all(CALLS.map((options) => pipe.generate(options))),
  ]);
  t.deepEqual([...first, ...second].map((data) => new Uint8Array(data)), sequential);
  t.deepEqual(main.map(([image]) => image!.data), sequential);
});

test("terminating a worker thread in the middle of a call does not crash the process", async (t) => {
  const worker = startWorker({ modelDir: TINY_SD, abandon: true, calls: [{ ...call("a long call", 1), numInferenceSteps: 50 }] });
  await new Promise<void>((resolve, reject) => {
    worker.once("message", () => resolve());
    worker.once("error", reject);
  });
  t.is(await worker.terminate(), 1);
  // The abandoned call finishes on its pipeline thread with nobody listening; this process goes on.
  const [image] = await pipe.generate(CALLS[0]!);
  t.deepEqual(image!.data, sequential[0]);
});
