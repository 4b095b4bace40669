/**
 * The manifest of a `candlewick batch` output folder: manifest.jsonl, one JSON line per finished
 * image with its generation parameters. A line is appended as soon as its PNG is in place, so an
 * interrupted run loses nothing it finished; a rerun keeps the lines whose PNG exists and whose
 * prompt line is unchanged (same `key`), and makes the rest. At the end the file is rewritten in
 * line order, one line per image.
 */

import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { appendFile, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";

import type { ImageParameters } from "../cli/parameters.js";

/** One finished image: its generation parameters, and where it is. */
export interface ManifestRecord extends ImageParameters {
  /** The prompts file's line (1-based). */
  line: number;
  /** The line's "id", if it had one. */
  id?: string | number;
  /** The PNG, relative to the output folder. */
  file: string;
  /** What the line asked for, hashed: equal keys give equal images. */
  key: string;
}

export const MANIFEST = "manifest.jsonl";

/** A short hash of what makes an image: the line's settings, prompts, seed (unless drawn) and model. */
export function recordKey(parts: unknown[]): string {
  const text = JSON.stringify(parts, (_, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
  return createHash("sha256").update(text).digest("hex").slice(0, 16);
}

export class Manifest {
  readonly path: string;
  readonly #records = new Map<number, ManifestRecord>();

  private constructor(readonly dir: string) {
    this.path = join(dir, MANIFEST);
  }

  /** Read the folder's manifest (a torn last line, from a killed run, is skipped). */
  static async open(dir: string): Promise<Manifest> {
    const manifest = new Manifest(dir);
    const text = existsSync(manifest.path) ? await readFile(manifest.path, "utf8") : "";
    for (const line of text.split("\n")) {
      try {
        const record = JSON.parse(line) as ManifestRecord;
        if (Number.isInteger(record.line) && typeof record.file === "string") manifest.#records.set(record.line, record);
      } catch {
        // A line cut short by a kill: its image is made again.
      }
    }
    return manifest;
  }

  /** Whether the line's image is done: recorded with the same key, and its PNG is there. */
  isDone(line: number, key: string): boolean {
    const record = this.#records.get(line);
    return record !== undefined && record.key === key && existsSync(join(this.dir, record.file));
  }

  /** Keep the records of `lines` that are done; rewrite the file with them alone. */
  async keep(lines: ReadonlyMap<number, string>): Promise<number> {
    for (const [line, record] of this.#records) {
      if (lines.get(line) !== record.key || !this.isDone(line, record.key)) this.#records.delete(line);
    }
    await this.rewrite();
    return this.#records.size;
  }

  async append(record: ManifestRecord): Promise<void> {
    await appendFile(this.path, `${JSON.stringify(record)}\n`);
    this.#records.set(record.line, record);
  }

  /** Write every record in line order, atomically (a temporary file renamed over the manifest). */
  async rewrite(): Promise<void> {
    const lines = [...this.#records.values()].sort((a, b) => a.line - b.line).map((r) => `${JSON.stringify(r)}\n`);
    const temporary = `${this.path}.tmp`;
    await writeFile(temporary, lines.join(""));
    await rename(temporary, this.path);
  }
}
