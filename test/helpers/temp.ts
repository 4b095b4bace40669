/**
 * Scratch folders for tests, removed when the test process exits (ava runs each test file in a
 * process of its own), so that a run leaves nothing under the system's temporary folder.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const made: string[] = [];
let hooked = false;

/** A new empty folder under the system's temporary folder, named `prefix` + random letters. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  if (!hooked) {
    hooked = true;
    process.on("exit", () => {
      for (const d of made) {
        try {
          rmSync(d, { recursive: true, force: true });
        } catch {
          // A folder a test made unreadable: left for the system to clean.
        }
      }
    });
  }
  return dir;
}
