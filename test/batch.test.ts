// pipe.generateBatch on the tiny model that scripts/make_fixtures.py wrote (test/fixtures/tiny-sd):
// packing into GPU batches by settings, per-input seeds (an image made in a batch is the image its
// seed makes alone), results tied to their inputs, async sources, cancellation and bad inputs.

import test from "ava";

import type { BatchInput, BatchProgress, BatchResult } from "../src/index.js";
import { StableDiffusionPipeline } from "../src/pipeline.js";
import { TINY_SD, shareWithin } from "./helpers/fixtures.js";

const quick = { numInferenceSteps: 2, width: 32, height: 32 };
let pipe: StableDiffusionPipeline;

test.before(async () => {
  pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu" });
});

async function collect<I>(results: AsyncIterable<BatchResult<I>>): Promise<BatchResult<I>[]> {
  const out: BatchResult<I>[] = [];
  for await (const result of results) out.push(result);
  return out;
}

test.serial("inputs are packed by settings, every image is its seed's image, each result names its input", async (t) => {
  const inputs: BatchInput[] = [
    { prompt: "a red apple", seed: 1 },
    { prompt: "a blue bird", seed: 2, width: 48 },
    { prompt: "a green hill", seed: 3, negativePrompt: "fog" },
    { prompt: "a red apple", seed: 4, width: 48 },
    { prompt: "a yellow sun", seed: 5 },
    { prompt: "a dark sea", seed: 6 },
    { prompt: "a tall tree", seed: 7, guidanceScale: 1 },
  ];
  const batches: number[][] = [];
  const onProgress = (p: BatchProgress) => {
    if (p.step === 1) batches.push(p.indices);
  };
  const results = await collect(pipe.generateBatch(inputs, { batchSize: 3, defaults: quick, onProgress }));
  t.deepEqual(results.map((r) => r.index).sort(), [0, 1, 2, 3, 4, 5, 6]);
  // Same settings share a call (at most 3); other settings never do.
  t.deepEqual(batches.map((b) => b.join(",")).sort(), ["0,2,4", "1,3", "5", "6"]);
  for (const { index, input, image } of results) {
    t.is(input, inputs[index]!);
    t.is(image.seed, BigInt(inputs[index]!.seed!));
    const [alone] = await pipe.generate({ ...quick, ...inputs[index], prompt: inputs[index]!.prompt });
    t.is(image.width, alone!.width);
    t.true(shareWithin(image.data, alone!.data, 1) >= 0.999, `input ${index} differs from its image made alone`);
  }
});

test.serial("plain prompts from an async source that trickles; random seeds reproduce", async (t) => {
  async function* slowly() {
    for (const prompt of ["one", "two", "three"]) {
      await new Promise((r) => setTimeout(r, 30));
      yield prompt;
    }
  }
  const results = await collect(pipe.generateBatch(slowly(), { batchSize: 8, defaults: quick }));
  t.deepEqual(results.map((r) => r.input).sort(), ["one", "three", "two"]);
  const seeds = new Set(results.map((r) => r.image.seed));
  t.is(seeds.size, 3);
  const first = results[0]!;
  const [again] = await pipe.generate({ ...quick, prompt: first.input, seed: first.image.seed });
  t.true(shareWithin(first.image.data, again!.data, 1) >= 0.999);
});

test.serial("a bad input stops the reading: what came before it is made, then an error names it", async (t) => {
  const inputs: unknown[] = ["a", "b", { prompt: "c", width: 50 }, "d"];
  const seen: number[] = [];
  const error = await t.throwsAsync(async () => {
    for await (const result of pipe.generateBatch(inputs as string[], { batchSize: 1, defaults: quick })) seen.push(result.index);
  });
  t.deepEqual(seen.sort(), [0, 1]);
  t.is(error?.message, "inputs[2]: Expected integer multiple of 8 for width but received 50");
  t.is((error as { code?: string }).code, "ERR_CANDLEWICK_INVALID_OPTION");
  const unknown = await t.throwsAsync(collect(pipe.generateBatch([{ prompt: "x", guidence: 2 } as BatchInput])));
  t.is(unknown?.message, 'Unknown option "guidence" in inputs[0]; did you mean "guidanceScale"?');
  const notIterable = await t.throwsAsync(collect(pipe.generateBatch("a prompt" as unknown as string[])));
  t.is(notIterable?.message, 'Expected array, iterable or async iterable of inputs for inputs but received "a prompt"');
});

test.serial("an exception in onWarning or onProgress ends the batch with it, as thrown", async (t) => {
  const long = Array.from({ length: 100 }, (_, i) => `word${i}`).join(" ");
  const boom = new Error("boom");
  const truncating = { ...quick, truncateLongPrompts: true };
  await t.throwsAsync(collect(pipe.generateBatch([long, "a"], { defaults: truncating, onWarning: () => { throw boom; } })), { is: boom });
  const thrown: unknown = await collect(pipe.generateBatch(["a"], { defaults: quick, onProgress: () => { throw 42; } })).then(() => "resolved", (e: unknown) => e);
  t.is(thrown, 42);
  const results = await collect(pipe.generateBatch(["a"], { defaults: quick }));
  t.is(results.length, 1);
});

test.serial("cancelling keeps what finished and stops the rest; the pipeline stays usable", async (t) => {
  const controller = new AbortController();
  const seen: number[] = [];
  const inputs = Array.from({ length: 12 }, (_, i) => ({ prompt: `p${i}`, seed: i, numInferenceSteps: 5 }));
  const error = await t.throwsAsync(async () => {
    for await (const result of pipe.generateBatch(inputs, { batchSize: 2, defaults: quick, signal: controller.signal })) {
      seen.push(result.index);
      controller.abort();
    }
  });
  t.is(error?.name, "AbortError");
  t.true(seen.length >= 1 && seen.length <= 2, `yielded ${seen.length}`);

  // Leaving the loop early cancels the queued calls too.
  const started = performance.now();
  for await (const _ of pipe.generateBatch(inputs, { batchSize: 2, defaults: quick })) break;
  const [image] = await pipe.generate({ ...quick, prompt: "after", seed: 1 });
  t.is(image!.width, 32);
  t.true(performance.now() - started < 30_000);
});
