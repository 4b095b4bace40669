/** A generated image: 8-bit RGB pixels, and PNG encoding with pngjs. */

import { writeFile } from "node:fs/promises";

import pngjs from "pngjs";

import { withTextChunks } from "./png-text.js";

/** What to write into a PNG file beside the pixels. */
export interface PngOptions {
  /** Text entries (keyword to text), written as tEXt chunks (iTXt for text beyond Latin-1). Default: none. */
  text?: Readonly<Record<string, string>>;
}

/** Milliseconds per phase of one generate call, measured with the device synchronized between phases. */
export interface PhaseTimings {
  /** Tokenizer and CLIP text encoder. */
  textEncoderMs: number;
  /** The denoising loop: UNet, guidance and scheduler, every step. */
  denoiseMs: number;
  /** VAE decode and conversion to 8-bit RGB. */
  decodeMs: number;
}

/** The settings a call ran with, every default filled in (the model's size, the folder's scheduler). */
export interface ResolvedSettings {
  numInferenceSteps: number;
  guidanceScale: number;
  width: number;
  height: number;
  /** The scheduler's diffusers class ("PNDMScheduler", "DDIMScheduler", ...). */
  scheduler: string;
  /** Its config as it ran: the folder's fields with the call's merged over them, in camelCase. */
  schedulerConfig: Readonly<Record<string, unknown>>;
  /** What the call did: text to image, image to image (`image`) or inpainting (`image` and `maskImage`). */
  task: "txt2img" | "img2img" | "inpaint";
  /** How much of the image was repainted (img2img and inpaint; the call's or the default). */
  strength?: number;
  /** The call's `paddingMaskCrop`, when it set one (inpainting). */
  paddingMaskCrop?: number;
  /** The call's `clipSkip`, when it set one (> 0). */
  clipSkip?: number;
  /** SDXL: the call's `denoisingEnd`, when it set one. */
  denoisingEnd?: number;
  /** SDXL: the call's `denoisingStart`, when it set one. */
  denoisingStart?: number;
  /** SDXL: the size conditions as they ran (unset sizes are the output's). Absent for other models. */
  originalSize?: readonly [number, number];
  cropsCoordsTopLeft?: readonly [number, number];
  targetSize?: readonly [number, number];
  /** SDXL: the unconditional pass's own sizes, when the call gave both. */
  negativeOriginalSize?: readonly [number, number];
  negativeCropsCoordsTopLeft?: readonly [number, number];
  negativeTargetSize?: readonly [number, number];
}

/** One image from `generate`. */
export class GeneratedImage {
  /** Pixels per row. */
  readonly width: number;
  /** Rows. */
  readonly height: number;
  /** RGB, 3 bytes a pixel, rows top to bottom: width x height x 3 bytes. */
  readonly data: Uint8Array;
  /**
   * This image's seed: generating with it alone (same prompt and settings) makes this image again.
   * The call's `seeds` entry for it; else, for image i of a call with `seed` (or a drawn one),
   * seed + i (wrapping at 2^64), as web UIs number the images of a batch.
   */
  readonly seed: bigint;
  /** Where the call that made this image spent its time (shared by the images of one call). */
  readonly timings: PhaseTimings | undefined;
  /** The settings the call that made this image ran with (shared by the images of one call). */
  readonly settings: Readonly<ResolvedSettings> | undefined;

  constructor(width: number, height: number, data: Uint8Array, seed: bigint, timings?: PhaseTimings, settings?: ResolvedSettings) {
    if (data.length !== width * height * 3) {
      throw new RangeError(`Expected ${width * height * 3} bytes for a ${width}x${height} RGB image but received ${data.length}`);
    }
    this.width = width;
    this.height = height;
    this.data = data;
    this.seed = seed;
    this.timings = timings;
    this.settings = settings;
  }

  /**
   * The image as a PNG file (8-bit RGB, no alpha), with `options.text` in text chunks. A Node
   * Buffer, typed as the Uint8Array it is so that the declarations need no @types/node.
   */
  toPng(options: PngOptions = {}): Uint8Array {
    const png = new pngjs.PNG({ width: this.width, height: this.height, colorType: 2, inputColorType: 2, inputHasAlpha: false });
    png.data = Buffer.from(this.data.buffer, this.data.byteOffset, this.data.byteLength);
    const file = pngjs.PNG.sync.write(png, { colorType: 2, inputColorType: 2, inputHasAlpha: false });
    return options.text ? withTextChunks(file, options.text) : file;
  }

  /** Write the image as a PNG file. */
  async savePng(path: string, options: PngOptions = {}): Promise<void> {
    await writeFile(path, this.toPng(options));
  }
}
