/**
 * Fetch the files a Stable Diffusion pipeline needs from a hub repository into the shared cache,
 * and return the snapshot folder the pipeline loads. Files already in the cache (from Python or
 * from an earlier run) are not downloaded again; offline mode and an unreachable hub use the cache
 * alone.
 */

import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

import { abortError, CandlewickError, HUB, HUB_NOT_FOUND, type AbortSignalLike } from "../errors.js";
import { downloadBlob } from "./blob.js";
import { RepoCache, defaultCacheDir, type Env } from "./cache.js";
import { PIPELINE_FOLDERS, selectPipelineFiles, shardsOfIndex, type Variant } from "./files.js";
import { HubClient, defaultEndpoint, defaultToken, type FileMetadata } from "./http.js";

/** Download progress, reported as bytes arrive. */
export interface DownloadProgress {
  /** The repository ("org/name"). */
  repoId: string;
  /** The file being downloaded ("unet/diffusion_pytorch_model.safetensors"). */
  file: string;
  /** Bytes of this file in the cache so far, and its size. */
  fileLoaded: number;
  fileTotal: number;
  /** Bytes of every file this call downloads, so far and in all (files already cached do not count). */
  loaded: number;
  total: number;
}

/** Where and how to fetch a model from the Hugging Face hub. */
export interface HubOptions {
  /** A branch, tag or commit hash. Default "main". */
  revision?: string;
  /** "fp16" fetches the `*.fp16.safetensors` weights (half the bytes) where the repository has them. Default: the full-precision files. */
  variant?: Variant;
  /** The cache folder. Default: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (shared with Python's huggingface_hub). */
  cacheDir?: string;
  /** An access token for gated or private models; false sends none. Default: HF_TOKEN, else the token `hf auth login` saved. */
  token?: string | false;
  /** The hub's address. Default: HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** Use the cache only, never the network. Default: true when HF_HUB_OFFLINE is 1/true/yes/on. */
  offline?: boolean;
  /** Called as bytes arrive. Default: none. */
  onDownloadProgress?: (progress: DownloadProgress) => void;
  /** Cancels the download (what has arrived is kept, and the next call resumes it). Default: none. */
  signal?: AbortSignalLike;
}

/** What `downloadPipeline` fetched. */
export interface Snapshot {
  /** The snapshot folder: a diffusers model folder. */
  dir: string;
  /** The commit it holds. */
  commit: string;
  /** The pipeline's files in it, relative paths. */
  files: string[];
  /** Files this call downloaded (the others were in the cache). */
  downloaded: string[];
}

/** The variable that asks for offline mode, as NAME=value (HF_HUB_OFFLINE, else TRANSFORMERS_OFFLINE, as huggingface_hub reads them); undefined when none does. */
function offlineVariable(env: Env = process.env): string | undefined {
  const name = env.HF_HUB_OFFLINE ? "HF_HUB_OFFLINE" : env.TRANSFORMERS_OFFLINE ? "TRANSFORMERS_OFFLINE" : undefined;
  const value = name && env[name];
  return value && ["1", "on", "yes", "true"].includes(value.toLowerCase()) ? `${name}=${value}` : undefined;
}

/** Why nothing may be downloaded, and what to do about it, naming what asked for offline mode; undefined when online. */
export function offlineMode(options: HubOptions): { why: string; fix: string } | undefined {
  if (options.offline === true) return { why: "the offline option (offline: true) does not download", fix: "run once with offline: false, online" };
  const variable = options.offline === undefined ? offlineVariable() : undefined;
  if (!variable) return undefined;
  return { why: `offline mode (${variable}) does not download`, fix: `run once online, or unset ${variable.split("=")[0]}` };
}

/** Fetch (or find in the cache) the files of repository `repoId` that the pipeline needs. */
export async function downloadPipeline(repoId: string, options: HubOptions = {}): Promise<Snapshot> {
  try {
    return await download(repoId, options);
  } catch (error) {
    if (options.signal?.aborted && !(error instanceof CandlewickError)) throw abortError(options.signal.reason, "The download was aborted");
    throw error;
  }
}

async function download(repoId: string, options: HubOptions): Promise<Snapshot> {
  const revision = options.revision ?? "main";
  const cache = new RepoCache(options.cacheDir ?? defaultCacheDir(), repoId);
  const offline = offlineMode(options);
  if (offline) return fromCache(cache, revision, options.variant, offline);
  const token = options.token === false ? undefined : (options.token ?? defaultToken());
  // A real AbortSignal (fetch takes nothing else); options.ts checks what it can of one.
  const client = new HubClient(options.endpoint ?? defaultEndpoint(), repoId, token, options.signal as AbortSignal | undefined);
  let info;
  try {
    info = await client.modelInfo(revision);
  } catch (error) {
    // The hub cannot be reached (not: it said no): use the cached copy if there is a whole one.
    if (!(error instanceof CandlewickError && error.code === HUB)) throw error;
    const cached = tryFromCache(cache, revision, options.variant);
    if (!cached) throw error;
    process.emitWarning(`${error.message.split(". ")[0]}; using the cached snapshot ${cached.commit}`, "CandlewickWarning");
    return cached;
  }
  const { files, missing, indexes } = selectPipelineFiles(info.files, options.variant);
  if (missing.length > 0) throw missingFiles(repoId, revision, missing);
  // A read-only cache that already holds everything still works: the ref is written best-effort.
  await cache.writeRef(revision, info.commit).catch(() => undefined);

  // Sharded models: their indexes first (small JSON, no progress reported), then the shards they name.
  const first = await fetchFiles(client, cache, info.commit, indexes);
  const dir = cache.snapshotDir(info.commit);
  let shards: string[];
  try {
    shards = indexes.flatMap((index) => shardsOfIndex(index, readFileSync(join(dir, index), "utf8")));
  } catch (error) {
    throw new CandlewickError(`${repoId} (revision "${revision}"): ${(error as Error).message}`, HUB_NOT_FOUND);
  }
  const available = new Set(info.files);
  const absent = shards.filter((shard) => !available.has(shard));
  if (absent.length > 0) throw missingFiles(repoId, revision, absent.map((shard) => `${shard} (named by its index's weight_map)`));
  const second = await fetchFiles(client, cache, info.commit, [...files, ...shards], (file, fileLoaded, fileTotal, done, total) => {
    options.onDownloadProgress?.({ repoId, file, fileLoaded, fileTotal, loaded: first.bytes + done + fileLoaded, total: first.bytes + total });
  });
  return { dir, commit: info.commit, files: [...files, ...indexes, ...shards], downloaded: [...first.wanted, ...second.wanted] };
}

/** Fetch those of `files` that the snapshot `commit` lacks; `onBytes` gets the bytes so far (of the file, of the files before it) and in all. */
async function fetchFiles(
  client: HubClient,
  cache: RepoCache,
  commit: string,
  files: string[],
  onBytes?: (file: string, fileLoaded: number, fileTotal: number, done: number, total: number) => void,
): Promise<{ wanted: string[]; bytes: number }> {
  const wanted = files.filter((file) => !existsSync(cache.pointerPath(commit, file)));
  const metas = await Promise.all(wanted.map((file) => client.fileMetadata(commit, file)));
  const fetching = metas.filter((meta) => !existsSync(cache.blobPath(meta.etag)));
  const total = fetching.reduce((sum, meta) => sum + (meta.size ?? 0), 0);
  let done = 0;
  for (const [i, file] of wanted.entries()) {
    const meta = metas[i] as FileMetadata;
    if (!existsSync(cache.blobPath(meta.etag))) {
      const fileTotal = meta.size ?? 0;
      await downloadBlob(client, file, meta, cache.blobPath(meta.etag), (fileLoaded) => onBytes?.(file, fileLoaded, fileTotal, done, total));
      done += fileTotal;
    }
    await cache.link(meta.etag, commit, file);
  }
  return { wanted, bytes: total };
}

/** The pipeline's files in a snapshot folder, sharded models' shards read from their indexes, and what is missing. */
function cachedSelection(dir: string, variant: Variant | undefined): { files: string[]; missing: string[] } {
  const available = snapshotFiles(dir);
  const { files, missing, indexes } = selectPipelineFiles(available, variant);
  const present = new Set(available);
  for (const index of indexes) {
    files.push(index);
    try {
      for (const shard of shardsOfIndex(index, readFileSync(join(dir, index), "utf8"))) (present.has(shard) ? files : missing).push(shard);
    } catch (error) {
      missing.push((error as Error).message);
    }
  }
  return { files, missing };
}

/** The cached snapshot of `revision`, if it holds every file the pipeline needs. */
function tryFromCache(cache: RepoCache, revision: string, variant: Variant | undefined): Snapshot | undefined {
  const commit = cache.commitFor(revision);
  if (!commit) return undefined;
  const { files, missing } = cachedSelection(cache.snapshotDir(commit), variant);
  return missing.length === 0 ? { dir: cache.snapshotDir(commit), commit, files, downloaded: [] } : undefined;
}

function fromCache(cache: RepoCache, revision: string, variant: Variant | undefined, { why, fix }: { why: string; fix: string }): Snapshot {
  const commit = cache.commitFor(revision);
  if (!commit) {
    throw new CandlewickError(`${cache.repoId} (revision "${revision}") is not in the cache at ${cache.cacheDir}, and ${why}: ${fix}`, HUB);
  }
  const { files, missing } = cachedSelection(cache.snapshotDir(commit), variant);
  if (missing.length > 0) {
    throw new CandlewickError(`The cached snapshot ${cache.snapshotDir(commit)} lacks ${missing.join(", ")}, and ${why}: ${fix}`, HUB);
  }
  return { dir: cache.snapshotDir(commit), commit, files, downloaded: [] };
}

/** The files (symlinks to existing blobs, or plain files) a snapshot folder holds, relative paths. */
function snapshotFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const files = readdirSync(dir).filter((name) => statSync(join(dir, name), { throwIfNoEntry: false })?.isFile());
  for (const folder of PIPELINE_FOLDERS) {
    const sub = join(dir, folder);
    if (!existsSync(sub)) continue;
    for (const name of readdirSync(sub)) {
      if (statSync(join(sub, name), { throwIfNoEntry: false })?.isFile()) files.push(`${folder}/${name}`);
    }
  }
  return files;
}

function missingFiles(repoId: string, revision: string, missing: string[]): CandlewickError {
  const what = missing.includes("model_index.json")
    ? "is not a diffusers pipeline repository (it has no model_index.json)"
    : `lacks files the pipeline needs: ${missing.join(", ")}`;
  return new CandlewickError(`${repoId} (revision "${revision}") ${what}`, HUB_NOT_FOUND);
}
