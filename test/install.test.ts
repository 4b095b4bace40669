// The packages users install: every npm package packed with `npm pack` (scripts/pack.mjs), installed
// from the tarballs into an empty project (npm --offline), with cargo, rustc and nvcc hidden from
// PATH; then test/install/smoke.mjs generates with the tiny model that ships in the package
// (test/fixtures/tiny-sd, from scripts/make_fixtures.py) under Node, Bun and Deno, and the installed
// `candlewick` command writes a PNG. The CUDA package holds the real CUDA build when one was built
// (npm run build:cuda), else a stand-in that needs libcudart.so.13 (built here with cc): on a machine
// without CUDA the loader must skip it for the CPU package and say why. Each runtime also downloads
// the model by hub id from the loopback hub of test/helpers/hub-server.ts.

import { execFile } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { promisify } from "node:util";

import test from "ava";
import pngjs from "pngjs";

import { StableDiffusionPipeline } from "../src/pipeline.js";
import { ROOT, TINY_SD } from "./helpers/fixtures.js";
import { HubServer, filesOf } from "./helpers/hub-server.js";

const run = promisify(execFile);
const REAL_CUDA = join(ROOT, "npm/linux-x64-gnu-cuda/candlewick.linux-x64-gnu-cuda.node");
const HIDDEN = ["cargo", "rustc", "nvcc"];
/** PATH without the folders that hold a Rust or CUDA compiler. */
const PATH = (process.env.PATH ?? "").split(delimiter).filter((dir) => !HIDDEN.some((bin) => existsSync(join(dir, bin)))).join(delimiter);
const env = { ...process.env, PATH, CANDLEWICK_NATIVE_LIBRARY_PATH: "", npm_config_update_notifier: "false", DENO_NO_UPDATE_CHECK: "1" };

let app = "";
let packages: string[] = [];
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
  const work = mkdtempSync(join(tmpdir(), "candlewick-install-"));
  await run(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", join(ROOT, "tsconfig.json")]);
  await run(process.execPath, ["-e", `require("fs").cpSync(${JSON.stringify(join(ROOT, "src/generated"))}, ${JSON.stringify(join(ROOT, "dist/generated"))}, { recursive: true })`]);
  const cuda = existsSync(REAL_CUDA) ? [] : ["--node", `linux-x64-gnu-cuda=${await stubCudaAddon(work)}`];
  const { stdout } = await run(process.execPath, [join(ROOT, "scripts/pack.mjs"), "--out", join(work, "packages"), ...cuda]);
  packages = stdout.trim().split("\n");
  app = join(work, "app");
  mkdirSync(app);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  copyFileSync(join(ROOT, "test/install/smoke.mjs"), join(app, "smoke.mjs"));
  await run("npm", ["install", "--offline", "--no-audit", "--no-fund", ...packages], { cwd: app, env });
});

test.after.always(async () => {
  await hub?.close();
});

test.serial("npm pack makes the main package and one per platform folder, with the binaries in them", async (t) => {
  t.deepEqual(packages.map((p) => p.split("/").pop()).sort(), ["candlewick-0.1.0.tgz", "candlewick-linux-x64-gnu-0.1.0.tgz", "candlewick-linux-x64-gnu-cuda-0.1.0.tgz"]);
  const main = JSON.parse(readFileSync(join(app, "node_modules/candlewick/package.json"), "utf8")) as Record<string, unknown>;
  t.deepEqual(main.optionalDependencies, { "candlewick-linux-x64-gnu": "0.1.0", "candlewick-linux-x64-gnu-cuda": "0.1.0" });
  t.false(existsSync(join(app, "node_modules/candlewick/candlewick.linux-x64-gnu.node")), "the main package carries no binary");
  t.true(existsSync(join(app, "node_modules/candlewick-linux-x64-gnu/candlewick.linux-x64-gnu.node")));
  t.true(existsSync(join(app, "node_modules/candlewick-linux-x64-gnu-cuda/candlewick.linux-x64-gnu-cuda.node")));
  await t.throwsAsync(run("sh", ["-c", "command -v cargo || command -v nvcc"], { env }), undefined, "cargo and nvcc are hidden");
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
    const cache = mkdtempSync(join(tmpdir(), "candlewick-install-cache-"));
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
