/**
 * A prompts file for `candlewick batch`: JSON Lines, one image per line: a prompt string, or an
 * object with "prompt" and any BatchInput field, plus an optional "id" (kept in the manifest).
 * Blank lines are skipped. Every line is checked before any work; errors name the file and line.
 */

import { readFile } from "node:fs/promises";

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import { isPlainObject } from "../validate.js";
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
}

/**
 * Read and check every line. `baseSeed`: a line without a seed gets baseSeed + line number
 * (so reruns are reproducible); without it, a random seed.
 */
export async function readPromptsFile(path: string, defaults: BatchDefaults, baseSeed: bigint | undefined): Promise<PromptLine[]> {
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
    const { id, ...rest } = isPlainObject(value) ? value : { id: undefined, prompt: value };
    if (id !== undefined && typeof id !== "string" && typeof id !== "number") {
      throw new CandlewickError(`${where}: Expected string or number for id but received ${JSON.stringify(id)}`, INVALID_OPTION);
    }
    const randomSeed = rest.seed === undefined && baseSeed === undefined;
    const withSeed = rest.seed === undefined && baseSeed !== undefined ? { ...rest, seed: (baseSeed + BigInt(line)) % 2n ** 64n } : rest;
    const checked = checkInput(withSeed, lines.length, defaults, where);
    // Self-contained: the defaults merged in, and the seed fixed (a drawn one too).
    const input: BatchInput = { ...checked.shared, prompt: checked.prompt, negativePrompt: checked.negativePrompt, seed: checked.seed };
    lines.push({ line, id, input, checked, randomSeed });
  }
  if (lines.length === 0) throw new CandlewickError(`${path} has no prompts (expected one JSON value per line)`, INVALID_OPTION);
  return lines;
}
