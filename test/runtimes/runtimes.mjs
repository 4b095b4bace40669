// How to run test/runtimes/smoke.mjs under each runtime.

import { spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const bin = (name) => join(root, "node_modules/.bin", name);
const smoke = join(root, "test/runtimes/smoke.mjs");

export const runtimes = [
  { name: "node", command: process.execPath, args: [smoke] },
  { name: "bun", command: bin("bun"), args: [smoke] },
  // Deno needs --allow-ffi to load a native module ("Cannot find native binding" without it).
  { name: "deno", command: bin("deno"), args: ["run", "--allow-ffi", "--allow-read", "--allow-env", "--allow-write", smoke] },
];

/** Run the smoke test under one runtime; resolves with its exit code and output. */
export function runSmoke(runtime) {
  return new Promise((resolve) => {
    const child = spawn(runtime.command, runtime.args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.on("error", (e) => resolve({ code: -1, output: `${output}${e.message}\n` }));
    child.on("close", (code) => resolve({ code, output }));
  });
}
