/**
 * The file hashes AUTOMATIC1111's web UI writes into its infotext, so that images made here name
 * their model and LoRAs as the web UI (and sites such as Civitai, which look them up) expect:
 *
 * - `Model hash`: the first 10 hex digits of the sha256 of the whole checkpoint file (the web UI's
 *   modules/hashes.py `calculate_sha256`, its `shorthash`).
 * - `Lora hashes`: for each LoRA, the first 12 hex digits of the "autov3" hash, the sha256 of a
 *   safetensors file's tensor data alone, the bytes after its 8-byte length and JSON header
 *   (modules/hashes.py `addnet_hash_safetensors`, kohya's sd-scripts hash; the web UI's Lora
 *   extension's `network_on_disk.shorthash`), so that editing the metadata leaves it unchanged.
 *
 * Files can be gigabytes: they are read in a stream, and each is hashed once per run (cached by
 * path, size and modification time).
 */

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, stat } from "node:fs/promises";
import { basename, resolve } from "node:path";

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import type { LoraRecord } from "./parameters.js";

/** Which bytes are hashed: the whole file, or a safetensors file's data after its header. */
export type HashKind = "sha256" | "autov3";

const cache = new Map<string, Promise<string>>();

/**
 * The full hex sha256 of `path` ("sha256") or of its tensor data ("autov3"), computed once per file
 * version. Errors say why ("cannot read it (ENOENT: no such file)"); callers name the file.
 */
export async function fileHash(path: string, kind: HashKind): Promise<string> {
  const absolute = resolve(path);
  const stats = await stat(absolute).catch((error: NodeJS.ErrnoException) => {
    throw new CandlewickError(`cannot read it (${error.code ?? "error"}: ${error.code === "ENOENT" ? "no such file" : error.message})`, INVALID_OPTION, { cause: error });
  });
  if (!stats.isFile()) throw new CandlewickError("cannot read it (it is a folder, not a file)", INVALID_OPTION);
  const key = `${kind}\0${absolute}\0${stats.size}\0${stats.mtimeMs}`;
  let hash = cache.get(key);
  if (!hash) {
    hash = (kind === "autov3" ? dataOffset(absolute, stats.size) : Promise.resolve(0)).then((start) => sha256(absolute, start));
    cache.set(key, hash);
    hash.catch(() => cache.delete(key));
  }
  return hash;
}

/** The checkpoint's `Model hash`: 10 hex digits. */
export async function modelHash(path: string): Promise<string> {
  return (await named(fileHash(path, "sha256"), `model file ${path}`)).slice(0, 10);
}

/** A LoRA's hash in `Lora hashes`: 12 hex digits of autov3. */
export async function loraHash(path: string): Promise<string> {
  return (await named(fileHash(path, "autov3"), `LoRA ${path}`)).slice(0, 12);
}

/** A hash whose error starts with what the file is ("LoRA /x/y.safetensors: cannot read it ..."). */
function named(hash: Promise<string>, what: string): Promise<string> {
  return hash.catch((error: unknown) => {
    if (!(error instanceof CandlewickError)) throw error;
    throw new CandlewickError(`${what}: ${error.message}`, error.code, { cause: error });
  });
}

/**
 * Where a safetensors file's tensor data starts (8 + the header's length), after checking that
 * the header is there whole and is a JSON object; a damaged file is an error that says why.
 */
async function dataOffset(path: string, size: number): Promise<number> {
  const damaged = (why: string) => new CandlewickError(`not a safetensors file (${why})`, INVALID_OPTION);
  if (size < 8) throw damaged(`${size} bytes, shorter than the 8-byte header length`);
  const file = await open(path, "r");
  try {
    const head = Buffer.alloc(8);
    await file.read(head, 0, 8, 0);
    const length = head.readBigUInt64LE(0);
    if (length > BigInt(size - 8) || length > 100_000_000n) throw damaged(`its header claims ${length} bytes but the file has ${size - 8} after the length`);
    const header = Buffer.alloc(Number(length));
    await file.read(header, 0, header.length, 8);
    let parsed: unknown;
    try {
      parsed = JSON.parse(header.toString("utf8"));
    } catch (error) {
      throw damaged(`its header is not JSON: ${(error as Error).message}`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw damaged("its header is not a JSON object");
    return 8 + header.length;
  } finally {
    await file.close();
  }
}

/** The hex sha256 of `path` from byte `start`, read as a stream. */
function sha256(path: string, start: number): Promise<string> {
  return new Promise((done, fail) => {
    const hash = createHash("sha256");
    createReadStream(path, { start, highWaterMark: 1 << 20 })
      .on("data", (chunk) => hash.update(chunk))
      .on("error", (error: NodeJS.ErrnoException) => fail(new CandlewickError(`cannot read it (${error.code ?? "error"})`, INVALID_OPTION, { cause: error })))
      .on("end", () => done(hash.digest("hex")));
  });
}

/** The name a LoRA file goes by in tags and `Lora hashes`: its file name without `.safetensors`. */
export function loraName(path: string): string {
  return basename(path).replace(/\.safetensors$/i, "");
}

/** LoRAs as images record them: name, path, weight and hash (a missing or damaged file rejects, naming it). */
export function loraRecords(loras: readonly { path: string; weight?: number; name?: string }[]): Promise<LoraRecord[]> {
  return Promise.all(loras.map(async (l) => ({ name: l.name ?? loraName(l.path), path: l.path, weight: l.weight ?? 1, hash: await loraHash(l.path) })));
}

/** The `Model hash` of what a pipeline loaded: a single file's; undefined for a folder. */
export async function modelHashOf(modelPath: string): Promise<string | undefined> {
  const stats = await stat(modelPath).catch(() => undefined);
  return stats?.isFile() ? modelHash(modelPath) : undefined;
}

/** What images record of a pipeline's files: the model hash (single files) and the fused LoRAs. */
export interface ModelFiles {
  modelHash?: string | undefined;
  loras?: LoraRecord[];
}

/** The ModelFiles of a pipeline's model path and LoRAs (`pipe.modelDir`, `pipe.info.loras`). */
export async function modelFiles(modelPath: string, loras: readonly { path: string; weight: number }[]): Promise<ModelFiles> {
  return { modelHash: await modelHashOf(modelPath), loras: await loraRecords(loras) };
}
