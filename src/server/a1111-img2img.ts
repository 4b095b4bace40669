/**
 * AUTOMATIC1111's `POST /sdapi/v1/img2img`: txt2img's fields (./a1111.ts) plus an init image
 * (image to image) and a mask (inpainting), as the library's `image`, `maskImage` and `strength`.
 *
 * The web UI's inpainting has steps diffusers' pipeline does not (blurring the mask, filling the
 * masked region before noising it, repainting only the masked region at full resolution, other
 * resize modes): those fields are accepted at the value that asks for none of it and refused
 * otherwise. `inpainting_mask_invert` is implemented (a PNG mask is inverted here, with pngjs).
 * Images are decoded by the library (the core's decoder, its size limits); its messages come back
 * with the web UI's field names (`init_images[0]`, `mask`, `denoising_strength`, `steps`).
 */

import pngjs from "pngjs";

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import type { GeneratedImage } from "../image.js";
import { MAX_INPUT_SIDE, type RawImageData } from "../image-input.js";
import { strength as strengthOf } from "../check-options.js";
import { describe, invalid } from "../validate.js";
import { checkBody, notSupported, parseCommon } from "./a1111.js";
import type { ImageRequest } from "./request.js";

/** The web UI's default denoising strength (diffusers' img2img default is 0.8). */
export const DEFAULT_DENOISING_STRENGTH = 0.75;

const USED = [
  "init_images", "denoising_strength", "mask", "inpainting_mask_invert", "include_init_images", "resize_mode",
  "mask_blur", "mask_blur_x", "mask_blur_y", "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding",
] as const;
/** img2img's fields that are fine at these values. */
const NEUTRAL: Record<string, (v: unknown) => boolean> = {
  // Only InstructPix2Pix models use it (the web UI ignores it for others); Candlewick loads none.
  image_cfg_scale: (v) => v === null || typeof v === "number",
  initial_noise_multiplier: (v) => v === null || v === 1,
  latent_mask: (v) => v === null,
  mask_round: (v) => v === true,
};

/** An img2img request: the library's request (with `image`, maybe `maskImage`, and `strength`). */
export interface Img2imgRequest extends ImageRequest {
  /** Echo `init_images` and `mask` in the answer's `parameters` (the web UI's `include_init_images`). */
  includeInitImages: boolean;
}

/** An img2img body as the library's request; throws CandlewickError (INVALID_OPTION) naming the field. */
export function parseImg2imgRequest(body: unknown): Img2imgRequest {
  const o = checkBody(body, USED, NEUTRAL);
  const request = parseCommon(o);
  if (!Array.isArray(o.init_images) || o.init_images.length === 0) throw invalid("array of 1 base64 image", "init_images", o.init_images);
  if (o.init_images.length > 1) {
    const message = `Expected array of 1 base64 image for init_images but received an array of length ${o.init_images.length} (Candlewick's server takes one init image a request: send one request per image)`;
    throw new CandlewickError(message, INVALID_OPTION);
  }
  if (o.resize_mode !== undefined && o.resize_mode !== 0) throw notSupported("resize_mode", o.resize_mode, 'leave it out or at 0, "Just resize"');
  const image = base64Image(o.init_images[0], "init_images[0]");
  const strength = o.denoising_strength === undefined || o.denoising_strength === null
    ? DEFAULT_DENOISING_STRENGTH : strengthOf(o.denoising_strength, "denoising_strength");
  const invert = o.inpainting_mask_invert === undefined ? false : maskInvert(o.inpainting_mask_invert);
  if (typeof o.include_init_images !== "undefined" && typeof o.include_init_images !== "boolean") {
    throw invalid("boolean", "include_init_images", o.include_init_images);
  }
  const settings = { ...request.settings, image, strength };
  // The web UI reads an empty mask as none (`if mask:`), and so does this server.
  if (o.mask !== undefined && o.mask !== null && o.mask !== "") {
    checkInpaintFields(o);
    const mask = base64Image(o.mask, "mask");
    Object.assign(settings, { maskImage: invert ? invertedMask(mask) : mask });
  }
  return { ...request, settings, includeInitImages: o.include_init_images === true };
}

/**
 * The web UI's inpainting steps that diffusers' pipeline does not have: only their "none of it"
 * values pass (without a mask the web UI ignores them, and so does this server).
 */
function checkInpaintFields(o: Record<string, unknown>): void {
  const zero = (v: unknown) => v === undefined || v === null || v === 0;
  // `mask_blur` overrides `mask_blur_x` and `mask_blur_y` when given, as in the web UI.
  const blurs = o.mask_blur !== undefined && o.mask_blur !== null ? (["mask_blur"] as const) : (["mask_blur_x", "mask_blur_y"] as const);
  for (const key of blurs) if (!zero(o[key])) throw notSupported(key, o[key], "leave it out or at 0: the mask is not blurred");
  if (o.inpainting_fill !== undefined && o.inpainting_fill !== 1) {
    throw notSupported("inpainting_fill", o.inpainting_fill, 'leave it out or at 1, "original": the masked region starts from the image, as in diffusers');
  }
  if (o.inpaint_full_res !== undefined && o.inpaint_full_res !== false && o.inpaint_full_res !== 0) {
    throw notSupported("inpaint_full_res", o.inpaint_full_res, 'leave it out or at false, "Whole picture"');
  }
}

function maskInvert(value: unknown): boolean {
  if (value === 0 || value === 1 || typeof value === "boolean") return value === 1 || value === true;
  throw invalid("0 or 1", "inpainting_mask_invert", value);
}

const BASE64 = "base64 PNG, JPEG or WebP image (optionally after data:image/png;base64,)";

/** The bytes of a base64 image (the web UI's encoding, with or without a data URL's prefix). */
export function base64Image(value: unknown, field: string): Buffer {
  if (typeof value !== "string") throw invalid(BASE64, field, value);
  if (/^https?:\/\//i.test(value)) throw new CandlewickError(`Expected ${BASE64} for ${field} but received ${describe(value)} (Candlewick's server does not fetch URLs)`, INVALID_OPTION);
  const prefix = /^data:[^,]*,/.exec(value);
  if (prefix && !/^data:image\/[\w.+-]+;base64,$/i.test(prefix[0])) {
    throw new CandlewickError(`Expected ${BASE64} for ${field} but received ${describe(value)} (a data URL that is not a base64 image)`, INVALID_OPTION);
  }
  // Line breaks (some encoders wrap at 76 characters) are skipped; anything else outside base64's
  // alphabets (standard and URL-safe) is refused, not silently dropped.
  const start = prefix ? prefix[0].length : 0;
  const data = value.slice(start).replace(/={1,2}[\r\n]*$/, "");
  const bad = /[^A-Za-z0-9+/_\-\r\n]/.exec(data);
  const text = data.replace(/[\r\n]/g, "");
  if (text.length === 0 || bad || text.length % 4 === 1) {
    const why = bad ? `${JSON.stringify(bad[0])} at character ${start + bad.index + 1} is not base64` : text.length === 0 ? "no data" : "a length no base64 text has";
    throw new CandlewickError(`Expected ${BASE64} for ${field} but received ${describe(value)} (${why})`, INVALID_OPTION);
  }
  return Buffer.from(text, "base64");
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * `inpainting_mask_invert`: the mask's pixels inverted (black repainted). PNG only (pngjs decodes
 * it here). A mask the library would refuse (too large, an alpha channel) goes on unchanged so that
 * its own message answers.
 */
function invertedMask(bytes: Buffer): Buffer | RawImageData {
  if (!bytes.subarray(0, 8).equals(PNG_SIGNATURE)) {
    throw new CandlewickError(`Expected PNG image for mask (inpainting_mask_invert inverts PNG masks only) but received ${bytes.length} bytes that are not a PNG file`, INVALID_OPTION);
  }
  // The header's size, before pngjs allocates anything for the pixels.
  if (bytes.length >= 24 && (bytes.readUInt32BE(16) > MAX_INPUT_SIDE || bytes.readUInt32BE(20) > MAX_INPUT_SIDE)) return bytes;
  let png: pngjs.PNGWithMetadata;
  try {
    png = pngjs.PNG.sync.read(bytes);
  } catch (error) {
    throw new CandlewickError(`Expected a complete PNG image for mask but received ${bytes.length} bytes that do not decode (${(error as Error).message})`, INVALID_OPTION);
  }
  if (png.alpha) return bytes;
  const pixels = png.width * png.height;
  const data = new Uint8Array(pixels * 3);
  for (let i = 0; i < pixels; i++) for (let c = 0; c < 3; c++) data[i * 3 + c] = 255 - png.data[i * 4 + c]!;
  return { width: png.width, height: png.height, channels: 3, data };
}

/** The library's names in its messages, as the web UI names those fields. */
const RENAMES: [RegExp, string][] = [
  [/\bfor image\b/g, "for init_images[0]"],
  [/\bmaskImage\b/g, "mask"],
  [/\bstrength\b/g, "denoising_strength"],
  [/\bnumInferenceSteps\b/g, "steps"],
];

/** A library error of an img2img request, its message naming the web UI's fields. */
export function inWebUiNames(error: unknown): unknown {
  if (!(error instanceof CandlewickError) || error.code !== INVALID_OPTION) return error;
  const message = RENAMES.reduce((m, [from, to]) => m.replace(from, to), error.message);
  return message === error.message ? error : new CandlewickError(message, error.code, { cause: error });
}

/** img2img's answer `info` fields beyond txt2img's; `parameters` without the images unless asked for (as the web UI). */
export function img2imgExtras(body: Record<string, unknown>, r: Img2imgRequest, images: GeneratedImage[]) {
  const first = images[0];
  const info = { denoising_strength: r.settings.strength, ...(first ? { width: first.width, height: first.height } : {}) };
  const parameters = r.includeInitImages ? body : { ...body, init_images: null, mask: null };
  return { info, parameters };
}
