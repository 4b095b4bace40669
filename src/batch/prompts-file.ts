/**
 * A prompts file for `candlewick batch`: JSON Lines, one image per line: a prompt string, or an
 * object with "prompt" and any BatchInput field, plus an optional "id" (kept in the manifest).
 * Blank lines are skipped. Every line is checked before any work; errors name the file and line.
 *
 * A line names its own LoRAs (added to the run's --lora ones) in two ways: "loras": [{"path",
 * "weight"}] (paths from the working directory), and the web UI's tags in the prompt,
 * `<lora:name:weight>` or `<lora:name>` (weight 1), which stand for `<loraDir>/name.safetensors`
 * (--lora-dir). The tags are taken out of the prompt the model reads, as the web UI takes them
 * out, and kept in the prompt the image records.
 */

import { join, resolve } from "node:path";
import { readFile } from "node:fs/promises";

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import { checkLoras } from "../check-options.js";
import { MAX_LORA_WEIGHT } from "../options.js";
import { isPlainObject, numberIn } from "../validate.js";
import { checkInput, type BatchDefaults, type BatchInput, type CheckedInput } from "./inputs.js";

/** One line of the file, checked. */
export interface PromptLine {
  /** 1-based line number. */
  line: number;
  /** The line's "id", if it has one. */
  id: string | number | undefined;
  /** The input with the defaults merged in, without "id", with the seed it will use (its own, base + line, or a drawn one). */
  input: BatchInput;
  checked: CheckedInput;
  /** Whether the seed was drawn at random (then it is not part of what makes a line's result reusable). */
  randomSeed: boolean;
  /** The prompt as written, LoRA tags and all (what the image records). */
  prompt: string;
  /** The line's own LoRAs ("loras", then the prompt's tags), paths absolute; name: the tag's name or the file's. */
  loras: LineLora[];
}

/** A LoRA a line names. */
export interface LineLora {
  path: string;
  weight: number;
  /** The tag's name, for a LoRA named by a tag. */
  name?: string;
}

/** The web UI's LoRA tag: `<lora:name>` or `<lora:name:weight>` (its other networks' tags are left alone). */
const LORA_TAG = /<lora:([^:>]*)(?::([^>]*))?>/g;

/** The prompt without its LoRA tags, and the LoRAs they name in `loraDir`. */
export function loraTags(prompt: string, loraDir: string | undefined, where: string): { prompt: string; loras: LineLora[] } {
  const loras: LineLora[] = [];
  for (const [tag, name, weight] of prompt.matchAll(LORA_TAG)) {
    if (!name || /[/\\]/.test(name) || name === "." || name === "..") {
      throw new CandlewickError(`${where}: Expected a LoRA file name (no folders) in ${tag} but received ${JSON.stringify(name)}`, INVALID_OPTION);
    }
    if (loraDir === undefined) {
      throw new CandlewickError(`${where}: the prompt names a LoRA (${tag}): give --lora-dir <dir>, the folder that holds ${name}.safetensors`, INVALID_OPTION);
    }
    const w = weight === undefined ? 1 : /^[-+]?(\d+\.?\d*|\.\d+)$/.test(weight) ? Number(weight) : weight;
    let checked: number;
    try {
      checked = numberIn(w, `the weight in ${tag}`, -MAX_LORA_WEIGHT, MAX_LORA_WEIGHT);
    } catch (error) {
      throw new CandlewickError(`${where}: ${(error as Error).message}`, INVALID_OPTION, { cause: error });
    }
    loras.push({ path: resolve(join(loraDir, `${name}.safetensors`)), weight: checked, name });
  }
  return { prompt: loras.length > 0 ? prompt.replace(LORA_TAG, "") : prompt, loras };
}

/**
 * Read and check every line. `baseSeed`: a line without a seed gets baseSeed + line number
 * (so reruns are reproducible); without it, a random seed.
 */
export async function readPromptsFile(path: string, defaults: BatchDefaults, baseSeed: bigint | undefined, loraDir?: string): Promise<PromptLine[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    const code = (error as { code?: string }).code ?? "error";
    throw new CandlewickError(`cannot read the prompts file ${path} (${code})`, INVALID_OPTION, { cause: error });
  }
  const lines: PromptLine[] = [];
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    if (raw.trim() === "") continue;
    const line = i + 1;
    const where = `${path}:${line}`;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch (error) {
      throw new CandlewickError(`${where}: bad JSON (${(error as Error).message})`, INVALID_OPTION);
    }
    const { id, loras: listed, ...given } = isPlainObject(value) ? value : { id: undefined, loras: undefined, prompt: value };
    if (id !== undefined && typeof id !== "string" && typeof id !== "number") {
      throw new CandlewickError(`${where}: Expected string or number for id but received ${JSON.stringify(id)}`, INVALID_OPTION);
    }
    const prompt = given.prompt;
    const tagged = typeof prompt === "string" ? loraTags(prompt, loraDir, where) : { prompt, loras: [] };
    const rest: Record<string, unknown> = { ...given, prompt: tagged.prompt };
    let loras: LineLora[];
    try {
      loras = [...(listed === undefined ? [] : checkLoras(listed, "loras")), ...tagged.loras];
    } catch (error) {
      throw new CandlewickError(`${where}: ${(error as Error).message}`, INVALID_OPTION, { cause: error });
    }
    const randomSeed = rest.seed === undefined && baseSeed === undefined;
    const withSeed = rest.seed === undefined && baseSeed !== undefined ? { ...rest, seed: (baseSeed + BigInt(line)) % 2n ** 64n } : rest;
    const checked = checkInput(withSeed, lines.length, defaults, where);
    // Self-contained: the defaults merged in, and the seed fixed (a drawn one too).
    const input: BatchInput = { ...checked.shared, prompt: checked.prompt, negativePrompt: checked.negativePrompt, seed: checked.seed };
    lines.push({ line, id, input, checked, randomSeed, prompt: prompt as string, loras });
  }
  if (lines.length === 0) throw new CandlewickError(`${path} has no prompts (expected one JSON value per line)`, INVALID_OPTION);
  return lines;
}
