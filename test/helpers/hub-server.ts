// A Hugging Face hub on loopback, answering as huggingface.co does (as huggingface_hub's
// file_download.py and hf_api.py expect it): the revision and tree APIs, resolve URLs with X-Repo-Commit and
// ETag (git blob sha1) for small files, and for LFS files (*.safetensors) a 302 to a second server
// (the "CDN", another origin) with X-Linked-Etag (sha256) and X-Linked-Size; Range requests; errors
// with X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo); repository renames
// (307); and faults on demand: a connection dropped in the middle of a file.

import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join, relative } from "node:path";

export interface HubRepo {
  /** path -> contents. */
  files: Map<string, Buffer>;
  /** The commit "main" points at. */
  commit: string;
  /** When set, only this token may read the repository (a gated model); others get 401/403 GatedRepo. */
  token?: string;
}

export interface LoggedRequest {
  server: "hub" | "cdn";
  method: string;
  url: string;
  authorization: string | undefined;
  range: string | undefined;
}

export const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");
/** Git's blob hash: the ETag the hub gives files that are not in LFS. */
export const gitBlobSha1 = (data: Buffer) => createHash("sha1").update(`blob ${data.length}\0`).update(data).digest("hex");
const isLfs = (path: string) => path.endsWith(".safetensors") || path.endsWith(".bin");

/** Every file under `dir`, as a repository's files. */
export function filesOf(dir: string): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const walk = (folder: string) => {
    for (const name of readdirSync(folder)) {
      const path = join(folder, name);
      if (statSync(path).isDirectory()) walk(path);
      else files.set(relative(dir, path), readFileSync(path));
    }
  };
  walk(dir);
  return files;
}

export class HubServer {
  readonly repos = new Map<string, HubRepo>();
  /** Old id -> new id: the hub answers 307 to the new name. */
  readonly renamed = new Map<string, string>();
  /** path -> bytes after which the next GET of that file loses its connection (once each). */
  readonly dropAfter = new Map<string, number>();
  readonly log: LoggedRequest[] = [];
  endpoint = "";
  cdn = "";
  readonly #servers: Server[] = [];
  /** sha256 -> contents, for the CDN. */
  readonly #blobs = new Map<string, { data: Buffer; path: string }>();

  addRepo(id: string, repo: HubRepo): void {
    this.repos.set(id, repo);
    for (const [path, data] of repo.files) if (isLfs(path)) this.#blobs.set(sha256(data), { data, path });
  }

  async start(): Promise<this> {
    const hub = createServer((req, res) => this.#hub(req, res));
    const cdn = createServer((req, res) => this.#cdn(req, res));
    for (const server of [hub, cdn]) {
      await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
      this.#servers.push(server);
    }
    this.endpoint = `http://127.0.0.1:${(hub.address() as AddressInfo).port}`;
    this.cdn = `http://127.0.0.1:${(cdn.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    for (const server of this.#servers) {
      server.closeAllConnections();
      await new Promise((done) => server.close(done));
    }
  }

  /** Requests made since `from` (an index into the log), on one server. */
  requests(server: "hub" | "cdn", from = 0): LoggedRequest[] {
    return this.log.slice(from).filter((r) => r.server === server);
  }

  #record(server: "hub" | "cdn", req: IncomingMessage): void {
    this.log.push({ server, method: req.method ?? "", url: req.url ?? "", authorization: req.headers.authorization, range: req.headers.range });
  }

  #hub(req: IncomingMessage, res: ServerResponse): void {
    this.#record("hub", req);
    const url = new URL(req.url ?? "/", this.endpoint);
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/(revision|tree)\/([^/]+)$/.exec(url.pathname);
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const id = api?.[1] ?? resolve?.[1];
    if (!id) return error(res, 404, "", "Not found");
    const newId = this.renamed.get(id);
    if (newId) {
      res.writeHead(307, { location: url.pathname.replace(id, newId) });
      return void res.end();
    }
    const repo = this.repos.get(id);
    // As huggingface.co: an anonymous request for a missing repository gets 401, not 404.
    if (!repo) return error(res, req.headers.authorization ? 404 : 401, "RepoNotFound", "Repository not found");
    if (repo.token !== undefined) {
      const sent = req.headers.authorization;
      if (!sent) return error(res, 401, "GatedRepo", `Access to model ${id} is restricted. You must be authenticated to access it.`);
      if (sent !== `Bearer ${repo.token}`) return error(res, 401, "", "Invalid credentials in Authorization header");
    }
    const revision = decodeURIComponent((api ? api[3] : resolve![2])!);
    if (revision !== "main" && revision !== repo.commit) return error(res, 404, "RevisionNotFound", `Invalid rev id: ${revision}`);
    if (api) {
      const body = JSON.stringify(api[2] === "tree" ? tree(repo) : { id, sha: repo.commit, siblings: [...repo.files.keys()].map((rfilename) => ({ rfilename })) });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      return void res.end(body);
    }
    const path = decodeURIComponent(resolve![3]!);
    const data = repo.files.get(path);
    if (!data) return error(res, 404, "EntryNotFound", `${path} does not exist on "${revision}"`, { "x-repo-commit": repo.commit });
    if (isLfs(path)) {
      const sha = sha256(data);
      res.writeHead(302, {
        location: `${this.cdn}/blobs/${sha}`,
        "x-repo-commit": repo.commit,
        "x-linked-etag": `"${sha}"`,
        "x-linked-size": String(data.length),
        etag: `"${gitBlobSha1(Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha}\nsize ${data.length}\n`))}"`,
      });
      return void res.end();
    }
    send(req, res, data, path, { "x-repo-commit": repo.commit, etag: `"${gitBlobSha1(data)}"` }, this.dropAfter);
  }

  #cdn(req: IncomingMessage, res: ServerResponse): void {
    this.#record("cdn", req);
    const sha = /^\/blobs\/([0-9a-f]{64})$/.exec(req.url ?? "")?.[1];
    const blob = sha ? this.#blobs.get(sha) : undefined;
    if (!blob) return error(res, 404, "", "NoSuchKey");
    send(req, res, blob.data, blob.path, { etag: `"${sha}"` }, this.dropAfter);
  }
}

/** The recursive tree listing huggingface_hub's snapshot_download reads (one page). */
function tree(repo: HubRepo): object[] {
  const folders = new Set([...repo.files.keys()].flatMap((f) => f.split("/").slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join("/"))));
  const entries: object[] = [...folders].map((path) => ({ type: "directory", oid: gitBlobSha1(Buffer.from(path)), path }));
  for (const [path, data] of repo.files) {
    const lfs = isLfs(path) ? { lfs: { oid: sha256(data), size: data.length, pointerSize: 134 } } : {};
    entries.push({ type: "file", oid: gitBlobSha1(data), size: data.length, path, ...lfs });
  }
  return entries;
}

function error(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  const body = JSON.stringify({ error: message });
  res.writeHead(status, { ...headers, ...(code ? { "x-error-code": code } : {}), "x-error-message": message, "content-type": "application/json" });
  res.end(body); // Node sends no body for HEAD.
}

/** 200 or (for `Range: bytes=N-`) 206; a GET of a file in `dropAfter` sends that many bytes and then cuts the connection. */
function send(req: IncomingMessage, res: ServerResponse, data: Buffer, path: string, headers: Record<string, string>, dropAfter: Map<string, number>): void {
  const from = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? "")?.[1] ?? 0);
  const body = data.subarray(from);
  const status = from > 0 ? 206 : 200;
  const range = from > 0 ? { "content-range": `bytes ${from}-${data.length - 1}/${data.length}` } : {};
  res.writeHead(status, { ...headers, ...range, "content-length": String(body.length), "accept-ranges": "bytes" });
  if (req.method === "HEAD") return void res.end();
  const drop = dropAfter.get(path);
  if (drop !== undefined && drop > from && drop < data.length) {
    dropAfter.delete(path);
    // Cut only once the client has had time to take in every byte sent (the test expects the
    // resume at exactly `drop`): a busy machine needed more than 20 ms, and a cut discards what
    // the client's fetch has received but not yet handed on.
    res.write(data.subarray(from, drop), () => setTimeout(() => res.socket?.destroy(), 500));
    return;
  }
  res.end(body);
}
