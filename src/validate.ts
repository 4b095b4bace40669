/**
 * The few predicates option validation is made of, with one message shape (sharp's):
 * "Expected integer multiple of 8 for width but received 500".
 */

import { CandlewickError, INVALID_OPTION } from "./errors.js";

/**
 * How a received value reads in a message: numbers as written, strings quoted, arrays by length,
 * plain objects by their keys ("an object with keys a, b", "an empty object"), other objects by
 * their class ("a Map").
 */
export function describe(value: unknown): string {
  switch (typeof value) {
    case "number":
    case "boolean":
    case "undefined":
      return String(value);
    case "bigint":
      return `${value}n`;
    case "string": {
      const text = value.length > 60 ? `${value.slice(0, 57)}...` : value;
      return JSON.stringify(text);
    }
    case "function":
      return "a function";
    case "symbol":
      return "a symbol";
  }
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  const keys = Object.keys(value);
  const shown = `${keys.slice(0, 5).join(", ")}${keys.length > 5 ? ` and ${keys.length - 5} more` : ""}`;
  if (isPlainObject(value)) return keys.length === 0 ? "an empty object" : `an object with ${keys.length === 1 ? "key" : "keys"} ${shown}`;
  const name = (Object.getPrototypeOf(value) as { constructor?: { name?: string } }).constructor?.name;
  // Object.create(other): calling it "an object" would hide why it is refused.
  if (!name || name === "Object") return `an object that inherits from another object (${keys.length === 0 ? "no own keys" : `own keys: ${shown}`})`;
  return `${/^[AEIOU]/.test(name) ? "an" : "a"} ${name}`;
}

/** "1 image", "2 images": a number and its noun, singular or plural as the number asks. */
export function count(n: number | bigint, noun: string, plural = `${noun}s`): string {
  return `${n} ${n === 1 || n === 1n ? noun : plural}`;
}

/** "Expected {what} for {option} but received {value}". */
export function invalid(what: string, option: string, value: unknown): CandlewickError {
  return new CandlewickError(`Expected ${what} for ${option} but received ${describe(value)}`, INVALID_OPTION);
}

/** An object literal (or Object.create(null)), from this realm or another (a vm context, a worker's structured clone). */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as object | null;
  return proto === null || proto === Object.prototype || (Object.getPrototypeOf(proto) === null && (proto as { constructor?: { name?: string } }).constructor?.name === "Object");
}

/** An options object: a plain object (or undefined, read as {}) whose keys are all known. */
export function checkOptionsObject(value: unknown, option: string, known: readonly string[]): Record<string, unknown> {
  if (value === undefined) return {};
  if (!isPlainObject(value)) throw invalid("plain object", option, value);
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) {
      const guess = closest(key, known);
      const hint = guess ? `; did you mean "${guess}"?` : `; known options: ${known.join(", ")}`;
      throw new CandlewickError(`Unknown option "${key}" in ${option}${hint}`, INVALID_OPTION);
    }
  }
  return value;
}

/** An integer in [min, max]. */
export function integerIn(value: unknown, option: string, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(`integer between ${min} and ${max}`, option, value);
  }
  return value;
}

/** A finite number in [min, max] (max defaults to unbounded). */
export function numberIn(value: unknown, option: string, min: number, max = Infinity): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
    const what = max === Infinity ? `finite number >= ${min}` : `number between ${min} and ${max}`;
    throw invalid(what, option, value);
  }
  return value;
}

/** A finite number > min. */
export function numberAbove(value: unknown, option: string, min: number): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= min) {
    throw invalid(`finite number > ${min}`, option, value);
  }
  return value;
}

export function boolean(value: unknown, option: string): boolean {
  if (typeof value !== "boolean") throw invalid("boolean", option, value);
  return value;
}

/** One of a few strings. */
export function oneOf<T extends string>(value: unknown, option: string, allowed: readonly T[]): T {
  if (typeof value !== "string" || !(allowed as readonly string[]).includes(value)) {
    throw invalid(`one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}`, option, value);
  }
  return value as T;
}

/**
 * The known option a misspelt one most likely meant: equal ignoring case, the only one containing
 * it, or within 2 edits (1 for keys under 5 letters) of the option or of its start ("guidence" -> "guidanceScale").
 */
export function closest(key: string, known: readonly string[]): string | undefined {
  const lower = key.toLowerCase();
  const exact = known.find((k) => k.toLowerCase() === lower);
  if (exact) return exact;
  // "steps" -> "numInferenceSteps": the one option that contains the key.
  const containing = key.length >= 4 ? known.filter((k) => k.toLowerCase().includes(lower)) : [];
  if (containing.length === 1) return containing[0];
  const limit = key.length < 5 ? 1 : 2;
  let best: string | undefined;
  let bestDistance = limit + 1;
  for (const candidate of known) {
    const lower = candidate.toLowerCase();
    const d = lower === key.toLowerCase()
      ? 0
      : Math.min(editDistance(key, candidate), editDistance(key.toLowerCase(), lower.slice(0, key.length)));
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + cost);
    }
    previous = current;
  }
  return previous[b.length]!;
}
