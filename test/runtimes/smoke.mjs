// The published package's smoke test, for Node, Bun and Deno alike: load the tiny model that ships
// in the package (test/fixtures/tiny-sd, made by scripts/make_fixtures.py) through dist/ (npm run
// build), generate one 64x64 image with progress, save it as a PNG and read it back.
// Deno: deno run --allow-ffi --allow-read --allow-env --allow-write test/runtimes/smoke.mjs

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import pngjs from "pngjs";

import { StableDiffusionPipeline } from "../../dist/index.js";

const runtime = globalThis.Deno ? "deno" : globalThis.Bun ? "bun" : "node";
const model = fileURLToPath(new URL("../fixtures/tiny-sd", import.meta.url));

function check(condition, what) {
  if (!condition) throw new Error(`smoke (${runtime}): ${what}`);
}

const pipe = await StableDiffusionPipeline.fromPretrained(model, { device: "cpu" });
const steps = [];
const [image] = await pipe.generate({
  prompt: "a red apple",
  width: 64,
  height: 64,
  numInferenceSteps: 3,
  seed: 42,
  onProgress: ({ step }) => steps.push(step),
});
check(steps.join(",") === "1,2,3", `progress steps were ${steps.join(",")}`);
check(image.width === 64 && image.height === 64 && image.data.length === 64 * 64 * 3, "image size");

const dir = mkdtempSync(join(tmpdir(), "candlewick-smoke-"));
try {
  const path = join(dir, "smoke.png");
  await image.savePng(path);
  const png = pngjs.PNG.sync.read(readFileSync(path));
  check(png.width === 64 && png.height === 64, `PNG is ${png.width}x${png.height}`);
  for (let i = 0; i < 64 * 64; i++) {
    for (let c = 0; c < 3; c++) check(png.data[i * 4 + c] === image.data[i * 3 + c], `PNG pixel ${i} differs`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const controller = new AbortController();
const cancelled = pipe.generate({
  prompt: "a red apple", width: 64, height: 64, numInferenceSteps: 10, seed: 1, signal: controller.signal,
  onProgress: ({ step }) => step === 1 && controller.abort(),
});
const error = await cancelled.then(() => undefined, (e) => e);
check(error?.name === "AbortError" && error?.code === "ERR_CANDLEWICK_CANCELLED", `abort gave ${error}`);

console.log(`smoke ok: ${runtime}, ${pipe.device} ${pipe.dtype}, ${image.width}x${image.height}, seed ${image.seed}`);
