/** A model given by folder or by hub id ("org/name"): the folder the pipeline loads. */

import { existsSync } from "node:fs";
import { resolve } from "node:path";

import { CandlewickError, HUB_NOT_FOUND } from "../errors.js";
import { downloadPipeline, type HubOptions } from "./download.js";

/** "org/name", as the hub spells repository ids (letters, digits, "-", "_", "."; no "--" or ".." runs). */
export function isRepoId(name: string): boolean {
  return /^[A-Za-z0-9][\w.-]{0,95}\/[\w.-]{1,96}$/.test(name) && !/--|\.\./.test(name) && !/[.-]$/.test(name);
}

/**
 * A path that exists is used as is. Otherwise a hub id is downloaded (or found in the cache) and its
 * snapshot folder returned; anything else comes back as an absolute path, for the loader to report.
 */
export async function resolveModel(nameOrPath: string, options: HubOptions = {}): Promise<string> {
  if (existsSync(nameOrPath) || !isRepoId(nameOrPath)) return resolve(nameOrPath);
  try {
    return (await downloadPipeline(nameOrPath, options)).dir;
  } catch (error) {
    if (error instanceof CandlewickError && error.code === HUB_NOT_FOUND && error.message.startsWith("Repository ")) {
      const message = `${error.message} (There is no folder ${resolve(nameOrPath)} either.)`;
      throw new CandlewickError(message, HUB_NOT_FOUND, { cause: error });
    }
    throw error;
  }
}
