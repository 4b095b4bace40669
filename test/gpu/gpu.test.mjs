// The GPU part of the JavaScript tests, run on the GPU test machine by bench/gpu/run.sh with
// node's own test runner (`node --test test/gpu/`), against the compiled package (dist/) and the
// CUDA build (CANDLEWICK_NATIVE_LIBRARY_PATH). Not part of CI, which has no GPU.
//
//   CANDLEWICK_GPU_MODEL  an SD1.5-shaped model folder (bench/gpu/reference.py makes one);
//                         the tiny model in test/fixtures is used for the quick checks.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { StableDiffusionPipeline } from "../../dist/index.js";

const TINY_SD = fileURLToPath(new URL("../fixtures/tiny-sd", import.meta.url));
const MODEL = process.env.CANDLEWICK_GPU_MODEL ?? TINY_SD;
let pipe;

before(async () => {
  pipe = await StableDiffusionPipeline.fromPretrained(MODEL, { device: "cuda" });
});
after(async () => {
  await pipe?.dispose();
});

test("device auto picks CUDA and says why", async () => {
  const auto = await StableDiffusionPipeline.fromPretrained(TINY_SD);
  try {
    assert.equal(auto.device, "cuda:0");
    assert.equal(auto.dtype, "f16");
    assert.match(auto.deviceReason, /CUDA GPU is available/);
  } finally {
    await auto.dispose();
  }
});

test("loads on CUDA in f16 with flash attention and generates a full-size image", async () => {
  assert.equal(pipe.device, "cuda:0");
  assert.equal(pipe.dtype, "f16");
  assert.equal(pipe.info.flashAttention, true);
  const [image] = await pipe.generate({ prompt: "a red apple", numInferenceSteps: 20, seed: 1 });
  assert.equal(image.width, pipe.defaultWidth);
  assert.equal(image.data.length, image.width * image.height * 3);
  const distinct = new Set(image.data.subarray(0, 3000)).size;
  assert.ok(distinct > 10, `the image looks blank (${distinct} distinct byte values)`);
});

test("cancel mid-run rejects with an AbortError, and the next call works and reproduces", async () => {
  const controller = new AbortController();
  const seen = [];
  await assert.rejects(
    pipe.generate({
      prompt: "a red apple", numInferenceSteps: 50, seed: 2, signal: controller.signal,
      onProgress: (p) => { seen.push(p.step); if (p.step === 10) controller.abort(); },
    }),
    (e) => e.name === "AbortError" && e.code === "ERR_CANDLEWICK_CANCELLED",
  );
  assert.ok(seen.length < 50, `cancel came after ${seen.length} steps`);
  const [a] = await pipe.generate({ prompt: "a red apple", numInferenceSteps: 10, seed: 2 });
  const [b] = await pipe.generate({ prompt: "a red apple", numInferenceSteps: 10, seed: 2 });
  assert.deepEqual(a.data, b.data);
});

test("an impossible size is an out-of-memory error, and the pipeline works afterwards", async () => {
  await assert.rejects(
    pipe.generate({ prompt: "too big", width: 8192, height: 8192, numImagesPerPrompt: 16, numInferenceSteps: 1 }),
    (e) => ["ERR_CANDLEWICK_OUT_OF_MEMORY", "ERR_CANDLEWICK_TENSOR"].includes(e.code),
  );
  const [image] = await pipe.generate({ prompt: "after the fault", numInferenceSteps: 5, seed: 3 });
  assert.equal(image.width, pipe.defaultWidth);
});
