/** Several generated images side by side in one PNG (pngjs), each enlarged by whole pixels. */

import pngjs from "pngjs";

import { CandlewickError, INVALID_OPTION } from "./errors.js";
import type { GeneratedImage } from "./image.js";
import { integerIn } from "./validate.js";

/** How `imageGrid` lays the images out. */
export interface GridOptions {
  /** Images per row. Default: all in one row. */
  columns?: number;
  /** Each image pixel becomes a scale x scale square (nearest neighbour). Default 1. */
  scale?: number;
  /** Pixels between cells and around the grid. Default 4. */
  gap?: number;
  /** RGB of the gaps. Default white. */
  background?: readonly [number, number, number];
}

/** The images (all of one size), row by row, as an 8-bit RGB PNG (a Buffer under Node). */
export function imageGrid(images: readonly GeneratedImage[], options: GridOptions = {}): Uint8Array {
  const first = images[0];
  if (!first) throw new CandlewickError("Expected at least one image for images but received none", INVALID_OPTION);
  const columns = options.columns ?? images.length;
  const scale = options.scale ?? 1;
  const gap = options.gap ?? 4;
  const [br, bg, bb] = options.background ?? [255, 255, 255];
  integerIn(columns, "columns", 1, 1024);
  integerIn(scale, "scale", 1, 64);
  integerIn(gap, "gap", 0, 1024);
  const cellW = first.width * scale;
  const cellH = first.height * scale;
  const rows = Math.ceil(images.length / columns);
  const width = gap + columns * (cellW + gap);
  const height = gap + rows * (cellH + gap);
  const png = new pngjs.PNG({ width, height, colorType: 2, inputColorType: 2, inputHasAlpha: false });
  const out = Buffer.alloc(width * height * 3);
  for (let i = 0; i < out.length; i += 3) out.set([br, bg, bb], i);
  images.forEach((image, n) => {
    if (image.width !== first.width || image.height !== first.height) {
      const message = `Expected an image of ${first.width}x${first.height} (the first image's size) for images[${n}] but received ${image.width}x${image.height}`;
      throw new CandlewickError(message, INVALID_OPTION);
    }
    const x0 = gap + (n % columns) * (cellW + gap);
    const y0 = gap + Math.floor(n / columns) * (cellH + gap);
    for (let y = 0; y < cellH; y++) {
      const src = Math.floor(y / scale) * image.width * 3;
      const dst = ((y0 + y) * width + x0) * 3;
      for (let x = 0; x < cellW; x++) {
        const s = src + Math.floor(x / scale) * 3;
        out[dst + x * 3] = image.data[s]!;
        out[dst + x * 3 + 1] = image.data[s + 1]!;
        out[dst + x * 3 + 2] = image.data[s + 2]!;
      }
    }
  });
  png.data = out;
  return pngjs.PNG.sync.write(png, { colorType: 2, inputColorType: 2, inputHasAlpha: false });
}
