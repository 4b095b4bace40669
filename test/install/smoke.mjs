// Run inside a project that installed candlewick from its tarballs (test/install.test.ts): generate
// with the tiny model that ships in the package (or the hub id in SMOKE_MODEL, downloaded from
// HF_ENDPOINT), under whichever runtime runs this file, and print one JSON line saying which native
// build loaded and what came out.
// Deno: deno run --allow-ffi --allow-read --allow-env [--allow-net --allow-write] smoke.mjs

import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

import { StableDiffusionPipeline, nativeInfo } from "candlewick";

const runtime = globalThis.Deno ? "deno" : globalThis.Bun ? "bun" : "node";
const model = process.env.SMOKE_MODEL || join(dirname(createRequire(import.meta.url).resolve("candlewick/package.json")), "test/fixtures/tiny-sd");
const pipe = await StableDiffusionPipeline.fromPretrained(model, { device: "auto" });
const [image] = await pipe.generate({ prompt: "a red apple", width: 32, height: 32, numInferenceSteps: 2, seed: 42 });
const { location, cuda, skipped } = nativeInfo();
console.log(JSON.stringify({
  runtime,
  location,
  cuda,
  skipped,
  device: pipe.device,
  modelDir: pipe.modelDir,
  deviceReason: pipe.deviceReason,
  sha256: createHash("sha256").update(image.data).digest("hex"),
}));
