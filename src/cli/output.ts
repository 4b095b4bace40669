/**
 * Writing the CLI's files: a failure names the path and why, as ERR_CANDLEWICK_OUTPUT; and the
 * check, before any work, that the files can be written (their folder is created when missing, as
 * `batch --out` creates its folder).
 */

import { mkdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname } from "node:path";

import { CandlewickError, OUTPUT } from "../errors.js";

/** A file system write whose failure names the path, as ERR_CANDLEWICK_OUTPUT; `after` ends the message. */
export async function writeOutput<T>(path: string, write: () => Promise<T>, after = ""): Promise<T> {
  try {
    return await write();
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === undefined) throw error;
    const reason = (error as Error).message.split(", ")[0]?.replace(/^[A-Z]+: /, "");
    throw new CandlewickError(`cannot write ${path} (${code}: ${reason})${after}`, OUTPUT, { cause: error });
  }
}

/** Check that each file can be written (creating its folder), before the work that makes it. */
export async function checkOutputFiles(paths: readonly string[]): Promise<void> {
  for (const path of paths) {
    const dir = dirname(path);
    // mkdir would say EEXIST ("file already exists") for a file where the folder should be.
    if ((await writeOutput(path, () => isFolder(dir))) === false) {
      throw new CandlewickError(`cannot write ${path} (ENOTDIR: ${dir} is a file, not a folder)`, OUTPUT);
    }
    await writeOutput(path, () => mkdir(dir, { recursive: true }));
    if (await writeOutput(path, () => isFolder(path))) throw new CandlewickError(`cannot write ${path} (EISDIR: it is a folder)`, OUTPUT);
    // A real write, as the file's will be: permissions, read-only file systems and ACLs all show. The
    // probe's name is this process's, so that two runs writing to one folder do not remove each other's.
    const probe = `${path}.${process.pid}.tmp`;
    await writeOutput(path, async () => {
      await writeFile(probe, "");
      await rm(probe, { force: true });
    });
  }
}

/** Whether `path` is a folder; undefined when nothing is there. */
async function isFolder(path: string): Promise<boolean | undefined> {
  const stats = await stat(path).catch((error: { code?: string }) => {
    if (error.code === "ENOENT") return undefined;
    throw error;
  });
  return stats?.isDirectory();
}

/** Write a file whole or not at all: into `path`.tmp, then renamed over `path`. */
export async function writeFileAtomically(path: string, data: Uint8Array, after = ""): Promise<void> {
  await writeOutput(path, () => writeFile(`${path}.tmp`, data), after);
  await writeOutput(path, () => rename(`${path}.tmp`, path), after);
}
