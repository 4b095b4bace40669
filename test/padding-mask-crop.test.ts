// Inpainting with `paddingMaskCrop` (diffusers' padding_mask_crop) through the public API on the
// tiny model: the output keeps the image's size, the kept region is the image's own pixels, the
// settings and PNG text record it, and bad values reject with their exact message, the pipeline
// making what it made before. Parity with diffusers (the crop box, the processed inputs, every
// UNet call, the pasted output) is pinned in crates/candlewick-core/tests/padding_mask_crop.rs.

import { readFileSync } from "node:fs";
import { join } from "node:path";

import test from "ava";
import pngjs from "pngjs";

import { CandlewickError, readTextChunks, StableDiffusionPipeline } from "../src/index.js";
import { ROOT, TINY_SD } from "./helpers/fixtures.js";

const INPUT = join(ROOT, "test/fixtures/images/input.png");
const MASK = join(ROOT, "test/fixtures/images/mask.png");
const CROP = { prompt: "a red apple", numInferenceSteps: 2, seed: 5, image: INPUT, maskImage: MASK, paddingMaskCrop: 2, width: 32, height: 24 } as const;

let pipe: StableDiffusionPipeline;
let reference: Uint8Array;

test.before(async () => {
  pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", dtype: "f32" });
  reference = (await pipe.generate(CROP))[0]!.data;
});

test("the output keeps the image's size, its unmasked pixels are the image's, and the settings record the crop", async (t) => {
  const [image] = await pipe.generate(CROP);
  t.deepEqual([image!.width, image!.height], [32, 32]);
  t.deepEqual(image!.data, reference);
  t.like(image!.settings, { task: "inpaint", paddingMaskCrop: 2, width: 32, height: 24 });
  const input = pngjs.PNG.sync.read(readFileSync(INPUT));
  const mask = pngjs.PNG.sync.read(readFileSync(MASK));
  let kept = 0;
  let repainted = 0;
  for (let i = 0; i < 32 * 32; i++) {
    const same = [0, 1, 2].every((c) => image!.data[i * 3 + c] === input.data[i * 4 + c]);
    if (mask.data[i * 4] === 0) {
      t.true(same, `pixel ${i} is outside the mask but changed`);
      kept++;
    } else if (!same) repainted++;
  }
  t.is(kept, 32 * 32 - 16 * 16);
  t.true(repainted > 0, "nothing inside the mask was repainted");
  // Without the crop the run is another one (the whole image at 32x24).
  const [whole] = await pipe.generate({ ...CROP, paddingMaskCrop: undefined });
  t.deepEqual([whole!.width, whole!.height], [32, 24]);
  t.is(whole!.settings?.paddingMaskCrop, undefined);
});

test("the PNG the CLI writes records paddingMaskCrop", async (t) => {
  const { imageParameters, pngText, resolvedOf } = await import("../src/cli/parameters.js");
  const [image] = await pipe.generate(CROP);
  const parameters = imageParameters({}, CROP.prompt, "", image!.seed, resolvedOf(image!), "tiny-sd");
  t.like(readTextChunks(image!.toPng({ text: pngText(parameters) })), { task: "inpaint", paddingMaskCrop: "2" });
});

const rejectsThenGenerates = test.macro({
  async exec(t, options: unknown, message: string) {
    const error = await t.throwsAsync(pipe.generate(options as never), { instanceOf: CandlewickError, message });
    t.is(error?.code, "ERR_CANDLEWICK_INVALID_OPTION");
    const [image] = await pipe.generate(CROP);
    t.deepEqual(image!.data, reference);
  },
  title: (given, _options: unknown, message: string) => `refused: ${given ?? message}`,
});

test("without a mask", rejectsThenGenerates, { ...CROP, maskImage: undefined },
  "Expected image and maskImage with paddingMaskCrop 2 (it inpaints the region around the mask and pastes it back into the image) for maskImage but received none");
test("without an image", rejectsThenGenerates, { ...CROP, image: undefined },
  "Expected image with maskImage (inpainting repaints the image) for image but received none");
test("negative", rejectsThenGenerates, { ...CROP, paddingMaskCrop: -1 }, "Expected integer between 0 and 8192 for paddingMaskCrop but received -1");
test("not an integer", rejectsThenGenerates, { ...CROP, paddingMaskCrop: 1.5 }, "Expected integer between 0 and 8192 for paddingMaskCrop but received 1.5");
test("a string", rejectsThenGenerates, { ...CROP, paddingMaskCrop: "2" }, 'Expected integer between 0 and 8192 for paddingMaskCrop but received "2"');
test("an all-black mask", rejectsThenGenerates, { ...CROP, maskImage: { width: 32, height: 32, channels: 1, data: new Uint8Array(1024) } },
  "Expected maskImage with at least one nonzero pixel with paddingMaskCrop (the crop is the region around the mask) for maskImage but received a mask with no nonzero pixel");
test("a mask of another size", rejectsThenGenerates, { ...CROP, maskImage: { width: 16, height: 16, channels: 1, data: new Uint8Array(256).fill(255) } },
  "Expected mask of the image's size (32x32 pixels) for maskImage but received 16x16 pixels");
test("latents as the output", async (t) => {
  await t.throwsAsync(pipe.generateLatents(CROP), {
    instanceOf: CandlewickError,
    message: "Expected no paddingMaskCrop when latents are the output (the inpainted crop is pasted back into the image) for paddingMaskCrop but received 2",
  });
  t.deepEqual((await pipe.generate(CROP))[0]!.data, reference);
});

test("generateBatch inputs take paddingMaskCrop, and share a call only with inputs that crop alike", async (t) => {
  const { paddingMaskCrop: _, prompt, seed, ...shared } = CROP;
  const inputs = [{ prompt, seed, paddingMaskCrop: 2 }, { prompt, seed }, { prompt, seed: 6, paddingMaskCrop: 2 }];
  const results = [];
  for await (const result of pipe.generateBatch(inputs, { batchSize: 4, defaults: shared })) results.push(result);
  results.sort((a, b) => a.index - b.index);
  t.deepEqual(results.map((r) => [r.image.width, r.image.height]), [[32, 32], [32, 24], [32, 32]]);
  t.deepEqual(results.map((r) => r.image.settings?.paddingMaskCrop), [2, undefined, 2]);
  // The first is the one-image call's picture (same seed, same crop).
  t.deepEqual(results[0]!.image.data, reference);
});
