// Previews of the latents in onProgress (previewEvery), the CLI's --preview file, and the VAE
// tiling options, on the tiny model (test/fixtures/tiny-sd, made by scripts/make_fixtures.py).
// The tiled decode's parity with diffusers is in crates/candlewick-core/tests/vae_tiling.rs.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

import test from "ava";
import pngjs from "pngjs";

import { StableDiffusionPipeline, type GenerateProgress } from "../src/index.js";
import { cli, scratch } from "./helpers/cli.js";
import { TINY_SD } from "./helpers/fixtures.js";

let pipe: StableDiffusionPipeline;
test.before(async () => {
  pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", dtype: "f32" });
});

test("previewEvery gives onProgress one small RGB picture per image every N steps and after the last", async (t) => {
  const seen: GenerateProgress[] = [];
  const images = await pipe.generate({
    prompt: "a red apple", width: 32, height: 48, numInferenceSteps: 5, numImagesPerPrompt: 2, seed: 1, previewEvery: 2,
    onProgress: (p) => seen.push(p),
  });
  t.deepEqual(seen.map((p) => p.step), [1, 2, 3, 4, 5]);
  t.deepEqual(seen.filter((p) => p.preview).map((p) => p.step), [2, 4, 5]);
  for (const p of seen.filter((p) => p.preview)) {
    t.is(p.preview!.length, images.length);
    for (const preview of p.preview!) {
      // tiny-sd's VAE scale factor is 2: 16x24 latent cells.
      t.deepEqual([preview.width, preview.height, preview.data.length], [16, 24, 16 * 24 * 3]);
    }
  }
  t.notDeepEqual(seen[1]!.preview![0]!.data, seen[4]!.preview![0]!.data, "the latents change between previews");
  const plain: GenerateProgress[] = [];
  await pipe.generate({ prompt: "a red apple", width: 16, height: 16, numInferenceSteps: 2, seed: 1, onProgress: (p) => plain.push(p) });
  t.true(plain.every((p) => p.preview === undefined), "no previews unless asked");
});

test("vaeTiling and vaeSlicing decode a picture larger than a tile", async (t) => {
  const options = { prompt: "a red apple", width: 96, height: 80, numInferenceSteps: 1, numImagesPerPrompt: 2, seed: 2 } as const;
  const [tiled] = await pipe.generate({ ...options, vaeTiling: true, vaeSlicing: true });
  const [whole] = await pipe.generate(options);
  t.deepEqual([tiled!.width, tiled!.height], [96, 80]);
  t.notDeepEqual(tiled!.data, whole!.data, "tiny-sd's tiles are 64 pixels: the seams change the picture");
  await t.throwsAsync(pipe.generate({ ...options, vaeTiling: "yes" as never }), { message: 'Expected boolean for vaeTiling but received "yes"' });
  await t.throwsAsync(pipe.generate({ ...options, previewEvery: 0 }), { message: "Expected integer between 1 and 1000 for previewEvery but received 0" });
});

test("the CLI writes --preview while it denoises", async (t) => {
  const dir = scratch();
  const preview = join(dir, "preview.png");
  const run = await cli("generate", "a red apple", "--model", TINY_SD, "--steps", "3", "--width", "32", "--height", "32", "--preview", preview,
    "--preview-every", "1", "--vae-tiling", "--out", join(dir, "out.png"), "-q");
  t.is(run.code, 0, run.stderr);
  t.true(existsSync(preview));
  const png = pngjs.PNG.sync.read(readFileSync(preview));
  t.deepEqual([png.width, png.height], [16, 16]);
});
