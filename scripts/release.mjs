#!/usr/bin/env node
// A release, as a maintainer runs it (npm run release -- VERSION [options]):
//   1. version: VERSION into package.json, npm/*/package.json, package-lock.json, the Cargo
//      workspace (Cargo.toml's [workspace.package]) and Cargo.lock's entries of our crates;
//   2. build, per platform of npm/: linux-x64-gnu with `npm run build` here; linux-x64-gnu-cuda
//      with `npm run build:cuda` here (CUTLASS_GIT, about an hour on 2 cores) unless its .node
//      comes from elsewhere (--node PLATFORM=FILE, e.g. built on another machine);
//   3. pack: scripts/pack.mjs --all into .scratch/release-VERSION: fails unless every platform
//      was built, so the main package never lists a platform package that is not published;
//   4. publish: `npm publish` of each platform tarball first, then the main package (which
//      names them in optionalDependencies at the same version), then prints the git commands
//      that commit and tag the release.
// Options:
//   --dry-run     writes no file (the tarballs are packed as VERSION all the same), runs
//                 `npm publish --dry-run`, and prints each step; the way to check a release.
//   --skip-build  use the .node files already built (or given with --node).
//   --node PLATFORM=FILE  the .node of a platform built elsewhere (passed to pack.mjs).
//   --tag TAG     npm dist-tag (default: latest).
// Needs a clean git tree unless --dry-run; publishing needs `npm login` (or NODE_AUTH_TOKEN).

import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = fileURLToPath(new URL("..", import.meta.url));
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    "dry-run": { type: "boolean" },
    "skip-build": { type: "boolean" },
    node: { type: "string", multiple: true },
    tag: { type: "string", default: "latest" },
  },
});
const [version] = positionals;
if (!version || !/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(version)) {
  console.error("usage: node scripts/release.mjs VERSION [--dry-run] [--skip-build] [--node PLATFORM=FILE ...] [--tag TAG]");
  process.exit(2);
}
const dry = values["dry-run"] ?? false;
const overrides = values.node ?? [];
const step = (text) => console.log(`release${dry ? " (dry run)" : ""}: ${text}`);
const sh = (command, args, options = {}) => {
  step(`$ ${[command, ...args].join(" ")}`);
  return execFileSync(command, args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], ...options });
};

// 1. Version.
if (!dry && sh("git", ["status", "--porcelain", "--untracked-files=no"]).trim()) {
  throw new Error("release: the git tree has uncommitted changes; commit or stash them first");
}
const edits = [];
const json = (file, update) => {
  const data = JSON.parse(readFileSync(join(root, file), "utf8"));
  update(data);
  edits.push([file, `${JSON.stringify(data, null, 2)}\n`]);
};
json("package.json", (p) => (p.version = version));
for (const platform of readdirSync(join(root, "npm"))) json(`npm/${platform}/package.json`, (p) => (p.version = version));
json("package-lock.json", (p) => {
  p.version = version;
  p.packages[""].version = version;
});
const cargoToml = readFileSync(join(root, "Cargo.toml"), "utf8");
const workspaceVersion = /(\[workspace\.package\][^[]*?\nversion = )"[^"]*"/;
if (!workspaceVersion.test(cargoToml)) throw new Error("release: no version in Cargo.toml's [workspace.package]");
edits.push(["Cargo.toml", cargoToml.replace(workspaceVersion, `$1"${version}"`)]);
const cargoLock = readFileSync(join(root, "Cargo.lock"), "utf8");
edits.push(["Cargo.lock", cargoLock.replace(/(name = "candlewick-(?:core|node)"\nversion = )"[^"]*"/g, `$1"${version}"`)]);
for (const [file, text] of edits) {
  step(`version ${version} -> ${file}`);
  if (!dry) writeFileSync(join(root, file), text);
}

// 2. Build.
const given = new Set(overrides.map((spec) => spec.split("=")[0]));
if (values["skip-build"]) {
  step("build skipped (--skip-build): packing the .node files already built");
} else {
  if (dry) step("the builds below run for real: --skip-build leaves them out");
  sh("npm", ["run", "build"], { stdio: "inherit" });
  if (!given.has("linux-x64-gnu-cuda")) sh("npm", ["run", "build:cuda"], { stdio: "inherit" });
}

// 3. Pack, every platform or nothing.
const out = join(root, ".scratch", `release-${version}`);
sh("npm", ["run", "--silent", "build:ts"], { stdio: "inherit" });
const packArgs = [join(root, "scripts/pack.mjs"), "--all", "--out", out, "--version", version, ...overrides.flatMap((spec) => ["--node", spec])];
const tarballs = sh(process.execPath, packArgs).trim().split("\n");
const main = tarballs.find((file) => file.endsWith(`/candlewick-${version}.tgz`));
const platforms = tarballs.filter((file) => file !== main);
if (!main || !existsSync(main)) throw new Error(`release: pack.mjs made no main package (${tarballs.join(", ")})`);

// 4. Publish: platform packages first, so that the main package's optionalDependencies resolve
// from the moment it is published.
for (const tarball of [...platforms, main]) {
  sh("npm", ["publish", tarball, "--access", "public", "--tag", values.tag, ...(dry ? ["--dry-run"] : [])], { stdio: "inherit" });
}
step(`published ${[...platforms, main].map((file) => file.split("/").pop()).join(", ")}`);
if (!dry) {
  step(`now: git commit -am "Release ${version}" && git tag v${version} && git push --follow-tags`);
}
