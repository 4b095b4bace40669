/** A model given by folder, by hub id ("org/name") or by hub file ("org/name/file.safetensors"): the path the pipeline loads. */

import { existsSync } from "node:fs";
import { resolve } from "node:path";

import { CandlewickError, HUB_NOT_FOUND } from "../errors.js";
import { downloadPipeline, type HubOptions } from "./download.js";
import { isRepoId } from "./http.js";
import { downloadFile, hubFilePath } from "./single-file.js";

/**
 * A path that exists is used as is. Otherwise a hub id is downloaded (or found in the cache) and its
 * snapshot folder returned, and a hub file ("org/name/model.safetensors") is downloaded alone and
 * its path returned (a single-file checkpoint); anything else comes back as an absolute path, for
 * the loader to report.
 */
export async function resolveModel(nameOrPath: string, options: HubOptions = {}): Promise<string> {
  if (existsSync(nameOrPath)) return resolve(nameOrPath);
  const hubFile = hubFilePath(nameOrPath);
  if (!isRepoId(nameOrPath) && !hubFile) return resolve(nameOrPath);
  try {
    if (hubFile) return await downloadFile(hubFile.repoId, hubFile.file, options);
    return (await downloadPipeline(nameOrPath, options)).dir;
  } catch (error) {
    if (error instanceof CandlewickError && error.code === HUB_NOT_FOUND && error.message.startsWith("Repository ")) {
      const message = `${error.message} (There is no folder ${resolve(nameOrPath)} either.)`;
      throw new CandlewickError(message, HUB_NOT_FOUND, { cause: error });
    }
    throw error;
  }
}
