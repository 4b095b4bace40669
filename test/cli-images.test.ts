// `candlewick img2img` and `candlewick inpaint`, run as a user runs them (a child process), on the
// tiny model (test/fixtures/tiny-sd) and the images of test/fixtures/images (made by
// scripts/fixture_images.py). Needs the native module (npm run build:native).

import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import test from "ava";
import pngjs from "pngjs";

import { readTextChunks } from "../src/png-text.js";
import { cli, scratch } from "./helpers/cli.js";
import { ROOT, TINY_SD } from "./helpers/fixtures.js";

const INPUT = join(ROOT, "test/fixtures/images/input.png");
const MASK = join(ROOT, "test/fixtures/images/mask.png");

test("img2img writes a PNG of the image's size that records task and strength", async (t) => {
  const out = join(scratch(), "painted.png");
  const run = await cli("img2img", "a red apple", "--model", TINY_SD, "--image", INPUT, "--strength", "0.5", "--steps", "4", "--seed", "3", "--out", out, "-q");
  t.is(run.code, 0, run.stderr);
  t.is(run.stdout, `${out}\n`);
  const file = readFileSync(out);
  const png = pngjs.PNG.sync.read(file);
  t.deepEqual([png.width, png.height], [32, 32]);
  const text = readTextChunks(file);
  t.like(text, { task: "img2img", strength: "0.5", steps: "4", seed: "3", size: "32x32" });
  t.regex(text.parameters!, /Denoising strength: 0\.5/);
});

test("inpaint writes a PNG that records its task", async (t) => {
  const out = join(scratch(), "inpainted.png");
  const run = await cli("inpaint", "a red apple", "--model", TINY_SD, "--image", INPUT, "--mask", MASK, "--steps", "2", "--seed", "1", "--out", out, "-q");
  t.is(run.code, 0, run.stderr);
  t.like(readTextChunks(readFileSync(out)), { task: "inpaint", strength: "1" });
});

test("inpaint --padding-mask-crop inpaints around the mask and writes a PNG of the image's size that records it", async (t) => {
  const out = join(scratch(), "cropped.png");
  const run = await cli("inpaint", "a red apple", "--model", TINY_SD, "--image", INPUT, "--mask", MASK, "--padding-mask-crop", "2",
    "--width", "32", "--height", "24", "--steps", "2", "--seed", "1", "--out", out, "-q");
  t.is(run.code, 0, run.stderr);
  const file = readFileSync(out);
  const png = pngjs.PNG.sync.read(file);
  t.deepEqual([png.width, png.height], [32, 32]);
  t.like(readTextChunks(file), { task: "inpaint", paddingMaskCrop: "2", size: "32x24" });
});

const usageError = test.macro({
  async exec(t, args: string[], message: string) {
    const run = await cli(...args);
    t.is(run.code, 2);
    t.is(run.stderr.split("\n")[0], `candlewick: ${message}`);
  },
  title: (_given, args: string[]) => `usage error: ${args.join(" ")}`,
});

test(usageError, ["img2img", "a red apple"], "missing --image <file>");
test(usageError, ["inpaint", "a red apple", "--image", INPUT], "missing --mask <file>");
test(usageError, ["img2img", "a red apple", "--image", INPUT, "--strength", "0"], "Expected number > 0 and <= 1 for --strength but received 0");
test(usageError, ["img2img", "a red apple", "--image", INPUT, "--mask", MASK], "unknown option --mask");
test(usageError, ["inpaint", "a red apple", "--image", INPUT, "--mask", MASK, "--padding-mask-crop=-1"],
  "Expected integer between 0 and 8192 for --padding-mask-crop but received -1");
test(usageError, ["inpaint", "a red apple", "--image", INPUT, "--mask", MASK, "--padding-mask-crop", "1.5"],
  'Expected integer between 0 and 8192 for --padding-mask-crop but received "1.5"');
test(usageError, ["img2img", "a red apple", "--image", INPUT, "--padding-mask-crop", "2"], "unknown option --padding-mask-crop");
test(usageError, ["generate", "a red apple", "--image", INPUT], "--image is for the img2img and inpaint commands (candlewick img2img <prompt> --image <file>)");
test(usageError, ["img2img", "a red apple", "--model", TINY_SD, "--image", "missing.png", "--out", join(scratch(), "x.png")],
  'Expected path of a readable PNG, JPEG or WebP file for --image but received "missing.png" (no such file)');

test("help lists img2img and inpaint, and each has its own help", async (t) => {
  const top = await cli("--help");
  t.regex(top.stdout, /img2img <prompt>/);
  t.regex(top.stdout, /inpaint <prompt>/);
  for (const command of ["img2img", "inpaint"]) {
    const run = await cli(command, "--help");
    t.is(run.code, 0);
    t.regex(run.stdout, new RegExp(`^Usage: candlewick ${command} <prompt> --image <file>`));
    t.true(run.stdout.includes("  --strength <x>"));
  }
});

test("batch lines may carry image, maskImage, strength and paddingMaskCrop", async (t) => {
  const dir = scratch();
  const prompts = join(dir, "prompts.jsonl");
  const lines = [
    { prompt: "a red apple", seed: 1 },
    { prompt: "a red apple", seed: 1, image: INPUT, strength: 0.5 },
    { prompt: "a red apple", seed: 1, image: INPUT, maskImage: MASK },
    { prompt: "a red apple", seed: 1, image: INPUT, maskImage: MASK, paddingMaskCrop: 2, height: 24 },
  ];
  writeFileSync(prompts, lines.map((l) => JSON.stringify(l)).join("\n"));
  const run = await cli("batch", prompts, "--out", join(dir, "out"), "--model", TINY_SD, "--steps", "2", "--width", "32", "--height", "32", "-q");
  t.is(run.code, 0, run.stderr);
  const text = [1, 2, 3, 4].map((n) => readTextChunks(readFileSync(join(dir, "out", `0000${n}.png`))));
  t.is(text[0]!.task, undefined);
  t.like(text[1], { task: "img2img", strength: "0.5" });
  t.like(text[2], { task: "inpaint", strength: "1" });
  t.is(text[2]!.paddingMaskCrop, undefined);
  // Run at 32x24 around the mask, pasted back into the 32x32 image.
  t.like(text[3], { task: "inpaint", paddingMaskCrop: "2", size: "32x24" });
  const png = pngjs.PNG.sync.read(readFileSync(join(dir, "out", "00004.png")));
  t.deepEqual([png.width, png.height], [32, 32]);
});

test("batch takes --vae-tiling", async (t) => {
  const dir = scratch();
  const prompts = join(dir, "prompts.jsonl");
  writeFileSync(prompts, `${JSON.stringify({ prompt: "a red apple", seed: 1 })}\n`);
  const run = await cli("batch", prompts, "--out", join(dir, "out"), "--model", TINY_SD, "--steps", "1", "--width", "16", "--height", "16", "--vae-tiling", "-q");
  t.is(run.code, 0, run.stderr);
});
