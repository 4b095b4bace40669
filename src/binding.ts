/**
 * Finds and loads the native module, CUDA build first: the `candlewick-linux-x64-gnu-cuda` package,
 * then `candlewick-linux-x64-gnu`, then a local `candlewick.<platform>.node` (a build from a clone).
 * Loaded through `createRequire`, which Node, Bun and Deno (with --allow-ffi) all support.
 * When nothing loads, the error says why each candidate failed and how to fix it.
 */

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

import { CandlewickError, NO_NATIVE_MODULE } from "./errors.js";

import type * as Native from "./generated/native.js";

export type NativeBinding = typeof Native;

const require = createRequire(import.meta.url);
/** The package root: this file is in src/ or dist/. */
const packageRoot = fileURLToPath(new URL("..", import.meta.url));
const packageVersion = (require("../package.json") as { version: string }).version;

/** The napi-rs platform name: linux-x64-gnu, darwin-arm64, ... */
export function platformName(): string {
  const { platform, arch } = process;
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

let loaded: NativeBinding | undefined;
/** Why the candidates before the one that loaded were passed over ("candlewick-linux-x64-gnu-cuda: libcudnn.so.9: cannot open ..."). */
let passedOver: string[] = [];

/** Why a CUDA build was not used, when the loaded build has no CUDA; undefined otherwise. */
export function whyNoCuda(): string | undefined {
  const binding = loadNative();
  if (binding.buildInfo().cuda) return undefined;
  const cuda = passedOver.find((line) => line.includes("-cuda"));
  return cuda ? `the CUDA build did not load (${cuda.trim().replace(/^- /, "")})` : "no CUDA build is installed (npm install candlewick-linux-x64-gnu-cuda)";
}

/** The native module, loaded on first use (so importing candlewick never fails by itself). */
export function loadNative(): NativeBinding {
  if (loaded) return loaded;
  const platform = platformName();
  const failures: string[] = [];
  for (const candidate of candidates(platform)) {
    let binding: NativeBinding;
    try {
      binding = require(candidate) as NativeBinding;
    } catch (error) {
      failures.push(`  - ${candidate}: ${whyNotLoaded(error, candidate)}`);
      continue;
    }
    const version = typeof binding.buildInfo === "function" ? binding.buildInfo().version : "unknown";
    if (version !== packageVersion) {
      failures.push(`  - ${candidate}: version ${version}, but candlewick is ${packageVersion}`);
      continue;
    }
    loaded = binding;
    passedOver = failures;
    return binding;
  }
  throw new CandlewickError(noBindingMessage(platform, failures), NO_NATIVE_MODULE);
}

function whyNotLoaded(error: unknown, candidate: string): string {
  const e = error as { code?: string; message?: string };
  if (e.code === "MODULE_NOT_FOUND" && e.message?.includes(candidate)) return "not installed";
  return (e.message ?? String(error)).split("\n")[0] ?? "unknown error";
}

function noBindingMessage(platform: string, failures: string[]): string {
  const fixes = [
    `Install the prebuilt package for your platform: npm install candlewick-${platform} (it is an optional dependency: do not install with --omit=optional or --no-optional).`,
    "From a clone of the repository: npm run build:native (needs Rust), which writes candlewick.<platform>.node into the package folder.",
    "Deno: run with --allow-ffi --allow-read --allow-env (without --allow-ffi Deno cannot load native modules).",
    "CUDA build: check that the NVIDIA driver and the CUDA runtime libraries are installed (the package falls back to the CPU build if they are not).",
  ];
  return [
    `candlewick could not load its native module for ${platform}. Tried:`,
    ...failures,
    "Possible fixes:",
    ...fixes.map((f) => `  - ${f}`),
  ].join("\n");
}
