// A throwaway Redis for the queue tests: the binary from scripts/redis.sh (one on PATH, else
// Debian's package unpacked into .cache/redis), started on a free port in a scratch folder with
// append-only persistence (fsync on every write), so that a restart keeps every job.

import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";

import { ROOT } from "./fixtures.js";
import { tempDir } from "./temp.js";

/** The redis-server to run, or why there is none. */
export function findRedis(): { path: string } | { why: string } {
  try {
    const path = execFileSync("bash", [join(ROOT, "scripts/redis.sh")], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
    return { path };
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    return { why: `no redis-server could be had (scripts/redis.sh: ${stderr || (error as Error).message})` };
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export class RedisServer {
  #child: ChildProcess | undefined;
  readonly dir = tempDir("candlewick-redis-");

  private constructor(readonly binary: string, readonly port: number) {}

  static async start(binary: string): Promise<RedisServer> {
    const server = new RedisServer(binary, await freePort());
    await server.#spawn();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async #spawn(): Promise<void> {
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--dir", this.dir, "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"];
    const child = spawn(this.binary, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.#child = child;
    let output = "";
    await new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer) => {
        output += d.toString();
        if (output.includes("Ready to accept connections")) {
          child.stdout!.off("data", onData);
          child.stdout!.resume();
          resolve();
        }
      };
      child.stdout!.on("data", onData);
      child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
      child.once("exit", (code) => reject(new Error(`redis-server exited with ${code}: ${output}`)));
    });
  }

  /** Stop (SIGTERM: Redis flushes its append-only file and exits). */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    });
  }

  /** Stop, then start again on the same port and folder. */
  async restart(): Promise<void> {
    await this.stop();
    await this.#spawn();
  }
}
