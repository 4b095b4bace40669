// `candlewick batch`, run as a user runs it, on the CLI's default model (the small shapes model that
// scripts/train_demo_model.py wrote, test/fixtures/shapes-sd): 100 prompts interrupted halfway and resumed,
// a killed run resumed, edited lines made again, PNG parameters that reproduce the image, and
// bad input (bad JSON, bad values, an output folder that cannot be written).

import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import test from "ava";
import pngjs from "pngjs";

import { readTextChunks } from "../src/png-text.js";
import { StableDiffusionPipeline } from "../src/pipeline.js";
import { cli, cliWith, readOnlyDir, scratch } from "./helpers/cli.js";
import type { ManifestRecord } from "../src/batch/manifest.js";
import { DEFAULT_MODEL } from "../src/cli/model.js";
import { shareWithin } from "./helpers/fixtures.js";

/** Fast settings for the default model: 32x32, 2 steps, no guidance. */
const FAST = ["--steps", "2", "--width", "32", "--height", "32", "--guidance", "1", "--batch-size", "8", "--seed", "1000"];

function promptsFile(dir: string, count: number, line = (i: number) => JSON.stringify({ prompt: `picture number ${i}`, id: `p${i}` })): string {
  const path = join(dir, "prompts.jsonl");
  writeFileSync(path, Array.from({ length: count }, (_, i) => line(i + 1)).join("\n") + "\n");
  return path;
}

const manifest = (out: string): ManifestRecord[] =>
  readFileSync(join(out, "manifest.jsonl"), "utf8").trimEnd().split("\n").map((l) => JSON.parse(l) as ManifestRecord);
const pngs = (out: string) => readdirSync(out).filter((f) => f !== "manifest.jsonl").sort();

test("100 prompts, interrupted halfway and resumed, end with exactly 100 images and a complete manifest", async (t) => {
  const dir = scratch();
  const prompts = promptsFile(dir, 100);
  const out = join(dir, "out");
  let interrupted = false;
  let written = 0;
  const first = await cliWith(
    {
      onLine: (_, child) => {
        if (!interrupted && ++written >= 50) {
          interrupted = true;
          child.kill("SIGINT");
        }
      },
    },
    "batch", prompts, "--out", out, ...FAST,
  );
  t.is(first.code, 130, first.stderr);
  const done = pngs(out).length;
  t.true(done >= 50 && done < 100, `${done} images after the interruption`);
  t.regex(first.stderr, new RegExp(`candlewick: interrupted with ${done} of 100 images done; run the same command again to make the other ${100 - done}\\n$`));
  // Nothing half-written: every PNG is in the manifest and every manifest line has its PNG.
  t.deepEqual(manifest(out).map((r) => r.file).sort(), pngs(out));

  const second = await cli("batch", prompts, "--out", out, ...FAST);
  t.is(second.code, 0, second.stderr);
  t.is(second.stdout.trimEnd().split("\n").length, 100 - done, "the rerun makes only what was missing");
  t.regex(second.stderr, new RegExp(`^${done} of 100 images are already in ${out}; making the other ${100 - done}\\nLoading `));
  t.regex(second.stderr, /100\/100 images, [\d.]+ s\/image, ETA 0s\n/);

  const files = Array.from({ length: 100 }, (_, i) => `${String(i + 1).padStart(5, "0")}.png`);
  t.deepEqual(pngs(out), files);
  const records = manifest(out);
  t.deepEqual(records.map((r) => r.line), files.map((_, i) => i + 1));
  for (const r of records) {
    t.is(r.prompt, `picture number ${r.line}`);
    t.is(r.id, `p${r.line}`);
    t.is(r.seed, String(1000 + r.line));
    const text = readTextChunks(readFileSync(join(out, r.file)));
    t.like(text, { prompt: r.prompt, negativePrompt: "", seed: r.seed, steps: "2", guidance: "1", scheduler: "DDIMScheduler", size: "32x32" });
  }

  // The parameters in a PNG make that image again (one from each run).
  const pipe = await StableDiffusionPipeline.fromPretrained(DEFAULT_MODEL, { device: "cpu" });
  for (const r of [records[0]!, records[99]!]) {
    const png = pngjs.PNG.sync.read(readFileSync(join(out, r.file)));
    const rgb = Uint8Array.from({ length: 32 * 32 * 3 }, (_, i) => png.data[Math.floor(i / 3) * 4 + (i % 3)]!);
    const [again] = await pipe.generate({ prompt: r.prompt, seed: BigInt(r.seed), numInferenceSteps: r.steps, guidanceScale: r.guidance, width: r.width, height: r.height });
    t.true(shareWithin(rgb, again!.data, 1) >= 0.999, `${r.file} is made again from its parameters`);
  }

  const third = await cli("batch", prompts, "--out", out, ...FAST);
  t.is(third.code, 0);
  t.is(third.stdout, "");
  t.regex(third.stderr, /100 of 100 images are already in .*; making the other 0\n$/);
});


test("a killed run is resumed; an edited line is made again, the others are kept", async (t) => {
  const dir = scratch();
  const prompts = promptsFile(dir, 16, (i) => (i % 2 ? JSON.stringify(`plain ${i}`) : JSON.stringify({ prompt: `object ${i}`, negativePrompt: "fog", seed: i })));
  const out = join(dir, "out");
  let lines = 0;
  const killed = await cliWith({ onLine: (_, child) => ++lines === 4 && child.kill("SIGKILL") }, "batch", prompts, "--out", out, ...FAST);
  t.not(killed.code, 0);
  const resumed = await cli("batch", prompts, "--out", out, ...FAST);
  t.is(resumed.code, 0, resumed.stderr);
  t.is(pngs(out).length, 16);
  t.is(manifest(out).length, 16);
  const before = manifest(out);

  const edited = readFileSync(prompts, "utf8").replace('"plain 3"', '"plain three"');
  writeFileSync(prompts, edited);
  const again = await cli("batch", prompts, "--out", out, ...FAST);
  t.is(again.code, 0, again.stderr);
  t.is(again.stdout, `${join(out, "00003.png")}\n`);
  const after = manifest(out);
  t.is(after.length, 16);
  t.is(after[2]!.prompt, "plain three");
  t.deepEqual(after.filter((r) => r.line !== 3), before.filter((r) => r.line !== 3));
  t.like(after[3], { prompt: "object 4", negativePrompt: "fog", seed: "4" });
});

test("bad JSON or a bad value names the file and line, before any work", async (t) => {
  const dir = scratch();
  const out = join(dir, "out");
  const bad = promptsFile(dir, 5, (i) => (i === 3 ? '{"prompt": "x",' : JSON.stringify(`p${i}`)));
  const json = await cli("batch", bad, "--out", out, ...FAST);
  t.is(json.code, 2);
  t.regex(json.stderr, new RegExp(`^candlewick: ${bad}:3: bad JSON \\(.+\\)\\n$`));
  t.false(existsSync(out));
  const value = promptsFile(dir, 3, (i) => JSON.stringify(i === 2 ? { prompt: "x", width: 50 } : `p${i}`));
  const width = await cli("batch", value, "--out", out, ...FAST);
  t.is(width.code, 2);
  t.is(width.stderr, `candlewick: ${value}:2: Expected integer multiple of 8 for width but received 50\n`);
  const typo = promptsFile(dir, 1, () => JSON.stringify({ prompt: "x", guidence: 2 }));
  t.is((await cli("batch", typo, "--out", out)).stderr, `candlewick: Unknown option "guidence" in ${typo}:1; did you mean "guidanceScale"?\n`);
  const missing = await cli("batch", join(dir, "nope.jsonl"), "--out", out);
  t.is(missing.stderr, `candlewick: cannot read the prompts file ${join(dir, "nope.jsonl")} (ENOENT)\n`);
});

test("an output folder that cannot be written is an error naming it, before the model loads", async (t) => {
  const dir = scratch();
  const prompts = promptsFile(dir, 2);
  const out = join(readOnlyDir(), "out");
  const run = await cliWith({ unprivileged: true }, "batch", prompts, "--out", out, ...FAST);
  t.is(run.code, 1);
  t.is(run.stderr, `candlewick: cannot write ${out} (EACCES: permission denied); what was finished is kept\n`);
});

test("batch --help and usage errors", async (t) => {
  const help = await cli("batch", "--help");
  t.is(help.code, 0);
  for (const flag of ["--out", "--model", "--revision", "--variant", "--steps", "--seed", "--batch-size", "--lora-dir", "--device"]) t.true(help.stdout.includes(`  ${flag}`), flag);
  const noOut = await cli("batch", "prompts.jsonl");
  t.is(noOut.stderr, 'candlewick: missing --out <dir>\nRun "candlewick batch --help" for usage.\n');
  const size = await cli("batch", "p.jsonl", "--out", "x", "--batch-size", "0");
  t.is(size.stderr, 'candlewick: Expected integer between 1 and 64 for --batch-size but received 0\nRun "candlewick batch --help" for usage.\n');
});
