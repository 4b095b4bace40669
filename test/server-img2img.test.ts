// AUTOMATIC1111's POST /sdapi/v1/img2img on createServer() with the tiny model (test/fixtures/tiny-sd,
// made by scripts/make_fixtures.py), called with plain fetch as the web UI's clients call it: each
// image must be the one a direct `pipe.generate({ image, maskImage, strength, seed, ... })` makes
// (pixel for pixel); requests with images never share a GPU batch; every bad input answers 400 with
// the library's message naming the web UI's field, and the next request works.

import { crc32 } from "node:zlib";

import test from "ava";
import pngjs from "pngjs";

import { createServer, readTextChunks, type CandlewickServer, type GenerateOptions } from "../src/index.js";
import { StableDiffusionPipeline } from "../src/pipeline.js";
import { TINY_SD } from "./helpers/fixtures.js";

const quick = { numInferenceSteps: 4, width: 32, height: 32 };
let pipe: StableDiffusionPipeline;
let server: CandlewickServer;
let url: string;
/** The server's generate calls: images in each, and whether it had an image. */
const calls: { images: number; image: boolean }[] = [];
/** A 32x32 picture (the tiny model's own) as PNG bytes, and a mask: the left half white (repaint). */
let photo: Buffer;
let mask: Buffer;
let maskInverted: Buffer;

/** A PNG (RGB, no alpha) of `width` x `height` pixels with the gray level `level(x, y)`. */
function grayPng(width: number, height: number, level: (x: number, y: number) => number): Buffer {
  const png = new pngjs.PNG({ width, height });
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      png.data.fill(level(x, y), i, i + 3);
      png.data[i + 3] = 255;
    }
  }
  return pngjs.PNG.sync.write(png, { colorType: 2 });
}

test.before(async () => {
  pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu" });
  const [picture] = await pipe.generate({ prompt: "a harbour", seed: 3, ...quick });
  photo = Buffer.from(picture!.toPng());
  mask = grayPng(32, 32, (x) => (x < 16 ? 255 : 0));
  maskInverted = grayPng(32, 32, (x) => (x < 16 ? 0 : 255));
  const generate = pipe.generate.bind(pipe);
  pipe.generate = (o: GenerateOptions) => {
    calls.push({ images: Array.isArray(o.prompt) ? o.prompt.length : 1, image: o.image !== undefined });
    return generate(o);
  };
  server = await createServer({ model: pipe, maxBatchSize: 8, batchWindowMs: 50, modelName: "tiny-sd" });
  url = await server.listen({ port: 0 });
});

test.after.always(async () => {
  await server?.close();
  await pipe?.dispose();
});

/** The RGB pixels of a base64 PNG. */
function pixels(b64: string): { width: number; height: number; data: Buffer } {
  const png = pngjs.PNG.sync.read(Buffer.from(b64, "base64"));
  const rgb = Buffer.alloc(png.width * png.height * 3);
  for (let i = 0; i < png.width * png.height; i++) png.data.copy(rgb, i * 3, i * 4, i * 4 + 3);
  return { width: png.width, height: png.height, data: rgb };
}

/** What a direct generate makes, alone (with the pipeline's own generate: not counted as a server call). */
async function direct(options: Partial<GenerateOptions> & { seed: number }): Promise<Buffer> {
  const [image] = await StableDiffusionPipeline.prototype.generate.call(pipe, { ...quick, prompt: "a lighthouse", ...options });
  return Buffer.from(image!.data);
}

function post(body: unknown): Promise<Response> {
  return fetch(`${url}/sdapi/v1/img2img`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

interface Answer {
  images: string[];
  info: string;
  parameters: Record<string, unknown>;
}

const base = { prompt: "a lighthouse", steps: 4, width: 32, height: 32 };

test.serial("image to image over plain fetch: each image is a direct generate's with its seed and denoising_strength", async (t) => {
  calls.length = 0;
  const response = await post({
    ...base, init_images: [`data:image/png;base64,${photo.toString("base64")}`], denoising_strength: 0.6, seed: 5, batch_size: 2,
    sampler_name: "DDIM", cfg_scale: 5, resize_mode: 0, mask: "", mask_blur: 4, inpainting_fill: 0, image_cfg_scale: 1.5, enable_hr: false, styles: [],
  });
  t.is(response.status, 200);
  const answer = (await response.json()) as Answer;
  const info = JSON.parse(answer.info) as { all_seeds: number[]; denoising_strength: number; infotexts: string[]; width: number };
  t.deepEqual(info.all_seeds, [5, 6]);
  t.is(info.denoising_strength, 0.6);
  t.is(info.width, 32);
  t.regex(info.infotexts[0]!, /Denoising strength: 0\.6/);
  // Without a mask, the inpainting fields are ignored (as the web UI does). It leaves the images out of `parameters` unless include_init_images.
  t.is(answer.parameters.init_images, null);
  t.is(answer.parameters.prompt, "a lighthouse");
  t.deepEqual(calls, [{ images: 2, image: true }]);
  for (const [i, png] of answer.images.entries()) {
    const expected = await direct({ image: photo, strength: 0.6, seed: 5 + i, scheduler: "ddim", guidanceScale: 5 });
    t.true(pixels(png).data.equals(expected), `image ${i} is not the direct generate's`);
    const text = readTextChunks(Buffer.from(png, "base64"));
    t.is(text.task, "img2img");
    t.is(text.strength, "0.6");
  }
  // Not the text-to-image picture: the init image was used.
  t.false(pixels(answer.images[0]!).data.equals(await direct({ seed: 5, scheduler: "ddim", guidanceScale: 5 })));
});

test.serial("denoising_strength defaults to the web UI's 0.75; the size defaults to the init image's; include_init_images echoes them", async (t) => {
  const body = { prompt: "a lighthouse", steps: 4, init_images: [photo.toString("base64")], seed: 9, include_init_images: true };
  const response = await post(body);
  t.is(response.status, 200);
  const answer = (await response.json()) as Answer;
  t.is((JSON.parse(answer.info) as { denoising_strength: number }).denoising_strength, 0.75);
  t.deepEqual(answer.parameters.init_images, body.init_images);
  const image = pixels(answer.images[0]!);
  t.is(image.width, 32);
  t.true(image.data.equals(await direct({ image: photo, strength: 0.75, seed: 9 })));
});

test.serial("inpainting: mask (white repainted), inpainting_mask_invert 1 repaints the black instead", async (t) => {
  const fields = { ...base, init_images: [photo.toString("base64")], denoising_strength: 0.9, seed: 21 };
  const neutral = { mask_blur: 0, inpainting_fill: 1, inpaint_full_res: false, inpaint_full_res_padding: 32, mask_round: true };
  const plain = await post({ ...fields, ...neutral, mask: mask.toString("base64"), inpainting_mask_invert: 0 });
  t.is(plain.status, 200);
  const plainImage = pixels(((await plain.json()) as Answer).images[0]!);
  t.true(plainImage.data.equals(await direct({ image: photo, maskImage: mask, strength: 0.9, seed: 21 })));
  const inverted = await post({ ...fields, mask: `data:image/png;base64,${mask.toString("base64")}`, inpainting_mask_invert: 1 });
  t.is(inverted.status, 200);
  const answer = (await inverted.json()) as Answer;
  const invertedImage = pixels(answer.images[0]!);
  t.true(invertedImage.data.equals(await direct({ image: photo, maskImage: maskInverted, strength: 0.9, seed: 21 })));
  t.false(invertedImage.data.equals(plainImage.data));
  t.is(readTextChunks(Buffer.from(answer.images[0]!, "base64")).task, "inpaint");
});

test.serial("requests with images never share a GPU batch (with each other or with txt2img); each gets its own image", async (t) => {
  calls.length = 0;
  const other = grayPng(32, 32, (x, y) => (x * 8 + y * 3) % 256);
  const requests = [photo, other, photo].map((image, i) => post({ ...base, init_images: [image.toString("base64")], seed: 30 + i, denoising_strength: 0.5 }));
  const txt2img = fetch(`${url}/sdapi/v1/txt2img`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...base, seed: 40 }) });
  const answers = await Promise.all(requests);
  t.is((await txt2img).status, 200);
  t.is(calls.length, 4, JSON.stringify(calls));
  t.true(calls.every((c) => c.images === 1));
  for (const [i, image] of [photo, other, photo].entries()) {
    const png = ((await answers[i]!.json()) as Answer).images[0]!;
    t.true(pixels(png).data.equals(await direct({ image, strength: 0.5, seed: 30 + i })), `request ${i}`);
  }
});

/** A PNG whose header declares `width` x `height` pixels (valid chunk CRCs) over a few bytes of data. */
function declaredPng(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
    const out = Buffer.alloc(body.length + 8);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body), body.length + 4);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk("IHDR", ihdr), chunk("IDAT", Buffer.from([0x78, 0x9c, 0x03, 0x00])), chunk("IEND", Buffer.alloc(0))]);
}

const errors: [string, () => Record<string, unknown>, string][] = [
  ["bad base64", () => ({ init_images: ["iVBORw0K%GgoAAAA"] }),
    'Expected base64 PNG, JPEG or WebP image (optionally after data:image/png;base64,) for init_images[0] but received "iVBORw0K%GgoAAAA" ("%" at character 9 is not base64)'],
  ["bytes that are no image", () => ({ init_images: [Buffer.from("hello, not an image").toString("base64")] }),
    "Expected PNG, JPEG or WebP image for init_images[0] but received 19 bytes that are not an image (they start 68 65 6c 6c 6f 2c 20 6e)"],
  ["a decompression bomb (a header declaring 100000x100000 pixels)", () => ({ init_images: [declaredPng(100_000, 100_000).toString("base64")] }),
    "Expected image of 1 to 8192 pixels a side for init_images[0] but received a PNG declaring 100000x100000 pixels"],
  ["a mask of another size", () => ({ init_images: [photo.toString("base64")], mask: grayPng(16, 16, () => 255).toString("base64") }),
    "Expected mask of the image's size (32x32 pixels) for mask but received 16x16 pixels"],
  ["a mask bomb, inverted", () => ({ init_images: [photo.toString("base64")], mask: declaredPng(100_000, 8).toString("base64"), inpainting_mask_invert: 1 }),
    "Expected image of 1 to 8192 pixels a side for mask but received a PNG declaring 100000x8 pixels"],
  ["two init images", () => ({ init_images: [photo.toString("base64"), photo.toString("base64")] }),
    "Expected array of 1 base64 image for init_images but received an array of length 2 (Candlewick's server takes one init image a request: send one request per image)"],
  ["no init image", () => ({ init_images: [] }), "Expected array of 1 base64 image for init_images but received an array of length 0"],
  ["a URL", () => ({ init_images: ["https://example.com/a.png"] }),
    'Expected base64 PNG, JPEG or WebP image (optionally after data:image/png;base64,) for init_images[0] but received "https://example.com/a.png" (Candlewick\'s server does not fetch URLs)'],
  ["denoising_strength 0", () => ({ init_images: [photo.toString("base64")], denoising_strength: 0 }), "Expected number > 0 and <= 1 for denoising_strength but received 0"],
  ["a denoising_strength that leaves no step", () => ({ init_images: [photo.toString("base64")], denoising_strength: 0.1 }),
    "Expected denoising_strength x steps >= 1 (at least one step; 4 steps need denoising_strength >= 0.25) for denoising_strength but received 0.1"],
  ["mask_blur 4", () => ({ init_images: [photo.toString("base64")], mask: mask.toString("base64"), mask_blur: 4 }),
    "mask_blur 4 is not supported by Candlewick's server (leave it out or at 0: the mask is not blurred)"],
  ["inpainting_fill 0", () => ({ init_images: [photo.toString("base64")], mask: mask.toString("base64"), inpainting_fill: 0 }),
    'inpainting_fill 0 is not supported by Candlewick\'s server (leave it out or at 1, "original": the masked region starts from the image, as in diffusers)'],
  ["inpaint_full_res true", () => ({ init_images: [photo.toString("base64")], mask: mask.toString("base64"), inpaint_full_res: true }),
    'inpaint_full_res true is not supported by Candlewick\'s server (leave it out or at false, "Whole picture")'],
  ["resize_mode 1", () => ({ init_images: [photo.toString("base64")], resize_mode: 1 }),
    'resize_mode 1 is not supported by Candlewick\'s server (leave it out or at 0, "Just resize")'],
  ["inpainting_mask_invert 2", () => ({ init_images: [photo.toString("base64")], mask: mask.toString("base64"), inpainting_mask_invert: 2 }),
    "Expected 0 or 1 for inpainting_mask_invert but received 2"],
];

for (const [name, body, message] of errors) {
  test.serial(`400 for ${name}, with the message naming the field; the next request works`, async (t) => {
    const response = await post({ ...base, seed: 1, ...body() });
    t.is(response.status, 400);
    t.deepEqual(await response.json(), { error: "ERR_CANDLEWICK_INVALID_OPTION", detail: message });
    const next = await post({ ...base, seed: 2, init_images: [photo.toString("base64")], mask: mask.toString("base64") });
    t.is(next.status, 200);
  });
}

test.serial("bodies: img2img takes more than the 1 MiB of other routes (16 MiB by default); past that, 413", async (t) => {
  // A 600x600 noise picture (xorshift32): its base64 is about 1.4 MB, over maxBodyBytes, under maxImageBodyBytes.
  let state = 2463534242;
  const noise = () => ((state ^= state << 13), (state ^= state >>> 17), (state ^= state << 5), (state >>> 0) & 255);
  const noisy = grayPng(600, 600, noise);
  const big = { ...base, seed: 3, init_images: [noisy.toString("base64")], denoising_strength: 0.5 };
  t.true(JSON.stringify(big).length > 1 << 20);
  const response = await post(big);
  t.is(response.status, 200);
  t.true(pixels(((await response.json()) as Answer).images[0]!).data.equals(await direct({ image: noisy, strength: 0.5, seed: 3 })));
  const tooBig = await post({ ...base, init_images: ["A".repeat(16 << 20)] });
  t.is(tooBig.status, 413);
  t.regex(((await tooBig.json()) as { detail: string }).detail, /this server takes at most 16777216 \(its maxImageBodyBytes option\)$/);
  const txt2img = await fetch(`${url}/sdapi/v1/txt2img`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(big) });
  t.is(txt2img.status, 413);
});
