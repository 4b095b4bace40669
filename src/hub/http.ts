/**
 * The Hugging Face hub's HTTP protocol, as huggingface_hub speaks it, on the runtime's own fetch:
 * `GET /api/models/{repo}/revision/{rev}` lists a revision's files and commit; `HEAD
 * /{repo}/resolve/{rev}/{path}` gives a file's commit (X-Repo-Commit), ETag (X-Linked-Etag for LFS
 * files: their sha256) and size, following redirects that stay on the hub and stopping at one that
 * leaves it (the CDN URL of an LFS file, fetched without the token); errors carry X-Error-Code.
 */

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { CandlewickError, HUB, HUB_AUTH, HUB_NOT_FOUND } from "../errors.js";
import { hfHome, type Env } from "./cache.js";

/** "org/name", as the hub spells repository ids (letters, digits, "-", "_", "."; no "--" or ".." runs). */
export function isRepoId(name: string): boolean {
  return /^[A-Za-z0-9][\w.-]{0,95}\/[\w.-]{1,96}$/.test(name) && !/--|\.\./.test(name) && !/[.-]$/.test(name);
}

/** What HEAD on a file's resolve URL tells. */
export interface FileMetadata {
  /** The commit the file was resolved at. */
  commit: string;
  /** The blob name: the ETag without quotes (an LFS file's sha256, else the git blob hash). */
  etag: string;
  /** Bytes, when the hub said. */
  size: number | undefined;
  /** Where to GET the contents (a CDN URL for LFS files). */
  url: string;
}

/** The hub's answer for one revision of a model repository. */
export interface ModelInfo {
  /** The revision's commit hash. */
  commit: string;
  /** Every file path in the repository at that commit. */
  files: string[];
}

/** The token: HF_TOKEN, else the file `huggingface-cli login` writes (HF_TOKEN_PATH, or $HF_HOME/token). */
export function defaultToken(env: Env = process.env): string | undefined {
  if (env.HF_TOKEN) return env.HF_TOKEN;
  try {
    return readFileSync(env.HF_TOKEN_PATH || join(hfHome(env), "token"), "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The hub's address: HF_ENDPOINT, else https://huggingface.co. */
export function defaultEndpoint(env: Env = process.env): string {
  return (env.HF_ENDPOINT || "https://huggingface.co").replace(/\/+$/, "");
}

const MAX_REDIRECTS = 10;

/** Requests to one hub for one repository. */
export class HubClient {
  constructor(
    readonly endpoint: string,
    readonly repoId: string,
    readonly token: string | undefined,
    readonly signal?: AbortSignal,
  ) {}

  headers(url: string, extra: Record<string, string> = {}): Record<string, string> {
    const headers: Record<string, string> = { "user-agent": "candlewick", "accept-encoding": "identity", ...extra };
    // The token goes to the hub only, never to a CDN an LFS file redirects to.
    if (this.token && new URL(url).origin === new URL(this.endpoint).origin) headers.authorization = `Bearer ${this.token}`;
    return headers;
  }

  /** The files and commit of a revision. */
  async modelInfo(revision: string): Promise<ModelInfo> {
    const url = `${this.endpoint}/api/models/${this.repoId}/revision/${encodeURIComponent(revision)}`;
    const response = await this.fetch(url, { headers: this.headers(url, { accept: "application/json" }) }, `revision ${revision}`);
    if (!response.ok) throw await this.error(response, `revision "${revision}"`);
    const body = (await response.json().catch(() => undefined)) as { sha?: unknown; siblings?: { rfilename?: unknown }[] } | undefined;
    if (typeof body?.sha !== "string" || !Array.isArray(body.siblings)) {
      throw new CandlewickError(`${url} did not answer as a Hugging Face hub does (no sha and siblings); check HF_ENDPOINT`, HUB);
    }
    return { commit: body.sha, files: body.siblings.map((s) => s.rfilename).filter((f): f is string => typeof f === "string") };
  }

  /** HEAD a file's resolve URL. */
  async fileMetadata(commit: string, file: string): Promise<FileMetadata> {
    let url = `${this.endpoint}/${this.repoId}/resolve/${encodeURIComponent(commit)}/${file.split("/").map(encodeURIComponent).join("/")}`;
    for (let hops = 0; hops <= MAX_REDIRECTS; hops++) {
      const response = await this.fetch(url, { method: "HEAD", redirect: "manual", headers: this.headers(url) }, file);
      const location = response.headers.get("location");
      const redirect = response.status >= 300 && response.status < 400 && location !== null;
      if (!redirect && !response.ok) throw await this.error(response, `file "${file}"`);
      const target = redirect ? new URL(location, url).href : url;
      // Follow redirects that stay on the hub (a renamed repository); stop at one that leaves it.
      if (redirect && new URL(target).origin === new URL(url).origin) {
        url = target;
        continue;
      }
      const headerCommit = response.headers.get("x-repo-commit");
      const etag = normalizeEtag(response.headers.get("x-linked-etag") ?? response.headers.get("etag"));
      if (!headerCommit || !etag) {
        throw new CandlewickError(`${url} answered without ${headerCommit ? "an ETag" : "an X-Repo-Commit header"}, so it does not look like a Hugging Face hub; check HF_ENDPOINT`, HUB);
      }
      const size = response.headers.get("x-linked-size") ?? (redirect ? null : response.headers.get("content-length"));
      return { commit: headerCommit, etag, size: size === null ? undefined : Number(size), url: target };
    }
    throw new CandlewickError(`${this.repoId}/${file}: more than ${MAX_REDIRECTS} redirects`, HUB);
  }

  /**
   * fetch, tried 3 times (a kept-alive connection the server just closed fails at once), with a
   * network failure then turned into ERR_CANDLEWICK_HUB naming the host and the fixes.
   */
  async fetch(url: string, init: RequestInit, what: string): Promise<Response> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fetch(url, { ...init, ...(this.signal ? { signal: this.signal } : {}) });
      } catch (error) {
        if ((error as Error).name === "AbortError") throw error;
        if (attempt === 3) throw networkError(url, `${this.repoId} (${what})`, error);
        await sleep(50 * attempt, undefined, this.signal ? { signal: this.signal } : {});
      }
    }
  }

  /** An HTTP error from the hub as a CandlewickError with the hub's reason (X-Error-Code) and a fix. */
  async error(response: Response, what: string): Promise<CandlewickError> {
    const code = response.headers.get("x-error-code");
    const hubMessage = response.headers.get("x-error-message");
    const status = `HTTP ${response.status}${code ? ` ${code}` : ""}`;
    const repo = `${this.repoId} on ${this.endpoint}`;
    const tokenHint = this.token
      ? "the token that was sent (HF_TOKEN) does not give access to it"
      : "no token was sent: set HF_TOKEN to a token of an account with access";
    if (code === "GatedRepo") {
      return new CandlewickError(`${repo} is gated (${status}): accept its conditions at ${this.endpoint}/${this.repoId}; ${tokenHint}`, HUB_AUTH);
    }
    if (code === "RevisionNotFound") return new CandlewickError(`${repo} has no ${what} (${status})`, HUB_NOT_FOUND);
    if (code === "EntryNotFound") return new CandlewickError(`${repo} has no ${what} (${status})`, HUB_NOT_FOUND);
    if (code === "RepoNotFound" || response.status === 404) {
      return new CandlewickError(`Repository ${repo} was not found (${status}). Check the id; if it is private or gated, ${tokenHint}.`, HUB_NOT_FOUND);
    }
    if (response.status === 401 || response.status === 403) {
      const refused = hubMessage === "Invalid credentials in Authorization header" ? "the hub refused the token (HF_TOKEN)" : tokenHint;
      return new CandlewickError(`${repo} refused access to ${what} (${status}): ${refused}`, HUB_AUTH);
    }
    return new CandlewickError(`${repo} answered ${status} for ${what}${hubMessage ? `: ${hubMessage}` : ""}`, HUB);
  }
}

/** A fetch that failed before any answer (refused, reset, DNS, TLS). */
export function networkError(url: string, what: string, error: unknown): CandlewickError {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  const reason = cause?.code ?? cause?.message ?? (error as Error).message;
  return new CandlewickError(
    `Could not reach ${new URL(url).origin} for ${what} (${reason}). Check the connection and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use only models already in the cache.`,
    HUB,
    { cause: error },
  );
}

/** W/"abc" or "abc" -> abc. */
export function normalizeEtag(etag: string | null): string | undefined {
  if (!etag) return undefined;
  return etag.replace(/^W\//, "").replace(/^"|"$/g, "") || undefined;
}
