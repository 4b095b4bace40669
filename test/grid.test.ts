// imageGrid (src/grid.ts): layout, enlargement and its errors, on hand-made images (no model needed).

import test from "ava";
import pngjs from "pngjs";

import { GeneratedImage, imageGrid } from "../src/index.js";

/** A w x h image filled with one colour. */
const solid = (w: number, h: number, rgb: [number, number, number]) =>
  new GeneratedImage(w, h, Uint8Array.from({ length: w * h * 3 }, (_, i) => rgb[i % 3]!), 0n);

const pixel = (png: pngjs.PNG, x: number, y: number) => [...png.data.subarray((y * png.width + x) * 4, (y * png.width + x) * 4 + 3)];

test("places images row by row, enlarged by whole pixels, with gaps of the background colour", (t) => {
  const images = [solid(2, 3, [255, 0, 0]), solid(2, 3, [0, 255, 0]), solid(2, 3, [0, 0, 255])];
  const png = pngjs.PNG.sync.read(imageGrid(images, { columns: 2, scale: 2, gap: 1, background: [9, 9, 9] }));
  t.is(png.width, 1 + 2 * (4 + 1));
  t.is(png.height, 1 + 2 * (6 + 1));
  t.deepEqual(pixel(png, 0, 0), [9, 9, 9]);
  t.deepEqual(pixel(png, 1, 1), [255, 0, 0]);
  t.deepEqual(pixel(png, 4, 6), [255, 0, 0]); // the last enlarged pixel of the first cell
  t.deepEqual(pixel(png, 5, 1), [9, 9, 9]); // the gap between the cells
  t.deepEqual(pixel(png, 6, 1), [0, 255, 0]);
  t.deepEqual(pixel(png, 1, 8), [0, 0, 255]); // second row
  t.deepEqual(pixel(png, 6, 8), [9, 9, 9]); // the empty fourth cell
});

test("keeps each image's pixels in place", (t) => {
  const data = Uint8Array.from({ length: 2 * 2 * 3 }, (_, i) => i * 10);
  const png = pngjs.PNG.sync.read(imageGrid([new GeneratedImage(2, 2, data, 0n)], { gap: 0 }));
  t.deepEqual(pixel(png, 1, 0), [30, 40, 50]);
  t.deepEqual(pixel(png, 0, 1), [60, 70, 80]);
});

test("refuses no images, images of different sizes and bad layout numbers", (t) => {
  t.throws(() => imageGrid([]), { code: "ERR_CANDLEWICK_INVALID_OPTION", message: "Expected at least one image for images but received none" });
  t.throws(() => imageGrid([solid(2, 2, [0, 0, 0]), solid(4, 2, [0, 0, 0])]), { message: "Expected an image of 2x2 (the first image's size) for images[1] but received 4x2" });
  t.throws(() => imageGrid([solid(2, 2, [0, 0, 0])], { columns: 0 }), { message: "Expected integer between 1 and 1024 for columns but received 0" });
  t.throws(() => imageGrid([solid(2, 2, [0, 0, 0])], { scale: 1.5 }), { message: "Expected integer between 1 and 64 for scale but received 1.5" });
  t.throws(() => imageGrid([solid(2, 2, [0, 0, 0])], { gap: -1 }), { message: "Expected integer between 0 and 1024 for gap but received -1" });
});
