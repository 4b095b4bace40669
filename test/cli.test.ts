// The `candlewick` command, run as a user runs it (a child process). The generating tests use the
// CLI's default model, the trained shapes model that ships in the package (test/fixtures/shapes-sd, made by
// scripts/train_demo_model.py); they need the native module (npm run build:native).

import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import test from "ava";
import pngjs from "pngjs";

import { checkOutputFiles } from "../src/cli/output.js";
import { readTextChunks } from "../src/png-text.js";
import { cli, cliWith, readOnlyDir, scratch } from "./helpers/cli.js";
import { copyOfTinySd, ROOT, TINY_SD } from "./helpers/fixtures.js";

const VERSION = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;

test("--help lists the commands and exits 0", async (t) => {
  const { code, stdout } = await cli("--help");
  t.is(code, 0);
  t.regex(stdout, /^Usage: candlewick <command> \[options\]/);
  t.regex(stdout, /generate <prompt>/);
});

test("generate --help lists every flag", async (t) => {
  const { code, stdout } = await cli("generate", "--help");
  t.is(code, 0);
  const flags = ["--model", "--out", "--negative-prompt", "--steps", "--guidance", "--width", "--height", "--seed", "--num-images", "--device", "--dtype", "--fp8", "--eta", "--timestep-spacing", "--help"];
  for (const flag of flags) t.true(stdout.includes(`  ${flag} `) || stdout.includes(`  ${flag},`), `${flag} is documented`);
});

test("--version prints the package version", async (t) => {
  const { code, stdout } = await cli("--version");
  t.is(code, 0);
  t.is(stdout, `${VERSION}\n`);
});

test("no command prints the usage on stderr and exits 2", async (t) => {
  const { code, stdout, stderr } = await cli();
  t.is(code, 2);
  t.is(stdout, "");
  t.regex(stderr, /^Usage: candlewick/);
});

const usageError = test.macro({
  async exec(t, args: string[], message: string) {
    const { code, stdout, stderr } = await cli(...args);
    t.is(code, 2);
    t.is(stdout, "");
    const help = args[0] === "generate" || args[0] === "demo" ? `candlewick ${args[0]} --help` : "candlewick --help";
    t.is(stderr, `candlewick: ${message}\nRun "${help}" for usage.\n`);
  },
  title: (_given, args: string[]) => `usage error exits 2: candlewick ${args.join(" ")}`,
});

test(usageError, ["generate", "a red apple", "--guidence", "3"], "unknown option --guidence (did you mean --guidance?)");
test(usageError, ["generate", "a red apple", "--frobnicate"], "unknown option --frobnicate");
test(usageError, ["generate", "a red apple", "-x"], "unknown option -x");
test(usageError, ["generate"], "missing the prompt");
test(usageError, ["generate", "a", "red", "apple"], "expected one prompt but received 3 (quote the prompt)");
test(usageError, ["generate", "x", "--steps"], "option --steps needs a value");
test(usageError, ["generate", "x", "--steps", "abc"], 'Expected integer between 1 and 1000 for --steps but received "abc"');
test(usageError, ["generate", "x", "--steps", "0"], "Expected integer between 1 and 1000 for --steps but received 0");
test(usageError, ["generate", "x", "--width", "500"], "Expected integer multiple of 8 for --width but received 500");
test(usageError, ["generate", "x", "--guidance", "-1"], 'option --guidance needs a value (for a value that starts with "-", write --guidance=VALUE)');
test(usageError, ["generate", "x", "--guidance=-1"], "Expected finite number >= 0 for --guidance but received -1");
test(usageError, ["generate", "x", "--eta", "2"], "Expected number between 0 and 1 for --eta but received 2");
test(usageError, ["generate", "x", "--seed", "1.5"], 'Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for --seed but received "1.5"');
test(usageError, ["generate", "x", "--device", "gpu"], 'Expected one of "auto", "cpu", "cuda" for --device but received "gpu"');
test(usageError, ["generate", "x", "--dtype", "bf16"], 'Expected one of "auto", "f32", "f16" for --dtype but received "bf16"');
test(usageError, ["generate", "x", "--timestep-spacing", "middle"], 'Expected one of "leading", "trailing", "linspace" for --timestep-spacing but received "middle"');
test(usageError, ["generate", "x", "--num-images", "65"], "Expected integer between 1 and 64 for --num-images but received 65");
test(usageError, ["generate", "x", "--out", "apple.jpg"], 'Expected a file name ending in .png for --out but received "apple.jpg"');
// Sizes, steps, guidance, seeds and scheduler values at and past their limits, and wrong types.
test(usageError, ["generate", "x", "--width", "0"], "Expected integer multiple of 8 for --width but received 0");
test(usageError, ["generate", "x", "--width=-8"], "Expected integer multiple of 8 for --width but received -8");
test(usageError, ["generate", "x", "--width", "65536"], "Expected integer between 8 and 8192 for --width but received 65536");
test(usageError, ["generate", "x", "--height", "12"], "Expected integer multiple of 8 for --height but received 12");
test(usageError, ["generate", "x", "--height", "64px"], 'Expected integer multiple of 8 for --height but received "64px"');
test(usageError, ["generate", "x", "--steps", "1000000"], "Expected integer between 1 and 1000 for --steps but received 1000000");
test(usageError, ["generate", "x", "--steps", "2.5"], 'Expected integer between 1 and 1000 for --steps but received "2.5"');
test(usageError, ["generate", "x", "--guidance", "NaN"], 'Expected finite number >= 0 for --guidance but received "NaN"');
test(usageError, ["generate", "x", "--guidance", "Infinity"], 'Expected finite number >= 0 for --guidance but received "Infinity"');
test(usageError, ["generate", "x", "--guidance", "1e400"], "Expected finite number >= 0 for --guidance but received Infinity");
test(usageError, ["generate", "x", "--num-images", "0"], "Expected integer between 1 and 64 for --num-images but received 0");
test(usageError, ["generate", "x", "--seed=-1"], 'Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for --seed but received "-1"');
test(usageError, ["generate", "x", "--seed", "18446744073709551616"], "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for --seed but received 18446744073709551616n");
test(usageError, ["generate", "x", "--eta", "NaN"], 'Expected number between 0 and 1 for --eta but received "NaN"');
test(usageError, ["generate", "x", "--eta=-0.1"], "Expected number between 0 and 1 for --eta but received -0.1");
test(usageError, ["generate", "x", "--device", "CUDA"], 'Expected one of "auto", "cpu", "cuda" for --device but received "CUDA"');
test(usageError, ["generate", "x", "--dtype", "f64"], 'Expected one of "auto", "f32", "f16" for --dtype but received "f64"');
test(usageError, ["generate", "x", "--timestep-spacing", "LEADING"], 'Expected one of "leading", "trailing", "linspace" for --timestep-spacing but received "LEADING"');
test(usageError, ["generate", "x", "--schedular", "ddim"], "unknown option --schedular (did you mean --scheduler?)");
test(usageError, ["generate", "x", "--threads", "0"], "Expected integer between 1 and 1024 for --threads but received 0");
test(usageError, ["generate", "x", "--negative_prompt", "y"], "unknown option --negative_prompt (did you mean --negative-prompt?)");
test(usageError, ["generate", "x", "--model"], "option --model needs a value");
test(usageError, ["generate", "x", "--out", "image"], 'Expected a file name ending in .png for --out but received "image"');
test(usageError, ["demo", "a red apple"], 'unexpected argument "a red apple" (the demo\'s prompts are fixed)');
test(usageError, ["demo", "--out", "grid.jpg"], 'Expected a file name ending in .png for --out but received "grid.jpg"');
test(usageError, ["demo", "--steps", "0"], "Expected integer between 1 and 1000 for --steps but received 0");
test(usageError, ["frobnicate"], 'unknown command "frobnicate"');
test(usageError, ["--frobnicate"], "unknown option --frobnicate");

test("a model folder that does not exist exits 1 naming it", async (t) => {
  const { code, stderr } = await cli("generate", "x", "--model", "/no/such/model", "--quiet");
  t.is(code, 1);
  t.is(stderr, "candlewick: /no/such/model: is not a folder (expected a diffusers model folder with model_index.json)\n");
});

test("a device this build cannot provide exits 1 with the core's message", async (t) => {
  const native = (await import("../src/binding.js")).loadNative();
  if (native.buildInfo().cuda) return t.pass("a CUDA build: covered by the GPU tests");
  const { code, stdout, stderr } = await cli("generate", "x", "--device", "cuda", "--quiet");
  t.is(code, 1);
  t.is(stdout, "");
  t.is(stderr, 'candlewick: device "cuda" was requested but no CUDA build is installed (candlewick-linux-x64-gnu-cuda: not on the npm registry yet; npm run build:cuda and npm run pack:all in a clone make its tarball)\n');
});

test("a damaged model folder exits 1 naming the file and what is wrong", async (t) => {
  const dir = copyOfTinySd();
  try {
    writeFileSync(join(dir, "vae/diffusion_pytorch_model.safetensors"), Buffer.alloc(4));
    const { code, stderr } = await cli("generate", "x", "--model", dir, "--quiet");
    t.is(code, 1);
    t.is(stderr, `candlewick: ${join(dir, "vae/diffusion_pytorch_model.safetensors")}: is not a safetensors file: it has 4 bytes, fewer than the 8 that give the header's length\n`);
  } finally {
    rmSync(join(dir, ".."), { recursive: true, force: true });
  }
});

test("an empty prompt and an over-long prompt both generate; with --truncate-long-prompts the long one is cut with CLIP's warning", async (t) => {
  const dir = scratch();
  const empty = await cli("generate", "", "--steps", "1", "--width", "16", "--height", "16", "--out", join(dir, "empty.png"));
  t.is(empty.code, 0, empty.stderr);
  const whole = await cli("generate", "red apple ".repeat(1000), "--steps", "1", "--width", "16", "--height", "16", "--out", join(dir, "whole.png"));
  t.is(whole.code, 0, whole.stderr);
  t.notRegex(whole.stderr, /truncated/);
  const long = await cli("generate", "red apple ".repeat(1000), "--steps", "1", "--width", "16", "--height", "16", "--truncate-long-prompts", "--out", join(dir, "long.png"));
  t.is(long.code, 0, long.stderr);
  t.regex(long.stderr, /^warning: The following part of your input was truncated because CLIP can only handle sequences up to 77 tokens: "/m);
});

test("generate with the packaged model writes a PNG of the requested size and prints its path", async (t) => {
  const out = join(scratch(), "apple.png");
  const { code, stdout, stderr } = await cli("generate", "a red apple", "--steps", "3", "--width", "64", "--height", "48", "--seed", "1", "--out", out);
  t.is(code, 0, stderr);
  t.is(stdout, `${out}\n`);
  const png = pngjs.PNG.sync.read(readFileSync(out));
  t.is(png.width, 64);
  t.is(png.height, 48);
  // stderr is not a TTY here: plain progress lines, no bar.
  t.regex(stderr, /^step 1\/3 /m);
  t.regex(stderr, /^step 3\/3 /m);
  t.false(stderr.includes("\r"));
});

test("--num-images writes numbered files, and a seed reproduces them byte for byte", async (t) => {
  const dir = scratch();
  const args = ["generate", "a red apple", "--steps", "2", "--seed", "5", "--num-images", "2", "--negative-prompt", "blurry", "--eta", "0", "--timestep-spacing", "trailing", "--device", "cpu", "--dtype", "f32", "--quiet"];
  const first = await cli(...args, "--out", join(dir, "a.png"));
  t.is(first.code, 0, first.stderr);
  t.is(first.stdout, `${join(dir, "a-1.png")}\n${join(dir, "a-2.png")}\n`);
  t.is(first.stderr, "");
  const second = await cli(...args, "--out", join(dir, "b.png"));
  t.is(second.code, 0, second.stderr);
  t.deepEqual(readFileSync(join(dir, "b-1.png")), readFileSync(join(dir, "a-1.png")));
  t.notDeepEqual(readFileSync(join(dir, "a-1.png")), readFileSync(join(dir, "a-2.png")));
});

const TINY = ["--steps", "1", "--width", "16", "--height", "16"];

test("--fp8 where FP8 cannot run (the CPU) falls back to the f16/f32 path, says why, and draws the image it draws without it", async (t) => {
  const dir = scratch();
  const args = ["generate", "a red apple", ...TINY, "--seed", "3", "--device", "cpu"];
  const plain = await cli(...args, "--quiet", "--out", join(dir, "plain.png"));
  t.is(plain.code, 0, plain.stderr);
  const fp8 = await cli(...args, "--fp8", "--out", join(dir, "fp8.png"));
  t.is(fp8.code, 0, fp8.stderr);
  t.regex(fp8.stderr, /^warning: fp8 is off: .+$/m);
  t.deepEqual(readFileSync(join(dir, "fp8.png")), readFileSync(join(dir, "plain.png")));
});

test("--out in a folder that does not exist creates the folder, as batch --out does", async (t) => {
  const out = join(scratch(), "new/deeper/apple.png");
  const { code, stdout, stderr } = await cli("generate", "a red apple", ...TINY, "--out", out);
  t.is(code, 0, stderr);
  t.is(stdout, `${out}\n`);
  t.true(existsSync(out));
  t.deepEqual(readdirSync(join(out, "..")), ["apple.png"], "no temporary file is left");
  t.regex(stderr, /\nWrote 1 image of 16x16, seed \d+\n$/);
});

test("--out that cannot be written exits 1 naming it (ERR_CANDLEWICK_OUTPUT's message), before the model loads", async (t) => {
  const dir = scratch();
  writeFileSync(join(dir, "a-file"), "");
  const underFile = join(dir, "a-file/apple.png");
  const notDir = await cli("generate", "x", "--out", underFile);
  t.is(notDir.code, 1);
  t.is(notDir.stdout, "");
  t.is(notDir.stderr, `candlewick: cannot write ${underFile} (ENOTDIR: ${join(dir, "a-file")} is a file, not a folder)\n`, "no Loading line: the check comes first");
  await t.throwsAsync(checkOutputFiles([underFile]), { code: "ERR_CANDLEWICK_OUTPUT", message: /^cannot write .*a-file\/apple\.png \(ENOTDIR/ });
  const deeper = join(dir, "a-file/sub/apple.png");
  t.is((await cli("generate", "x", "--quiet", "--out", deeper)).stderr, `candlewick: cannot write ${deeper} (ENOTDIR: not a directory)\n`);
  mkdirSync(join(dir, "taken.png"));
  const isDir = await cli("generate", "x", ...TINY, "--out", join(dir, "taken.png"));
  t.is(isDir.stderr, `candlewick: cannot write ${join(dir, "taken.png")} (EISDIR: it is a folder)\n`);
  const readOnly = join(readOnlyDir(), "apple.png");
  const denied = await cliWith({ unprivileged: true }, "generate", "x", ...TINY, "--num-images", "2", "--out", readOnly);
  t.is(denied.code, 1);
  t.is(denied.stderr, `candlewick: cannot write ${readOnly.replace(/\.png$/, "-1.png")} (EACCES: permission denied)\n`);
});

test("a Turbo-style run through the CLI: one trailing Euler step without guidance on an SD 2.x model", async (t) => {
  const dir = scratch();
  const sd2 = join(ROOT, "test/fixtures/tiny-sd2");
  const flags = ["--model", sd2, "--steps", "1", "--guidance", "0", "--scheduler", "euler", "--timestep-spacing", "trailing", "--seed", "3"];
  const run = await cli("generate", "a red apple", ...flags, "--out", join(dir, "turbo.png"));
  t.is(run.code, 0, run.stderr);
  const text = readTextChunks(readFileSync(join(dir, "turbo.png")));
  t.like(text, { steps: "1", guidance: "0", size: "64x64" });
});

test("an SDXL model through the CLI: the size conditions and clip skip reach the image and its text chunks", async (t) => {
  const dir = scratch();
  const sdxl = join(ROOT, "test/fixtures/tiny-sdxl");
  const flags = ["--model", sdxl, "--steps", "1", "--seed", "2", "--clip-skip", "1", "--original-size", "96x128", "--crops-coords-top-left", "4,8"];
  const run = await cli("generate", "a red apple", ...flags, "--out", join(dir, "sdxl.png"));
  t.is(run.code, 0, run.stderr);
  const text = readTextChunks(readFileSync(join(dir, "sdxl.png")));
  t.like(text, { clipSkip: "1", originalSize: "96x128", cropsCoordsTopLeft: "4,8", targetSize: "64x64" });
  t.regex(text.parameters ?? "", /, Clip skip: 2$/);
  const bad = await cli("generate", "x", ...flags.slice(0, 6), "--target-size", "64", "--out", join(dir, "bad.png"));
  t.is(bad.code, 2);
  t.regex(bad.stderr, /Expected HEIGHTxWIDTH of integers between 1 and 131072 for --target-size but received "64"/);
});

test("generate's PNGs carry the same text chunks as batch's, with eta in the web-UI parameters", async (t) => {
  const dir = scratch();
  const settings = ["--model", TINY_SD, "--steps", "2", "--width", "32", "--height", "32", "--negative-prompt", "blurry", "--eta", "0.5"];
  const one = await cli("generate", "a red apple", ...settings, "--seed", "5", "--out", join(dir, "one.png"));
  t.is(one.code, 0, one.stderr);
  t.regex(one.stderr, /\nWrote 1 image of 32x32, seed 5\n$/);
  writeFileSync(join(dir, "prompts.jsonl"), `${JSON.stringify({ prompt: "a red apple", seed: 5 })}\n`);
  const batch = await cli("batch", join(dir, "prompts.jsonl"), ...settings, "--out", join(dir, "batch"));
  t.is(batch.code, 0, batch.stderr);
  t.regex(batch.stderr, new RegExp(`\nWrote 1 image to ${join(dir, "batch")} \\(1 in all, `));
  const fromGenerate = readTextChunks(readFileSync(join(dir, "one.png")));
  t.deepEqual(fromGenerate, readTextChunks(readFileSync(join(dir, "batch/00001.png"))));
  t.like(fromGenerate, { prompt: "a red apple", negativePrompt: "blurry", seed: "5", steps: "2", guidance: "7.5", scheduler: 'DDIMScheduler {"eta":0.5}', eta: "0.5", size: "32x32", model: TINY_SD });
  t.is(fromGenerate.parameters, `a red apple\nNegative prompt: blurry\nSteps: 2, Sampler: DDIM, CFG scale: 7.5, Seed: 5, Size: 32x32, Model: ${TINY_SD}, Eta DDIM: 0.5`);
  t.is(fromGenerate.Software, `candlewick ${VERSION}`);
});

test("demo writes one grid PNG of its eight prompts (4 to a row, each 3x) and prints the prompts", async (t) => {
  const out = join(scratch(), "grid.png");
  const { code, stdout, stderr } = await cli("demo", "--steps", "2", "--out", out, "--quiet");
  t.is(code, 0, stderr);
  const lines = stdout.trimEnd().split("\n");
  t.is(lines.length, 8);
  t.is(lines[0], "row 1, column 1: a large red circle on a white background, top left");
  t.regex(lines[7]!, /^row 2, column 4: /);
  const png = pngjs.PNG.sync.read(readFileSync(out));
  // 64x64 images enlarged 3x, 4 pixels between cells and around them.
  t.is(png.width, 4 + 4 * (192 + 4));
  t.is(png.height, 4 + 2 * (192 + 4));
});

test("demo --help lists its flags", async (t) => {
  const { code, stdout } = await cli("demo", "--help");
  t.is(code, 0);
  for (const flag of ["--model", "--out", "--steps", "--seed", "--device"]) t.true(stdout.includes(`  ${flag}`), flag);
});
