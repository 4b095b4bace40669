/**
 * The Hugging Face cache, laid out as huggingface_hub lays it out, so that Python and candlewick
 * share downloads:
 *
 * ```
 * $HF_HUB_CACHE/models--org--name/
 *   blobs/<etag>                       file contents, named by ETag (sha256 for LFS files)
 *   blobs/<etag>.incomplete            a download in progress (resumed with a Range request)
 *   snapshots/<commit>/<path>          relative symlinks to ../../blobs/<etag>
 *   refs/<revision>                    the commit hash a branch or tag pointed at
 * ```
 */

import { existsSync, readFileSync } from "node:fs";
import { mkdir, rename, rm, symlink, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";

import { CACHE, CandlewickError } from "../errors.js";

/** Environment variables, as `process.env` holds them (a plain type: the declarations need no @types/node). */
export type Env = Readonly<Record<string, string | undefined>>;

/** A full commit hash: a revision that needs no lookup. */
export const COMMIT_HASH = /^[0-9a-f]{40}$/;

/** The hub cache folder: HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub ($XDG_CACHE_HOME/huggingface or ~/.cache/huggingface). */
export function defaultCacheDir(env: Env = process.env): string {
  const explicit = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  if (explicit) return resolve(expandHome(explicit));
  return join(hfHome(env), "hub");
}

/** HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
export function hfHome(env: Env = process.env): string {
  if (env.HF_HOME) return resolve(expandHome(env.HF_HOME));
  return join(env.XDG_CACHE_HOME ? expandHome(env.XDG_CACHE_HOME) : join(home(), ".cache"), "huggingface");
}

function expandHome(path: string): string {
  return path === "~" || path.startsWith("~/") ? join(home(), path.slice(1)) : path;
}

/** HOME as Python's expanduser reads it (os.homedir() would need --allow-sys in Deno). */
function home(): string {
  return process.env.HOME || process.env.USERPROFILE || homedir();
}

/** One repository's folder in the cache. */
export class RepoCache {
  /** models--org--name. */
  readonly root: string;

  constructor(readonly cacheDir: string, readonly repoId: string) {
    this.root = join(cacheDir, `models--${repoId.split("/").join("--")}`);
  }

  blobPath(etag: string): string {
    return join(this.root, "blobs", etag);
  }

  snapshotDir(commit: string): string {
    return join(this.root, "snapshots", commit);
  }

  /** snapshots/<commit>/<file>, refusing paths that climb out of the snapshot. */
  pointerPath(commit: string, file: string): string {
    const dir = this.snapshotDir(commit);
    const path = resolve(dir, file);
    if (!path.startsWith(`${resolve(dir)}/`)) throw new CandlewickError(`Refusing a file path outside the snapshot: ${JSON.stringify(file)}`, CACHE);
    return path;
  }

  /** The commit a revision stands for: itself when it is a commit hash, else what refs/<revision> says. */
  commitFor(revision: string): string | undefined {
    if (COMMIT_HASH.test(revision)) return revision;
    const ref = join(this.root, "refs", revision);
    if (!existsSync(ref)) return undefined;
    const commit = readFileSync(ref, "utf8").trim();
    return COMMIT_HASH.test(commit) ? commit : undefined;
  }

  /** Record that `revision` pointed at `commit` (written atomically; nothing for a commit hash). */
  async writeRef(revision: string, commit: string): Promise<void> {
    if (revision === commit || this.commitFor(revision) === commit) return;
    const ref = join(this.root, "refs", revision);
    await writable(dirname(ref), () => mkdir(dirname(ref), { recursive: true }));
    const temporary = `${ref}.${process.pid}.tmp`;
    await writable(ref, async () => {
      await writeFile(temporary, commit);
      await rename(temporary, ref);
    });
  }

  /** Point snapshots/<commit>/<file> at blobs/<etag> with a relative symlink. */
  async link(etag: string, commit: string, file: string): Promise<string> {
    const pointer = this.pointerPath(commit, file);
    await writable(dirname(pointer), async () => {
      await mkdir(dirname(pointer), { recursive: true });
      await rm(pointer, { force: true });
      await symlink(relative(dirname(pointer), this.blobPath(etag)), pointer);
    });
    return pointer;
  }
}

/** Run a write to the cache; a permission or disk error becomes ERR_CANDLEWICK_CACHE naming the path and the fix. */
export async function writable<T>(path: string, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === "EACCES" || code === "EPERM" || code === "EROFS" || code === "ENOSPC" || code === "ENOTDIR" || code === "EEXIST") {
      const why = code === "ENOSPC" ? "the disk is full" : code === "ENOTDIR" || code === "EEXIST" ? "a file is in the way" : "it is read-only";
      throw new CandlewickError(
        `Cannot write to the Hugging Face cache at ${path} (${code}: ${why}). Set HF_HUB_CACHE (or HF_HOME, or the cacheDir option) to a writable folder, or free some space.`,
        CACHE,
        { cause: error },
      );
    }
    throw error;
  }
}
