/** `convertSingleFile`: a single-file checkpoint written out as a diffusers folder (`candlewick convert`). */

import { resolve } from "node:path";

import { loadNative } from "./binding.js";
import { CandlewickError, fromNativeError, INVALID_OPTION } from "./errors.js";
import { checkOptionsObject, describe } from "./validate.js";

/** How `convertSingleFile` reads the checkpoint. */
export interface ConvertOptions {
  /** A local diffusers folder with the tokenizer (and configs) the checkpoint lacks, as the `config` load option. Required. */
  config?: string;
}

/** What `convertSingleFile` wrote. */
export interface ConvertResult {
  /** The diffusers folder, absolute. */
  folder: string;
  /** The architecture inferred from the tensors, as diffusers names it: "v1", "inpainting", "v2", "inpainting_v2", "xl_base", "xl_refiner". */
  modelType: string;
  /** Every file written. */
  files: string[];
}

/**
 * Write a single-file checkpoint (`.safetensors` in the original Stable Diffusion layout) as a
 * diffusers folder `out` (new or empty): what diffusers' `from_single_file(...).save_pretrained(out)`
 * gives, in the checkpoint's dtype. Loading the checkpoint itself needs no conversion; this is for
 * tools that read folders only. Rejects with ERR_CANDLEWICK_MODEL naming the file at fault.
 */
export async function convertSingleFile(checkpoint: string, out: string, options: ConvertOptions = {}): Promise<ConvertResult> {
  for (const [value, option] of [[checkpoint, "checkpoint"], [out, "out"]] as const) {
    if (typeof value !== "string" || value.length === 0) {
      throw new CandlewickError(`Expected non-empty string for ${option} but received ${describe(value)}`, INVALID_OPTION);
    }
  }
  const o = checkOptionsObject(options, "convert options", ["config"]);
  if (o.config !== undefined && (typeof o.config !== "string" || o.config.length === 0)) {
    throw new CandlewickError(`Expected non-empty string for config but received ${describe(o.config)}`, INVALID_OPTION);
  }
  try {
    const config = o.config === undefined ? undefined : resolve(o.config as string);
    return await loadNative().convertSingleFile(resolve(checkpoint), resolve(out), config);
  } catch (error) {
    throw fromNativeError(error);
  }
}
