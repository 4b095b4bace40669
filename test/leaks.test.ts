// Memory over many calls on the tiny model (test/fixtures/tiny-sd, made by scripts/make_fixtures.py):
// after a warm-up, hundreds of calls (good and bad) and repeated load/dispose cycles leave the
// process's resident memory where it was, within allocator noise. The figures go to the log
// (`npx ava test/leaks.test.ts --verbose`) and to the README's Reliability section.

import test from "ava";

import { StableDiffusionPipeline } from "../src/index.js";
import { TINY_SD } from "./helpers/fixtures.js";

const TINY = { prompt: "a red apple", width: 16, height: 16, numInferenceSteps: 1, seed: 1 } as const;
/** Allocator noise allowed: glibc keeps freed memory in per-thread arenas. */
const LIMIT_MB = 16;
const rssMb = () => process.memoryUsage().rss / 2 ** 20;

test.serial("300 calls, a third of them rejected, do not grow memory", async (t) => {
  const pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", dtype: "f32" });
  for (let i = 0; i < 50; i++) await pipe.generate(TINY);
  const before = rssMb();
  for (let i = 0; i < 300; i++) {
    if (i % 3 === 0) await t.throwsAsync(pipe.generate({ ...TINY, scheduler: { thresholding: true } }));
    else await pipe.generate(TINY);
  }
  const delta = rssMb() - before;
  t.log(`RSS delta over 300 calls: ${delta.toFixed(1)} MB`);
  t.true(delta < LIMIT_MB, `resident memory grew by ${delta.toFixed(1)} MB`);
  await pipe.dispose();
});

test.serial("load, generate and dispose 20 times: memory comes back", async (t) => {
  const cycle = async () => {
    const pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", dtype: "f32" });
    await pipe.generate(TINY);
    await pipe.dispose();
  };
  for (let i = 0; i < 10; i++) await cycle();
  const before = rssMb();
  for (let i = 0; i < 20; i++) await cycle();
  const delta = rssMb() - before;
  t.log(`RSS delta over 20 load/generate/dispose cycles: ${delta.toFixed(1)} MB`);
  t.true(delta < LIMIT_MB, `resident memory grew by ${delta.toFixed(1)} MB`);
});
