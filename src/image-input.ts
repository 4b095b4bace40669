/**
 * Input images (img2img's and inpainting's `image`, inpainting's `maskImage`): a file path, the
 * bytes of a PNG, JPEG or WebP file, or raw pixels. The shape is checked here; the bytes are
 * decoded by the Rust core (the `image` crate: the same decoder under Node, Bun and Deno), which
 * reads the size from the file's header and refuses an oversized image before decoding it.
 */

import { readFile } from "node:fs/promises";

import type { RawImageInput } from "./generated/native.js";
import { CandlewickError, INVALID_OPTION } from "./errors.js";
import { checkOptionsObject, count, describe, integerIn, invalid } from "./validate.js";

/** The most pixels along one side of an input image (the core's limit, checked from the header). */
export const MAX_INPUT_SIDE = 8192;

/** Decoded pixels, rows top to bottom. */
export interface RawImageData {
  width: number;
  height: number;
  /** 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA. Default: data.length / (width x height) (3 for a `GeneratedImage`). */
  channels?: 1 | 2 | 3 | 4;
  /** width x height x channels bytes. */
  data: Uint8Array | Uint8ClampedArray;
}

/**
 * An image: a path to a PNG, JPEG or WebP file; the file's bytes (a Buffer or Uint8Array); or
 * decoded pixels (`{ width, height, channels, data }`: a canvas's ImageData, a `GeneratedImage`).
 */
export type ImageSource = string | Uint8Array | RawImageData;

/** An image option, checked: a path still to read, or what crosses into Rust. @internal */
export type CheckedImage = { path: string } | { raw: RawImageInput };

/** Check an image option's shape (paths are read later, by `readImage`). @internal */
export function checkImage(value: unknown, option: string): CheckedImage {
  if (typeof value === "string") {
    if (value.length === 0) throw invalid("path, Uint8Array of PNG, JPEG or WebP bytes, or { width, height, channels, data }", option, value);
    return { path: value };
  }
  if (value instanceof Uint8Array) {
    if (value.length === 0) throw invalid("PNG, JPEG or WebP bytes", option, "0 bytes");
    return { raw: { data: value } };
  }
  if (typeof value === "object" && value !== null && !Array.isArray(value) && "data" in value && "width" in value) {
    return { raw: checkRaw(value, option) };
  }
  throw invalid("path, Uint8Array of PNG, JPEG or WebP bytes, or { width, height, channels, data }", option, value);
}

function checkRaw(value: object, option: string): RawImageInput {
  // A GeneratedImage (or an ImageData) has more own properties than these: read only what is needed.
  const o = value as Record<string, unknown>;
  const picked = Object.fromEntries(["width", "height", "channels", "data"].map((k) => [k, o[k]]).filter(([, v]) => v !== undefined));
  checkOptionsObject(picked, option, ["width", "height", "channels", "data"]);
  const width = integerIn(o.width, `${option}.width`, 1, MAX_INPUT_SIDE);
  const height = integerIn(o.height, `${option}.height`, 1, MAX_INPUT_SIDE);
  const data = o.data;
  if (!(data instanceof Uint8Array || data instanceof Uint8ClampedArray)) throw invalid("Uint8Array", `${option}.data`, data);
  if (o.channels === undefined) {
    const channels = data.length / (width * height);
    if (![1, 2, 3, 4].includes(channels)) {
      const message = `Expected 1, 2, 3 or 4 bytes a pixel (${width}x${height} pixels: ${[1, 2, 3, 4].map((c) => c * width * height).join(", ")} bytes) for ${option}.data but received ${count(data.length, "byte")}`;
      throw new CandlewickError(message, INVALID_OPTION);
    }
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width, height, channels };
  }
  const channels = integerIn(o.channels, `${option}.channels`, 1, 4);
  const bytes = width * height * channels;
  if (data.length !== bytes) {
    const message = `Expected ${count(bytes, "byte")} (${width}x${height} pixels x ${count(channels, "channel")}) for ${option}.data but received ${count(data.length, "byte")}`;
    throw new CandlewickError(message, INVALID_OPTION);
  }
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width, height, channels };
}

/** The checked image as the binding takes it: a path's file read now. @internal */
export async function readImage(image: CheckedImage, option: string): Promise<RawImageInput> {
  if ("raw" in image) return image.raw;
  try {
    return { data: await readFile(image.path) };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "";
    const why = code === "ENOENT" ? "no such file" : code === "EISDIR" ? "a folder" : (error as Error).message;
    throw new CandlewickError(`Expected path of a readable PNG, JPEG or WebP file for ${option} but received ${describe(image.path)} (${why})`, INVALID_OPTION, { cause: error });
  }
}
