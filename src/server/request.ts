/**
 * What both APIs' requests become: `count` images of one prompt, image i with seed + i (as the
 * library and the web UIs number a batch), the settings checked by the library's own batch-input
 * check (which also gives the key that decides which requests may share a GPU batch).
 */

import type { AbortSignalLike } from "../errors.js";
import type { GeneratedImage } from "../image.js";
import { checkInput, randomSeed, type BatchDefaults } from "../batch/inputs.js";
import type { ModelFiles } from "../cli/hashes.js";
import { imageParameters, pngText, resolvedOf } from "../cli/parameters.js";
import type { BatchRequest } from "./batcher.js";

/** One request, in the library's terms. */
export interface ImageRequest {
  prompt: string;
  negativePrompt: string;
  /** Images to make. */
  count: number;
  /** The first image's seed; random when undefined. */
  seed: bigint | undefined;
  /** Steps, guidance, size, scheduler (the library's option names). */
  settings: BatchDefaults;
}

const U64 = 1n << 64n;

/** The batcher's request: one image per seed, settings checked (errors name the library's options). */
export function toBatchRequest(r: ImageRequest, signal: AbortSignalLike | undefined): BatchRequest {
  const base = r.seed ?? randomSeed();
  const checked = checkInput({ ...r.settings, prompt: r.prompt, negativePrompt: r.negativePrompt, seed: base }, 0, {}, "request");
  const images = Array.from({ length: r.count }, (_, i) => ({ prompt: r.prompt, negativePrompt: r.negativePrompt, seed: (base + BigInt(i)) % U64 }));
  return { images, shared: checked.shared, key: checked.key, ...(signal ? { signal } : {}) };
}

/** An image as a base64 PNG carrying its generation parameters in text chunks (as the CLI writes them), and the web UIs' infotext of them. */
export function encodeImage(image: GeneratedImage, r: ImageRequest, model: string, files: ModelFiles = {}): { png: string; infotext: string } {
  const parameters = imageParameters(r.settings, r.prompt, r.negativePrompt, image.seed, resolvedOf(image), model, files);
  const text = pngText(parameters);
  return { png: Buffer.from(image.toPng({ text })).toString("base64"), infotext: text.parameters ?? "" };
}
