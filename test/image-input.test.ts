// img2img and inpainting through the public API on the tiny model (test/fixtures/tiny-sd; the
// images in test/fixtures/images and the 9-channel UNet in test/fixtures/tiny-sd-inpaint are made
// by scripts/fixture_images.py): every way to pass an image gives the same picture, every bad
// image input rejects with its exact message, and the pipeline then makes what it made before.
// Parity with diffusers is pinned in crates/candlewick-core/tests/img2img_inpaint.rs.

import { cpSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";

import test from "ava";
import pngjs from "pngjs";

import { CandlewickError, readTextChunks, StableDiffusionPipeline } from "../src/index.js";
import { ROOT, TINY_SD } from "./helpers/fixtures.js";
import { tempDir } from "./helpers/temp.js";

const FIXTURES = join(ROOT, "test/fixtures");

const INPUT = join(FIXTURES, "images", "input.png");
const MASK = join(FIXTURES, "images", "mask.png");
const BASE = { prompt: "a red apple", numInferenceSteps: 2, seed: 5 } as const;
const IMG2IMG = { ...BASE, image: INPUT, strength: 1 } as const;
const INVALID = "ERR_CANDLEWICK_INVALID_OPTION";

let pipe: StableDiffusionPipeline;
let reference: Uint8Array;

test.before(async () => {
  pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", dtype: "f32" });
  reference = (await pipe.generate(IMG2IMG))[0]!.data;
});

/** A PNG whose header declares 100000x100000 pixels: a few dozen bytes. */
function bomb(): Uint8Array {
  const png = readFileSync(INPUT);
  const out = Buffer.from(png);
  out.writeUInt32BE(100000, 16);
  out.writeUInt32BE(100000, 20);
  // The IHDR CRC is recomputed so that only the size is wrong.
  out.writeUInt32BE(crc32(out.subarray(12, 29)), 29);
  return out;
}

function crc32(data: Uint8Array): number {
  let crc = ~0;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return ~crc >>> 0;
}

test("a path, the file's bytes and its decoded pixels give the same image to image", async (t) => {
  const bytes = readFileSync(INPUT);
  const decoded = pngjs.PNG.sync.read(bytes);
  const rgba = { width: decoded.width, height: decoded.height, channels: 4 as const, data: new Uint8Array(decoded.data) };
  const [fromBytes] = await pipe.generate({ ...IMG2IMG, image: new Uint8Array(bytes) });
  const [fromPixels] = await pipe.generate({ ...IMG2IMG, image: rgba });
  t.deepEqual(fromBytes!.data, reference);
  t.deepEqual(fromPixels!.data, reference);
  t.is(fromBytes!.settings?.task, "img2img");
  t.is(fromBytes!.settings?.strength, 1);
  t.deepEqual([fromBytes!.width, fromBytes!.height], [32, 32]);
  // A GeneratedImage goes back in as it is.
  const [again] = await pipe.generate({ ...BASE, image: fromBytes!, strength: 0.5 });
  t.is(again!.settings?.strength, 0.5);
});

test("inpainting runs with an ordinary and with a 9-channel UNet and reports its task; an inpainting model refuses text to image", async (t) => {
  const folder = tempDir("candlewick-inpaint-");
  try {
    for (const part of ["tokenizer", "text_encoder", "vae", "scheduler"]) cpSync(join(TINY_SD, part), join(folder, part), { recursive: true });
    cpSync(join(FIXTURES, "tiny-sd-inpaint"), folder, { recursive: true });
    const inpainting = await StableDiffusionPipeline.fromPretrained(folder, { device: "cpu", dtype: "f32" });
    for (const p of [pipe, inpainting]) {
      const [image] = await p.generate({ ...BASE, image: INPUT, maskImage: MASK });
      t.is(image!.settings?.task, "inpaint");
      t.is(image!.settings?.strength, 1);
    }
    await t.throwsAsync(inpainting.generate(BASE), {
      message: "Expected image and maskImage (this model's UNet is an inpainting UNet: it takes a mask and the masked image) for maskImage but received none",
    });
    await inpainting.dispose();
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
});

const rejectsThenGenerates = test.macro({
  async exec(t, options: unknown, message: string) {
    const error = await t.throwsAsync(pipe.generate(options as never), { instanceOf: CandlewickError, message });
    t.is(error?.code, INVALID);
    const [image] = await pipe.generate(IMG2IMG);
    t.deepEqual(image!.data, reference);
  },
  title: (given, _options: unknown, message: string) => `refused: ${given ?? message}`,
});

const input = readFileSync(INPUT);
test("a decompression bomb", rejectsThenGenerates, { ...IMG2IMG, image: bomb() }, "Expected image of 1 to 8192 pixels a side for image but received a PNG declaring 100000x100000 pixels");
test("a truncated PNG", rejectsThenGenerates, { ...IMG2IMG, image: input.subarray(0, 100) },
  /^Expected a complete PNG image for image but received 100 bytes that do not decode \(.+\)$/ as unknown as string);
test("a text file", rejectsThenGenerates, { ...IMG2IMG, image: new TextEncoder().encode("hello, world") },
  "Expected PNG, JPEG or WebP image for image but received 12 bytes that are not an image (they start 68 65 6c 6c 6f 2c 20 77)");
test("a missing file", rejectsThenGenerates, { ...IMG2IMG, image: "no/such/file.png" },
  'Expected path of a readable PNG, JPEG or WebP file for image but received "no/such/file.png" (no such file)');
test("a mask of another size", rejectsThenGenerates, { ...IMG2IMG, maskImage: { width: 16, height: 16, channels: 1, data: new Uint8Array(256) } },
  "Expected mask of the image's size (32x32 pixels) for maskImage but received 16x16 pixels");
test("a mask with alpha", rejectsThenGenerates, { ...IMG2IMG, maskImage: { width: 32, height: 32, channels: 4, data: new Uint8Array(4096) } },
  "Expected mask without an alpha channel (white = repaint, black = keep; as grayscale or RGB) for maskImage but received an image with an alpha channel");
test("strength 0", rejectsThenGenerates, { ...IMG2IMG, strength: 0 }, "Expected number > 0 and <= 1 for strength but received 0");
test("strength 1.5", rejectsThenGenerates, { ...IMG2IMG, strength: 1.5 }, "Expected number > 0 and <= 1 for strength but received 1.5");
test("strength without an image", rejectsThenGenerates, { ...BASE, strength: 0.5 },
  "Expected image with strength (strength is for image to image and inpainting) for image but received none");
test("a strength that runs no step", rejectsThenGenerates, { ...IMG2IMG, strength: 0.2 },
  "Expected strength x numInferenceSteps >= 1 (at least one step; 2 steps need strength >= 0.5) for strength but received 0.2");
test("raw pixels of the wrong length", rejectsThenGenerates, { ...IMG2IMG, image: { width: 4, height: 4, channels: 3, data: new Uint8Array(47) } },
  "Expected 48 bytes (4x4 pixels x 3 channels) for image.data but received 47 bytes");
test("an image of another type", rejectsThenGenerates, { ...IMG2IMG, image: 42 },
  "Expected path, Uint8Array of PNG, JPEG or WebP bytes, or { width, height, channels, data } for image but received 42");

test("the PNG of an img2img image records its task and strength when the CLI writes it", async (t) => {
  const { imageParameters, pngText, resolvedOf } = await import("../src/cli/parameters.js");
  const [image] = await pipe.generate({ ...BASE, image: INPUT, strength: 0.5 });
  const parameters = imageParameters({}, BASE.prompt, "", image!.seed, resolvedOf(image!), "tiny-sd");
  const text = readTextChunks(image!.toPng({ text: pngText(parameters) }));
  t.is(text.task, "img2img");
  t.is(text.strength, "0.5");
  t.regex(text.parameters!, /Denoising strength: 0\.5/);
});
