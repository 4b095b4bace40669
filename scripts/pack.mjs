#!/usr/bin/env node
// Pack every npm package as it would be published, into --out (default .scratch/packages):
//   candlewick-<version>.tgz                    dist/, the tiny model, README; optionalDependencies on
//                                               every platform package (what `napi pre-publish` adds)
//   candlewick-<platform>-<version>.tgz         one per folder of npm/, with its .node file:
//     npm/linux-x64-gnu        <- candlewick.linux-x64-gnu.node (npm run build:native)
//     npm/linux-x64-gnu-cuda   <- npm/linux-x64-gnu-cuda/candlewick.linux-x64-gnu-cuda.node (npm run build:cuda)
// Packages are staged in a temporary folder, so the working tree is left as it is.
// A platform whose .node was not built is skipped, with a line on stderr saying so (on a machine
// without a CUDA build: the CUDA package), and the main package then lists only the platform
// packages that were packed, so the tarballs install together offline. The CPU package of
// this machine is never skipped: without it the main package would install with no native module.
// Usage: node scripts/pack.mjs [--out DIR] [--node PLATFORM=FILE ...] [--all] [--version V]
//   --node overrides where a platform's .node comes from; --all fails when any platform is
//   missing (scripts/release.mjs: a release ships every platform); --version packs as version V
//   instead of package.json's (release.mjs --dry-run, which changes no file).
// Prints one line per tarball: its absolute path.

import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = fileURLToPath(new URL("..", import.meta.url));
const { values } = parseArgs({
  options: { out: { type: "string" }, node: { type: "string", multiple: true }, all: { type: "boolean" }, version: { type: "string" } },
});
// The CPU package of the machine packing (napi's platform name), which the main package needs.
const HOST_CPU = `${process.platform}-${process.arch}${process.platform === "linux" ? "-gnu" : ""}`;
const out = resolve(values.out ?? join(root, ".scratch/packages"));
const overrides = Object.fromEntries((values.node ?? []).map((spec) => spec.split("=")));
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
if (values.version) pkg.version = values.version;
const stage = mkdtempSync(join(tmpdir(), "candlewick-pack-"));
mkdirSync(out, { recursive: true });

function pack(dir) {
  const file = execFileSync("npm", ["pack", "--silent", "--pack-destination", out], { cwd: dir, encoding: "utf8" }).trim().split("\n").pop();
  console.log(join(out, file));
}

try {
  const platforms = [];
  for (const platform of readdirSync(join(root, "npm"))) {
    const source = join(root, "npm", platform);
    const manifest = JSON.parse(readFileSync(join(source, "package.json"), "utf8"));
    const binary = overrides[platform] ?? (platform.endsWith("-cuda") ? join(source, manifest.main) : join(root, `candlewick.${platform}.node`));
    if (!existsSync(binary)) {
      const build = platform.endsWith("-cuda") ? "npm run build:cuda" : "npm run build:native";
      if (values.all || platform === HOST_CPU) {
        throw new Error(`pack: ${binary} is missing: build it (${build} on ${platform}) or pass --node ${platform}=FILE`);
      }
      console.error(`pack: skipped ${manifest.name}: no ${platform} build here (${binary}; ${build} makes it)`);
      continue;
    }
    const dir = join(stage, platform);
    mkdirSync(dir);
    writeFileSync(join(dir, "package.json"), JSON.stringify({ ...manifest, version: pkg.version }, null, 2));
    cpSync(join(source, "README.md"), join(dir, "README.md"));
    cpSync(binary, join(dir, manifest.main));
    pack(dir);
    platforms.push(manifest.name);
  }

  if (!platforms.includes(`candlewick-${HOST_CPU}`)) throw new Error(`pack: no package of npm/ is for this machine (${HOST_CPU})`);
  const dir = join(stage, "candlewick");
  mkdirSync(dir);
  // package.json's "files" (dist/ and the bundled models) is what the main package ships.
  for (const file of ["README.md", ...pkg.files]) cpSync(join(root, file), join(dir, file), { recursive: true });
  // What a user's npm reads; the development fields (and the prepack guard in scripts) stay here.
  const { devDependencies: _, scripts: __, allowScripts: ___, ava: ____, overrides: _____, ...published } = pkg;
  published.optionalDependencies = Object.fromEntries(platforms.map((name) => [name, pkg.version]));
  writeFileSync(join(dir, "package.json"), JSON.stringify(published, null, 2));
  pack(dir);
} finally {
  rmSync(stage, { recursive: true, force: true });
}
