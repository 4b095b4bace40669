/**
 * One checkpoint file from a hub repository, "org/name/path/file.safetensors" (what diffusers'
 * `from_single_file` takes as a hub path): just that file is fetched into the shared cache, in the
 * layout huggingface_hub's `hf_hub_download` uses, and its snapshot path is loaded as a single-file
 * checkpoint. Offline mode and an unreachable hub use the cached copy.
 */

import { existsSync } from "node:fs";

import { abortError, CandlewickError, HUB, HUB_NOT_FOUND } from "../errors.js";
import { downloadBlob } from "./blob.js";
import { RepoCache, defaultCacheDir } from "./cache.js";
import { offlineMode, type HubOptions } from "./download.js";
import { HubClient, defaultEndpoint, defaultToken, isRepoId } from "./http.js";

/** "org/name/file.safetensors" (or a file in a folder of the repository) as repository and file; undefined for anything else. */
export function hubFilePath(name: string): { repoId: string; file: string } | undefined {
  const parts = name.split("/");
  if (parts.length < 3 || !/\.safetensors$/i.test(name) || parts.some((p) => p === "" || p === "." || p === "..")) return undefined;
  const repoId = parts.slice(0, 2).join("/");
  return isRepoId(repoId) ? { repoId, file: parts.slice(2).join("/") } : undefined;
}

/** Fetch (or find in the cache) `file` of repository `repoId`; returns its path in the snapshot folder. */
export async function downloadFile(repoId: string, file: string, options: HubOptions = {}): Promise<string> {
  try {
    return await download(repoId, file, options);
  } catch (error) {
    if (options.signal?.aborted && !(error instanceof CandlewickError)) throw abortError(options.signal.reason, "The download was aborted");
    throw error;
  }
}

async function download(repoId: string, file: string, options: HubOptions): Promise<string> {
  const revision = options.revision ?? "main";
  const cache = new RepoCache(options.cacheDir ?? defaultCacheDir(), repoId);
  const cached = () => {
    const commit = cache.commitFor(revision);
    const path = commit && cache.pointerPath(commit, file);
    return path && existsSync(path) ? path : undefined;
  };
  const offline = offlineMode(options);
  if (offline) {
    const path = cached();
    if (path) return path;
    throw new CandlewickError(`${repoId}/${file} (revision "${revision}") is not in the cache at ${cache.cacheDir}, and ${offline.why}: ${offline.fix}`, HUB);
  }
  const token = options.token === false ? undefined : (options.token ?? defaultToken());
  const client = new HubClient(options.endpoint ?? defaultEndpoint(), repoId, token, options.signal as AbortSignal | undefined);
  let info;
  try {
    info = await client.modelInfo(revision);
  } catch (error) {
    // The hub cannot be reached (not: it said no): use the cached copy if there is one.
    const path = cached();
    if (!(error instanceof CandlewickError && error.code === HUB) || !path) throw error;
    process.emitWarning(`${error.message.split(". ")[0]}; using the cached ${path}`, "CandlewickWarning");
    return path;
  }
  if (!info.files.includes(file)) {
    const checkpoints = info.files.filter((f) => f.endsWith(".safetensors") && !f.includes("/"));
    const others = checkpoints.length > 0 ? ` (its top-level .safetensors files: ${checkpoints.slice(0, 8).join(", ")})` : "";
    throw new CandlewickError(`${repoId} (revision "${revision}") has no file ${file}${others}`, HUB_NOT_FOUND);
  }
  await cache.writeRef(revision, info.commit).catch(() => undefined);
  const pointer = cache.pointerPath(info.commit, file);
  if (existsSync(pointer)) return pointer;
  const meta = await client.fileMetadata(info.commit, file);
  if (!existsSync(cache.blobPath(meta.etag))) {
    const total = meta.size ?? 0;
    await downloadBlob(client, file, meta, cache.blobPath(meta.etag), (loaded) => {
      options.onDownloadProgress?.({ repoId, file, fileLoaded: loaded, fileTotal: total, loaded, total });
    });
  }
  return cache.link(meta.etag, info.commit, file);
}
