/**
 * Download one file into the cache's blobs/ folder: into `<etag>.incomplete`, resumed with a
 * `Range` request from what an earlier run or a dropped connection left there, checked against the
 * size and (for LFS files, whose ETag is their sha256) the checksum, then renamed into place.
 */

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { CandlewickError, HUB } from "../errors.js";
import { count } from "../validate.js";
import { writable } from "./cache.js";
import type { FileMetadata, HubClient } from "./http.js";

/** Tries in a row without a new byte before giving up (huggingface_hub also allows 5). */
const MAX_TRIES = 5;

/** `loaded` bytes of the file are in the cache so far. */
export type OnBytes = (loaded: number) => void;

/** What the caller's progress callback threw, carried through the retry loop untouched. */
class CallbackThrew {
  constructor(readonly thrown: unknown) {}
}

export async function downloadBlob(client: HubClient, file: string, meta: FileMetadata, blob: string, onBytes: OnBytes): Promise<void> {
  const report: OnBytes = (loaded) => {
    try {
      onBytes(loaded);
    } catch (thrown) {
      throw new CallbackThrew(thrown);
    }
  };
  const incomplete = `${blob}.incomplete`;
  await writable(dirname(blob), () => mkdir(dirname(blob), { recursive: true }));
  let have = await sizeOf(incomplete);
  if (meta.size !== undefined && have > meta.size) have = 0;
  onBytes(have);
  for (let failures = 0; ; ) {
    const before = have;
    try {
      have = await fetchInto(client, file, meta, incomplete, have, report);
      if (meta.size === undefined || have === meta.size) break;
      throw new Error(`the connection ended at byte ${have} of ${meta.size}`);
    } catch (error) {
      // The caller's exception ends the download as it was thrown (it is no network failure to retry).
      if (error instanceof CallbackThrew) throw error.thrown;
      if (error instanceof CandlewickError || (error as Error).name === "AbortError") throw error;
      have = await sizeOf(incomplete);
      failures = have > before ? 1 : failures + 1;
      if (failures >= MAX_TRIES) {
        const reason = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message;
        throw new CandlewickError(
          `Downloading ${client.repoId}/${file} failed ${MAX_TRIES} times in a row (${reason}); ${count(have, "byte")} ${have === 1 ? "is" : "are"} kept in ${incomplete} and the next try resumes from there`,
          HUB,
          { cause: error },
        );
      }
      await sleep(100 * 2 ** failures, undefined, client.signal ? { signal: client.signal } : {});
    }
  }
  await verify(client, file, meta, incomplete);
  await writable(blob, () => rename(incomplete, blob));
}

/** One GET from byte `have` on, appended to `incomplete`; returns the bytes it then holds. */
async function fetchInto(client: HubClient, file: string, meta: FileMetadata, incomplete: string, have: number, onBytes: OnBytes): Promise<number> {
  if (meta.size !== undefined && have === meta.size) return have;
  const headers = client.headers(meta.url, have > 0 ? { range: `bytes=${have}-` } : {});
  // The runtime's fetch, not client.fetch: a refused or reset connection is retried like a dropped one.
  const response = await fetch(meta.url, { headers, ...(client.signal ? { signal: client.signal } : {}) });
  if (!response.ok || !response.body) throw await client.error(response, `file "${file}"`);
  // A server that ignores Range answers 200 with the whole file: start over.
  if (response.status !== 206) have = 0;
  const handle = await writable(incomplete, () => open(incomplete, have > 0 ? "a" : "w"));
  try {
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      await writable(incomplete, () => handle.write(chunk));
      have += chunk.byteLength;
      onBytes(have);
    }
  } finally {
    await handle.close();
  }
  return have;
}

/** The size and, for an LFS file, the sha256 must match what the hub announced. */
async function verify(client: HubClient, file: string, meta: FileMetadata, incomplete: string): Promise<void> {
  if (!/^[0-9a-f]{64}$/.test(meta.etag)) return;
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(incomplete)) hash.update(chunk as Buffer);
  const digest = hash.digest("hex");
  if (digest !== meta.etag) {
    await rm(incomplete, { force: true });
    throw new CandlewickError(`${client.repoId}/${file} arrived damaged (sha256 ${digest}, expected ${meta.etag}); it was deleted: try again`, HUB);
  }
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}
