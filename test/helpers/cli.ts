// Running the `candlewick` command as a user runs it: a child process (through tsx, from the
// sources), stdin closed, stdout and stderr pipes (not a TTY).

import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

import { ROOT } from "./fixtures.js";
import { tempDir } from "./temp.js";

export const MAIN = join(ROOT, "src/cli/main.ts");

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: NodeJS.ProcessEnv;
  /** Run as the unprivileged user "nobody" (when the tests run as root, for whom read-only folders are writable). */
  unprivileged?: boolean;
  /** Called with the child and each new line of its stdout. */
  onLine?: (line: string, child: ChildProcess) => void;
}

/** At most two CLIs at once: each is a Node process compiling TypeScript through tsx. */
let running = 0;
const waiting: (() => void)[] = [];
async function slot<T>(work: () => Promise<T>): Promise<T> {
  if (running >= 2) await new Promise<void>((wake) => waiting.push(wake));
  running++;
  try {
    return await work();
  } finally {
    running--;
    waiting.shift()?.();
  }
}

/** Run the CLI with `args`. */
export function cli(...args: string[]): Promise<Run> {
  return cliWith({}, ...args);
}

export function cliWith(options: CliOptions, ...args: string[]): Promise<Run> {
  return slot(() => spawnCli(args, options));
}

const asRoot = process.getuid?.() === 0;

/**
 * A copy of this process's node that the unprivileged user can run: test:all runs the tests on Node
 * releases it keeps under ~/.cache, which "nobody" cannot reach when HOME is /root.
 */
let nodeForNobody: string | undefined;
function unprivilegedNode(): string {
  if (!nodeForNobody) {
    const dir = scratch("candlewick-node-");
    nodeForNobody = join(dir, "node");
    copyFileSync(process.execPath, nodeForNobody);
    chmodSync(nodeForNobody, 0o755);
  }
  return nodeForNobody;
}

function spawnCli(args: string[], options: CliOptions): Promise<Run> {
  return new Promise((resolve, reject) => {
    const spawnOptions: SpawnOptions = { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...options.env } };
    const unprivileged = options.unprivileged && asRoot;
    if (unprivileged) Object.assign(spawnOptions, { uid: 65534, gid: 65534 });
    const child = spawn(unprivileged ? unprivilegedNode() : process.execPath, ["--import", "tsx", MAIN, ...args], spawnOptions);
    let stdout = "";
    let stderr = "";
    let partial = "";
    child.stdout!.on("data", (d: Buffer) => {
      stdout += d.toString();
      const lines = (partial + d.toString()).split("\n");
      partial = lines.pop()!;
      for (const line of lines) options.onLine?.(line, child);
    });
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code: code ?? (signal ? 128 : null), stdout, stderr }));
  });
}

/** A scratch folder (world-writable, so that an unprivileged child can use it). */
export function scratch(prefix = "candlewick-cli-"): string {
  const dir = tempDir(prefix);
  chmodSync(dir, 0o777);
  return dir;
}

/** A folder that an unprivileged process cannot write to. */
export function readOnlyDir(): string {
  const dir = join(scratch(), "read-only");
  mkdirSync(dir);
  chmodSync(dir, 0o555);
  return dir;
}
