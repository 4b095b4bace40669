// The GPU part of the JavaScript tests, run on the GPU test machine by bench/gpu/run.sh with
// node's own test runner (`node --test test/gpu/`), against the compiled package (dist/) and the
// CUDA build (CANDLEWICK_NATIVE_LIBRARY_PATH). Not part of CI, which has no GPU.
//
//   CANDLEWICK_GPU_MODEL  an SD1.5-shaped model folder (bench/gpu/reference.py makes one);
//                         the tiny model in test/fixtures is used for the quick checks.
//   CANDLEWICK_GPU_RESULTS  a folder for the leak test's numbers (bench/results takes them).
// Run with --expose-gc so the host-memory figures are taken after a full collection.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

test("loads on CUDA in f16 with the fused paths and generates a full-size image", async () => {
  assert.equal(pipe.device, "cuda:0");
  assert.equal(pipe.dtype, "f16");
  assert.equal(pipe.info.attention, "auto");
  assert.equal(pipe.info.convolution, "cudnn-nhwc");
  assert.deepEqual(pipe.info.cudaFallbacks, []);
  assert.equal(pipe.info.cudaGraphs, true);
  const [image] = await pipe.generate({ prompt: "a red apple", numInferenceSteps: 20, seed: 1 });
  assert.equal(image.width, pipe.defaultWidth);
  assert.equal(image.data.length, image.width * image.height * 3);
  const distinct = new Set(image.data.subarray(0, 3000)).size;
  assert.ok(distinct > 10, `the image looks blank (${distinct} distinct byte values)`);
});

// FP8 is not diffusers' arithmetic: its bound is on the image's distance from the f16 one (PSNR; 53 dB on the
// H200 with SD1.5-shaped weights, bench/NOTES.md session 16), and on a full-size model the image must differ
// (the UNet's wide linear layers did run in FP8; the tiny fixture's layers are too narrow for FP8 to take any:
// cuda::fp8's min_outputs).
const FP8_MIN_PSNR_DB = 35;

/** Two images' PSNR in dB (Infinity when they are equal). */
function psnrDb(a, b) {
  let squares = 0;
  for (let i = 0; i < a.length; i++) squares += (a[i] - b[i]) ** 2;
  return 10 * Math.log10((255 * 255) / (squares / a.length));
}

test("FP8 linear layers: on where asked, an image near the f16 one, reproducible", async () => {
  const fp8 = await StableDiffusionPipeline.fromPretrained(MODEL, { device: "cuda", fp8: true });
  try {
    assert.equal(fp8.info.fp8, true);
    assert.deepEqual(fp8.info.cudaFallbacks, []);
    const call = { prompt: "a red apple", numInferenceSteps: 20, seed: 1 };
    const [[a], [b]] = [await pipe.generate(call), await fp8.generate(call)];
    const psnr = psnrDb(a.data, b.data);
    console.log(JSON.stringify({ fp8_psnr_db: psnr }));
    if (MODEL !== TINY_SD) assert.ok(psnr < Infinity, "the FP8 image is the f16 one: no layer ran in FP8");
    assert.ok(psnr >= FP8_MIN_PSNR_DB, `FP8 image ${psnr.toFixed(1)} dB from the f16 one (bound ${FP8_MIN_PSNR_DB})`);
    const [again] = await fp8.generate(call);
    assert.deepEqual(again.data, b.data, "FP8 images are reproducible");
    // At 256x256 the deepest level has 8x8 tokens: the FP8 layers (no f16 weight to fall back on) take few rows.
    const small = { ...call, width: 256, height: 256 };
    const [[c], [d]] = [await pipe.generate(small), await fp8.generate(small)];
    const smallPsnr = psnrDb(c.data, d.data);
    console.log(JSON.stringify({ fp8_256_psnr_db: smallPsnr }));
    assert.ok(smallPsnr >= FP8_MIN_PSNR_DB, `FP8 image at 256x256 ${smallPsnr.toFixed(1)} dB from the f16 one`);
  } finally {
    await fp8.dispose();
  }
});

// The FP8 layers hold their weights in e4m3 only (the f16 copies are dropped, the weight record reads them again
// from the file for a LoRA): a pipeline loaded with fp8 takes less GPU memory than the same one in f16.
test("FP8 takes less GPU memory at load than f16", { skip: MODEL === TINY_SD && "the tiny model has no FP8 layer" }, async () => {
  const loadDelta = async (options) => {
    const before = pipe.gpuMemory().used;
    const loaded = await StableDiffusionPipeline.fromPretrained(MODEL, { device: "cuda", ...options });
    const used = pipe.gpuMemory().used - before;
    await loaded.dispose();
    return used;
  };
  const f16 = await loadDelta({});
  const fp8 = await loadDelta({ fp8: true });
  console.log(JSON.stringify({ load_f16_mib: f16 / 2 ** 20, load_fp8_mib: fp8 / 2 ** 20 }));
  assert.ok(fp8 < f16, `fp8 load took ${fp8} bytes, f16 ${f16}`);
});

// setLoras rebuilds the UNet from its weight record inside the same FP8 scope as the load: the LoRA-fused
// layers must be quantized again (the image changes with the LoRA, stays near the f16 LoRA image) and taking the
// LoRA off must give the FP8 image of the plain model again, byte for byte. CANDLEWICK_GPU_LORA: a LoRA for
// MODEL (bench/gpu/make_lora.py; bench/gpu/round6.sh makes one); skipped without it.
const LORA = process.env.CANDLEWICK_GPU_LORA;
test("FP8 with a LoRA: setLoras quantizes the fused layers again, and taking it off gives the plain FP8 image", { skip: !LORA && "CANDLEWICK_GPU_LORA not set" }, async () => {
  const fp8 = await StableDiffusionPipeline.fromPretrained(MODEL, { device: "cuda", fp8: true });
  const f16 = await StableDiffusionPipeline.fromPretrained(MODEL, { device: "cuda", loras: [{ path: LORA }] });
  try {
    const call = { prompt: "a red apple", numInferenceSteps: 20, seed: 1 };
    const [plain] = await fp8.generate(call);
    await fp8.setLoras([{ path: LORA }]);
    assert.equal(fp8.info.fp8, true);
    const [[withLora], [reference]] = [await fp8.generate(call), await f16.generate(call)];
    const [vsF16Lora, vsPlain] = [psnrDb(withLora.data, reference.data), psnrDb(withLora.data, plain.data)];
    console.log(JSON.stringify({ fp8_lora_vs_f16_lora_db: vsF16Lora, fp8_lora_vs_fp8_db: vsPlain }));
    assert.notDeepEqual(withLora.data, plain.data, "the LoRA changed nothing under FP8");
    assert.ok(vsF16Lora >= FP8_MIN_PSNR_DB, "the FP8 LoRA image is far from the f16 LoRA image");
    await fp8.setLoras([]);
    const [back] = await fp8.generate(call);
    assert.deepEqual(back.data, plain.data, "without the LoRA, FP8 gives its first image again");
  } finally {
    await fp8.dispose();
    await f16.dispose();
  }
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

const small = (seed) => ({ prompt: "a lighthouse at dusk", width: 256, height: 256, numInferenceSteps: 4, seed });

test("replaying the captured CUDA graph gives the image eager steps give, byte for byte, for a new prompt too", async () => {
  const eager = await StableDiffusionPipeline.fromPretrained(MODEL, { device: "cuda", cudaGraphs: false });
  try {
    const call = { ...small(7), numInferenceSteps: 8 };
    const [want] = await eager.generate(call);
    const [first] = await pipe.generate(call); // warm-up step, capture, replays
    const [second] = await pipe.generate(call); // replays only
    assert.deepEqual(first.data, want.data);
    assert.deepEqual(second.data, want.data);
    // Another prompt through the same graph: its text (and each layer's keys and values of it,
    // made once a call) must replace the first call's in the graph's input buffers.
    const other = { ...call, prompt: "a blue boat on a calm lake" };
    const [wantOther] = await eager.generate(other);
    const [gotOther] = await pipe.generate(other);
    assert.notDeepEqual(wantOther.data, want.data, "the two prompts should give different images");
    assert.deepEqual(gotOther.data, wantOther.data);
  } finally {
    await eager.dispose();
  }
});

// One fresh process's image as a sha256, with `env` added to the environment, and the start-up
// profile's rows it printed (CANDLEWICK_PROFILE_STARTUP=1), summed by name: { name: { s, calls } }.
function freshProcess(env) {
  const script = `
    import { createHash } from "node:crypto";
    import { StableDiffusionPipeline } from ${JSON.stringify(new URL("../../dist/index.js", import.meta.url).href)};
    const pipe = await StableDiffusionPipeline.fromPretrained(${JSON.stringify(MODEL)}, { device: "cuda" });
    const [image] = await pipe.generate(${JSON.stringify({ ...small(11), numInferenceSteps: 6 })});
    console.log(createHash("sha256").update(image.data).digest("hex"));
    await pipe.dispose();`;
  const run = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    env: { ...process.env, CANDLEWICK_PROFILE_STARTUP: "1", ...env }, encoding: "utf8",
  });
  assert.equal(run.status, 0, `the fresh process failed: ${run.stderr}`);
  const startup = {};
  for (const line of run.stderr.split("\n").filter((l) => l.startsWith('{"candlewick_startup"'))) {
    for (const [name, v] of Object.entries(JSON.parse(line).candlewick_startup)) {
      if (name === "what") continue;
      startup[name] = { s: (startup[name]?.s ?? 0) + v.s, calls: (startup[name]?.calls ?? 0) + v.calls };
    }
  }
  return { image: run.stdout.trim().split("\n").at(-1), startup };
}
const imageInFreshProcess = (cache) => freshProcess({ CANDLEWICK_PLAN_CACHE: cache }).image;

test("weights copied to the GPU from page-locked memory give the image candle's own upload gives", () => {
  const pinned = freshProcess({ CANDLEWICK_PLAN_CACHE: "off" });
  const pageable = freshProcess({ CANDLEWICK_PLAN_CACHE: "off", CANDLEWICK_PIN_WEIGHTS: "off" });
  console.log(JSON.stringify({ pinned: pinned.startup, pageable: pageable.startup }));
  assert.equal(pinned.image, pageable.image);
  assert.equal(pageable.startup.weights_pinned_copy, undefined, "CANDLEWICK_PIN_WEIGHTS=off still pinned");
  // The tiny fixture has no tensor of 1 MiB or more; an SD1.5-shaped model has 280.
  const least = MODEL === TINY_SD ? 0 : 100;
  const copies = pinned.startup.weights_pinned_copy;
  assert.ok((copies?.calls ?? 0) >= least, `pinned copies: ${JSON.stringify(copies)}`);
});

test("cuDNN plans, attention graphs and cuBLASLt algorithms read back from the disk cache give the image plans built in the process give", () => {
  const cache = mkdtempSync(join(tmpdir(), "candlewick-plans-"));
  // Every cached file as [path, bytes], over the cache's folders (one per library and GPU).
  const stored = () => readdirSync(cache).flatMap((d) => readdirSync(join(cache, d)).map((f) => join(cache, d, f)));
  try {
    const built = imageInFreshProcess("off");
    assert.equal(imageInFreshProcess(cache), built, "a process that fills the cache");
    const names = stored().map((path) => path.slice(cache.length + 1));
    for (const kind of [/^cudnn[^/]*\/conv-/, /^cudnn[^/]*\/sdpa-/, /^cublasLt[^/]*\/cublaslt-/]) {
      assert.ok(names.some((name) => kind.test(name)), `nothing matching ${kind} was written: ${names}`);
    }
    assert.equal(imageInFreshProcess(cache), built, "a process that reads the cache");
    // Damaged files (their key kept, their plan not the library's) are built again, and written again.
    const damaged = new Map();
    for (const path of stored()) {
      const bytes = readFileSync(path);
      const broken = Buffer.concat([bytes.subarray(0, bytes.indexOf(10) + 1), Buffer.from("{not a plan")]);
      writeFileSync(path, broken);
      damaged.set(path, broken);
    }
    assert.equal(imageInFreshProcess(cache), built, "a process that finds damaged files");
    const still = [...damaged].filter(([path, broken]) => readFileSync(path).equals(broken)).map(([path]) => path);
    assert.deepEqual(still, [], "damaged files not written again");
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

test("an impossible size is an out-of-memory error that says what to lower, and the pipeline works afterwards", async () => {
  const [before] = await pipe.generate(small(3));
  const usedBefore = pipe.gpuMemory().used;
  const started = Date.now();
  await assert.rejects(
    pipe.generate({ prompt: "too big", width: 8192, height: 8192, numImagesPerPrompt: 64, numInferenceSteps: 1 }),
    (e) => {
      assert.equal(e.code, "ERR_CANDLEWICK_OUT_OF_MEMORY");
      assert.match(e.message, /^cuda:0 ran out of memory generating 64 image\(s\) of 8192x8192: lower numImagesPerPrompt/);
      return true;
    },
  );
  console.log(`out of memory reported after ${Date.now() - started} ms`);
  const [after] = await pipe.generate(small(3));
  assert.deepEqual(after.data, before.data, "the call after the fault must reproduce the one before it");
  // At most what was in use before: the failed call frees its tensors and the cuDNN workspace it grew.
  const usedAfter = pipe.gpuMemory().used;
  assert.ok(usedAfter <= usedBefore, `GPU memory in use went from ${usedBefore} to ${usedAfter} bytes across the failed call`);
});

test("two calls at once on one pipeline queue and give the results they give one by one", async () => {
  const [a1] = await pipe.generate(small(5));
  const [b1] = await pipe.generate(small(6));
  const [[a2], [b2]] = await Promise.all([pipe.generate(small(5)), pipe.generate(small(6))]);
  assert.deepEqual(a2.data, a1.data);
  assert.deepEqual(b2.data, b1.data);
});

test("GPU memory and host memory after 200 generations equal those after 10, within 1%", async () => {
  const settle = () => { globalThis.gc?.(); globalThis.gc?.(); };
  const measure = () => { settle(); return { gpu_used: pipe.gpuMemory().used, gpu_reserved: pipe.gpuMemory().reserved, rss: process.memoryUsage().rss }; };
  for (let i = 0; i < 10; i++) await pipe.generate(small(100 + i));
  const at10 = measure();
  for (let i = 10; i < 200; i++) await pipe.generate(small(100 + i));
  const at200 = measure();
  const delta = (k) => (at200[k] - at10[k]) / at10[k];
  const result = { model: MODEL === TINY_SD ? "tiny-sd" : "sd15-shaped", call: small(0), gc: typeof globalThis.gc === "function", at10, at200,
    gpu_used_delta: delta("gpu_used"), gpu_reserved_delta: delta("gpu_reserved"), rss_delta: delta("rss") };
  console.log(JSON.stringify(result));
  if (process.env.CANDLEWICK_GPU_RESULTS) writeFileSync(`${process.env.CANDLEWICK_GPU_RESULTS}/leaks.json`, JSON.stringify(result, null, 1));
  assert.ok(Math.abs(result.gpu_used_delta) <= 0.01, `GPU memory in use moved by ${(100 * result.gpu_used_delta).toFixed(2)}%`);
  assert.ok(Math.abs(result.rss_delta) <= 0.01, `host RSS moved by ${(100 * result.rss_delta).toFixed(2)}%`);
});
