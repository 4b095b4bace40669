// The packages users install, made and installed as the README tells: `npm run pack:all`
// (scripts/pack.mjs, every npm package packed with `npm pack`) writes the tarballs, and
// `npm install <folder>/*.tgz` puts them into an empty project (offline: pngjs, the one
// dependency, is added as a tarball packed from node_modules, since `npm ci` fetches tarballs by
// URL and leaves npm's cache without the metadata an offline install needs to resolve pngjs@^7), with cargo, rustc and nvcc hidden from PATH; then
// test/install/smoke.mjs generates with the tiny model that ships in the package
// (test/fixtures/tiny-sd, from scripts/make_fixtures.py) under Node, Bun and Deno, and the installed
// `candlewick` command writes a PNG. Without a CUDA build (npm run build:cuda) pack:all skips the
// CUDA package and says so; the test then adds a stand-in CUDA package that needs libcudart.so.13
// (built here with cc): on a machine without CUDA the loader must skip it for the CPU package and
// say why. Each runtime also downloads the model by hub id from the loopback hub of
// test/helpers/hub-server.ts. Plain `npm pack` of the repository root is refused (it would make a
// package without its native module).

import { execFile } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { promisify } from "node:util";

import test from "ava";
import pngjs from "pngjs";

import { StableDiffusionPipeline } from "../src/pipeline.js";
import { ROOT, TINY_SD } from "./helpers/fixtures.js";
import { HubServer, filesOf } from "./helpers/hub-server.js";
import { tempDir } from "./helpers/temp.js";

const run = promisify(execFile);
const REAL_CUDA = join(ROOT, "npm/linux-x64-gnu-cuda/candlewick.linux-x64-gnu-cuda.node");
const HIDDEN = ["cargo", "rustc", "nvcc"];
/** PATH without the folders that hold a Rust or CUDA compiler. */
const PATH = (process.env.PATH ?? "").split(delimiter).filter((dir) => !HIDDEN.some((bin) => existsSync(join(dir, bin)))).join(delimiter);
const env = { ...process.env, PATH, CANDLEWICK_NATIVE_LIBRARY_PATH: "", npm_config_update_notifier: "false", DENO_NO_UPDATE_CHECK: "1" };

let app = "";
let packages: string[] = [];
let packStderr = "";
let work = "";
let hub: HubServer;

/** A stand-in CUDA build: a shared object that needs libcudart.so.13, which is then removed. */
async function stubCudaAddon(dir: string): Promise<string> {
  writeFileSync(join(dir, "cudart.c"), "int cudaRuntimeGetVersion(int *v) { *v = 13000; return 0; }\n");
  writeFileSync(join(dir, "stub.c"), "int cudaRuntimeGetVersion(int *v);\nint candlewick_stub(void) { int v; return cudaRuntimeGetVersion(&v); }\n");
  await run("cc", ["-shared", "-fPIC", "-o", join(dir, "libcudart.so.13"), "-Wl,-soname,libcudart.so.13", join(dir, "cudart.c")]);
  await run("cc", ["-shared", "-fPIC", "-o", join(dir, "stub.node"), join(dir, "stub.c"), `-L${dir}`, "-Wl,--no-as-needed", "-l:libcudart.so.13"]);
  await run("rm", [join(dir, "libcudart.so.13")]);
  return join(dir, "stub.node");
}

test.before(async () => {
  hub = await new HubServer().start();
  hub.addRepo("tiny/sd", { files: filesOf(TINY_SD), commit: "feedfacefeedfacefeedfacefeedfacefeedface" });
  work = tempDir("candlewick-install-");
  await run(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", join(ROOT, "tsconfig.json")]);
  await run(process.execPath, ["-e", `require("fs").cpSync(${JSON.stringify(join(ROOT, "src/generated"))}, ${JSON.stringify(join(ROOT, "dist/generated"))}, { recursive: true })`]);
  // The README's route: pack:all's tarballs, then `npm install <folder>/*.tgz`.
  const folder = join(work, "packages");
  const packed = await run(process.execPath, [join(ROOT, "scripts/pack.mjs"), "--out", folder]);
  packages = packed.stdout.trim().split("\n");
  packStderr = packed.stderr;
  const installed = readdirSync(folder).filter((f) => f.endsWith(".tgz")).map((f) => join(folder, f));
  if (!existsSync(REAL_CUDA)) {
    const standin = join(work, "standin");
    const { stdout } = await run(process.execPath, [join(ROOT, "scripts/pack.mjs"), "--out", standin, "--node", `linux-x64-gnu-cuda=${await stubCudaAddon(work)}`]);
    installed.push(stdout.trim().split("\n").find((p) => p.includes("-cuda-"))!);
  }
  app = join(work, "app");
  mkdirSync(app);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  copyFileSync(join(ROOT, "test/install/smoke.mjs"), join(app, "smoke.mjs"));
  const pngjs = await run("npm", ["pack", "--silent", "--ignore-scripts", "--pack-destination", work, join(ROOT, "node_modules/pngjs")], { env });
  installed.push(join(work, pngjs.stdout.trim().split("\n").pop()!));
  await run("npm", ["install", "--offline", "--no-audit", "--no-fund", ...installed], { cwd: app, env });
});

test.after.always(async () => {
  await hub?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

test.serial("pack:all makes the main package and one per built platform, with the binaries in them", async (t) => {
  const cuda = existsSync(REAL_CUDA);
  const expected = ["candlewick-0.1.0.tgz", "candlewick-linux-x64-gnu-0.1.0.tgz", ...(cuda ? ["candlewick-linux-x64-gnu-cuda-0.1.0.tgz"] : [])];
  t.deepEqual(packages.map((p) => p.split("/").pop()).sort(), expected);
  if (!cuda) t.regex(packStderr, /pack: skipped candlewick-linux-x64-gnu-cuda: no linux-x64-gnu-cuda build here .*npm run build:cuda makes it/);
  const main = JSON.parse(readFileSync(join(app, "node_modules/candlewick/package.json"), "utf8")) as Record<string, unknown>;
  t.deepEqual(main.optionalDependencies, { "candlewick-linux-x64-gnu": "0.1.0", ...(cuda ? { "candlewick-linux-x64-gnu-cuda": "0.1.0" } : {}) });
  t.is(main.scripts, undefined, "no development scripts (nor the prepack guard) in the published package");
  t.false(existsSync(join(app, "node_modules/candlewick/candlewick.linux-x64-gnu.node")), "the main package carries no binary");
  t.true(existsSync(join(app, "node_modules/candlewick-linux-x64-gnu/candlewick.linux-x64-gnu.node")));
  t.true(existsSync(join(app, "node_modules/candlewick-linux-x64-gnu-cuda/candlewick.linux-x64-gnu-cuda.node")));
  await t.throwsAsync(run("sh", ["-c", "command -v cargo || command -v nvcc"], { env }), undefined, "cargo and nvcc are hidden");
});

test.serial("pack:all --all (the release's packing) refuses to leave a platform out", async (t) => {
  if (existsSync(REAL_CUDA)) return t.pass("every platform is built here");
  const error = await run(process.execPath, [join(ROOT, "scripts/pack.mjs"), "--all", "--out", tempDir("candlewick-pack-all-")]).then(() => undefined, (e: Error & { stderr: string }) => e);
  t.regex(error?.stderr ?? "", /candlewick\.linux-x64-gnu-cuda\.node is missing: build it \(npm run build:cuda on linux-x64-gnu-cuda\)/);
});

test.serial("plain npm pack of the repository root is refused, naming pack:all", async (t) => {
  const error = await run("npm", ["pack", "--dry-run"], { cwd: ROOT, env }).then(() => undefined, (e: Error & { stderr: string }) => e);
  t.truthy(error, "npm pack succeeded");
  t.regex(error?.stderr ?? "", /without its native module .*run npm run pack:all/);
});

test.serial("release.mjs --dry-run changes no file, packs every platform at the new version and publishes the platform packages before the main one", async (t) => {
  const files = ["package.json", "package-lock.json", "npm/linux-x64-gnu/package.json", "Cargo.toml", "Cargo.lock"];
  const before = files.map((f) => readFileSync(join(ROOT, f), "utf8"));
  const cuda = existsSync(REAL_CUDA) ? [] : ["--node", `linux-x64-gnu-cuda=${await stubCudaAddon(tempDir("candlewick-release-"))}`];
  const { stdout } = await run(process.execPath, [join(ROOT, "scripts/release.mjs"), "9.8.7", "--dry-run", "--skip-build", ...cuda], { env: { ...env, npm_config_offline: "true" } });
  t.deepEqual(files.map((f) => readFileSync(join(ROOT, f), "utf8")), before, "no file changed");
  t.regex(stdout, /version 9\.8\.7 -> Cargo\.toml/);
  const published = [...stdout.matchAll(/^\+ (\S+)$/gm)].map((m) => m[1]);
  t.deepEqual(published, ["candlewick-linux-x64-gnu@9.8.7", "candlewick-linux-x64-gnu-cuda@9.8.7", "candlewick@9.8.7"]);
  rmSync(join(ROOT, ".scratch/release-9.8.7"), { recursive: true, force: true });
});

const bin = (name: string) => join(ROOT, "node_modules/.bin", name);
const RUNTIMES: [string, string, string[]][] = [
  ["node", process.execPath, ["smoke.mjs"]],
  ["bun", bin("bun"), ["smoke.mjs"]],
  ["deno", bin("deno"), ["run", "--allow-ffi", "--allow-read", "--allow-env", "--allow-net", "--allow-write", "smoke.mjs"]],
];

let expected = "";
for (const [name, command, args] of RUNTIMES) {
  test.serial(`the installed package generates under ${name} (local and hub models), falling back from CUDA to the CPU build with the reason`, async (t) => {
    expected ||= await (async () => {
      const pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu" });
      const [image] = await pipe.generate({ prompt: "a red apple", width: 32, height: 32, numInferenceSteps: 2, seed: 42 });
      const { createHash } = await import("node:crypto");
      return createHash("sha256").update(image!.data).digest("hex");
    })();
    const { stdout } = await run(command, args, { cwd: app, env });
    const result = JSON.parse(stdout.trim().split("\n").pop()!) as Record<string, unknown>;
    t.is(result.runtime, name);
    t.is(result.sha256, expected, "the same image as from the sources");
    const cache = tempDir("candlewick-install-cache-");
    const fromHub = await run(command, args, { cwd: app, env: { ...env, SMOKE_MODEL: "tiny/sd", HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: cache, HF_TOKEN: "" } });
    const downloaded = JSON.parse(fromHub.stdout.trim().split("\n").pop()!) as Record<string, unknown>;
    t.is(downloaded.modelDir, join(cache, "models--tiny--sd/snapshots/feedfacefeedfacefeedfacefeedfacefeedface"));
    t.is(downloaded.sha256, expected, "the same image from the model downloaded by hub id");
    if (existsSync(REAL_CUDA) && result.cuda) return t.is(result.location, "candlewick-linux-x64-gnu-cuda");
    t.is(result.location, "candlewick-linux-x64-gnu");
    t.is(result.device, "cpu");
    if (!existsSync(REAL_CUDA)) {
      const reason = "the CUDA library libcudart.so.13 is missing (not found on the library path)";
      t.deepEqual(result.skipped, [{ candidate: "candlewick-linux-x64-gnu-cuda", reason }]);
      t.is(result.deviceReason, `device "auto" fell back to the CPU: the CUDA package candlewick-linux-x64-gnu-cuda is installed but did not load: ${reason}`);
    }
  });
}

test.serial("the installed candlewick command writes a PNG", async (t) => {
  const { stdout } = await run(join(app, "node_modules/.bin/candlewick"), ["generate", "a red apple", "--steps", "2", "--width", "32", "--height", "32", "--seed", "1", "--out", "apple.png", "--quiet"], { cwd: app, env });
  t.is(stdout, "apple.png\n");
  const png = pngjs.PNG.sync.read(readFileSync(join(app, "apple.png")));
  t.is(png.width, 32);
});
