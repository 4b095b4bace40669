// Paths of the fixtures that scripts/make_fixtures.py writes (the tiny model and the goldens), and
// small helpers shared by the model tests.

import { cpSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { tempDir } from "./temp.js";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const TINY_SD = join(ROOT, "test/fixtures/tiny-sd");
export const GOLDENS = join(ROOT, "test/fixtures/goldens");

export function readJson<T = Record<string, unknown>>(path: string): T {
  return JSON.parse(readFileSync(path, "utf8")) as T;
}

/** A scratch copy of the tiny model (f32 weights only) that a test may break. */
export function copyOfTinySd(): string {
  const dir = join(tempDir("candlewick-test-"), "tiny-sd");
  cpSync(TINY_SD, dir, { recursive: true, filter: (src) => !src.endsWith(".fp16.safetensors") });
  return dir;
}

/** Share of bytes of `a` within `tolerance` of `b`. */
export function shareWithin(a: Uint8Array, b: Uint8Array, tolerance: number): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let close = 0;
  for (let i = 0; i < a.length; i++) if (Math.abs(a[i]! - b[i]!) <= tolerance) close++;
  return close / a.length;
}
