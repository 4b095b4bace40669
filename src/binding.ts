/**
 * Finds and loads the native module, CUDA build first: CANDLEWICK_NATIVE_LIBRARY_PATH when set,
 * then the `candlewick-<platform>-cuda` package, then `candlewick-<platform>` (the CPU build), then
 * a local `candlewick.<platform>.node` (a build from a clone). Loaded through `createRequire`, which
 * Node, Bun and Deno (with --allow-ffi) all support. A CUDA build that does not load (a missing CUDA
 * library, an old glibc or driver) is skipped for the CPU one, and `nativeInfo()` says why; when
 * nothing loads, the error says why each candidate failed and lists the fixes.
 */

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

import { CandlewickError, NO_NATIVE_MODULE } from "./errors.js";
import { explainLoadError } from "./load-errors.js";

import type * as Native from "./generated/native.js";

/** @internal */
export type NativeBinding = typeof Native;

/** Which native build is in use, and what was tried before it. */
export interface NativeInfo {
  /** The package name or file that loaded. */
  location: string;
  /** Whether it was compiled with CUDA. */
  cuda: boolean;
  /** Candidates tried first that did not load, with the reason ("not installed", "libcudart.so.13 is missing", ...). */
  skipped: { candidate: string; reason: string }[];
}

const require = createRequire(import.meta.url);
/** The package root: this file is in src/ or dist/. */
const packageRoot = fileURLToPath(new URL("..", import.meta.url));
const packageVersion = (require("../package.json") as { version: string }).version;

/** The napi-rs platform name: linux-x64-gnu, linux-arm64-gnu, darwin-arm64, win32-x64-msvc, ... */
export function platformName(): string {
  const { platform, arch } = process;
  if (platform === "win32") return `win32-${arch}-msvc`;
  if (platform !== "linux") return `${platform}-${arch}`;
  return `${platform}-${arch}-${isMusl() ? "musl" : "gnu"}`;
}

/** musl or glibc, as napi-rs's own loader tells them apart: by what /usr/bin/ldd is (no process.report, which Deno gates behind --allow-sys). */
function isMusl(): boolean {
  try {
    return readFileSync("/usr/bin/ldd", "utf8").includes("musl");
  } catch {
    return false;
  }
}

/** Where a native build may be, in the order they are tried. */
export function candidates(platform = platformName()): string[] {
  const local = `${packageRoot}candlewick.${platform}.node`;
  const fromEnv = process.env.CANDLEWICK_NATIVE_LIBRARY_PATH;
  return [...(fromEnv ? [fromEnv] : []), `candlewick-${platform}-cuda`, `candlewick-${platform}`, local];
}

let loaded: { binding: NativeBinding; info: NativeInfo } | undefined;

/** The native module, loaded on first use (so importing candlewick never fails by itself). @internal */
export function loadNative(): NativeBinding {
  return load().binding;
}

/** Which native build candlewick uses (loading it if it is not loaded yet). */
export function nativeInfo(): NativeInfo {
  return load().info;
}

function load(): { binding: NativeBinding; info: NativeInfo } {
  if (loaded) return loaded;
  const platform = platformName();
  const skipped: NativeInfo["skipped"] = [];
  const fixes = new Set<string>();
  for (const candidate of candidates(platform)) {
    let binding: NativeBinding;
    try {
      binding = require(candidate) as NativeBinding;
    } catch (error) {
      const why = explainLoadError(error, candidate);
      skipped.push({ candidate, reason: why.reason });
      why.fixes.forEach((f) => fixes.add(f));
      continue;
    }
    const build = typeof binding.buildInfo === "function" ? binding.buildInfo() : { version: "unknown", cuda: false };
    if (build.version !== packageVersion) {
      skipped.push({ candidate, reason: `version ${build.version}, but candlewick is ${packageVersion}` });
      fixes.add(`Install matching versions: npm install candlewick@${packageVersion} ${candidate}@${packageVersion}.`);
      continue;
    }
    loaded = { binding, info: Object.freeze({ location: candidate, cuda: build.cuda, skipped }) };
    return loaded;
  }
  throw new CandlewickError(noBindingMessage(platform, skipped, [...fixes]), NO_NATIVE_MODULE);
}

/**
 * Why the CPU build runs although the CUDA package is installed (it did not load), for
 * `pipe.deviceReason`; undefined when the CUDA build runs or is not installed.
 */
export function cudaSkipped(): string | undefined {
  if (!loaded || loaded.info.cuda) return undefined;
  const skip = loaded.info.skipped.find((s) => s.candidate.endsWith("-cuda") && s.reason !== "not installed");
  return skip && `the CUDA package ${skip.candidate} is installed but did not load: ${skip.reason}`;
}

function noBindingMessage(platform: string, skipped: NativeInfo["skipped"], specific: string[]): string {
  const fixes = [
    ...specific,
    `Install the prebuilt package for your platform, candlewick-${platform}, beside candlewick (it is an optional dependency: do not install with --omit=optional or --no-optional). It is not on the npm registry yet: make its tarball in a clone with npm run pack:all and npm install it (README, "Install").`,
    "From a clone of the repository: npm run build:native (needs Rust), which writes candlewick.<platform>.node into the package folder.",
    "Deno: run with --allow-ffi --allow-read --allow-env (without --allow-ffi Deno cannot load native modules).",
  ];
  return [
    `candlewick could not load its native module for ${platform}. Tried:`,
    ...skipped.map((s) => `  - ${s.candidate}: ${s.reason}`),
    "Possible fixes:",
    ...fixes.map((f) => `  - ${f}`),
  ].join("\n");
}

/** Why no CUDA build runs, when the loaded build has no CUDA (for device "cuda" errors and "auto"'s reason); undefined otherwise. */
export function whyNoCuda(): string | undefined {
  loadNative();
  if (!loaded || loaded.info.cuda) return undefined;
  return cudaSkipped() ?? "no CUDA build is installed (candlewick-linux-x64-gnu-cuda: not on the npm registry yet; npm run build:cuda and npm run pack:all in a clone make its tarball)";
}
