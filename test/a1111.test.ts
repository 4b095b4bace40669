// What images record of their model and LoRAs, as AUTOMATIC1111's web UI writes it ("Model hash",
// "Lora hashes", <lora:name:weight> in the prompt), and batch lines that name their own LoRAs.
// The hashes are checked against a second computation here (whole file in memory, sliced as the
// web UI's modules/hashes.py `calculate_sha256` and `addnet_hash_safetensors` read it); the images
// against the library's own call (whose LoRA and single-file numbers test/single-file-lora.test.ts
// checks against diffusers' goldens). Fixtures: test/fixtures/single-file (scripts/fixture_single_file_lora.py).

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import test from "ava";
import pngjs from "pngjs";

import type { ManifestRecord } from "../src/batch/manifest.js";
import { fileHash, loraHash, modelHash } from "../src/cli/hashes.js";
import { pngText, type ImageParameters } from "../src/cli/parameters.js";
import { CandlewickError } from "../src/errors.js";
import { createServer } from "../src/server/create-server.js";
import { readTextChunks } from "../src/png-text.js";
import { StableDiffusionPipeline } from "../src/pipeline.js";
import { cli, scratch } from "./helpers/cli.js";
import { ROOT, TINY_SD } from "./helpers/fixtures.js";

const DIR = join(ROOT, "test/fixtures/single-file");
const CHECKPOINT = join(DIR, "tiny-sd.safetensors");
const KOHYA = join(DIR, "lora_kohya.safetensors");
const PEFT = join(DIR, "lora_peft.safetensors");
const BAD_KEY = join(DIR, "lora_bad_key.safetensors");

/** The web UI's sha256 of a whole file, computed in memory. */
const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
/** The web UI's LoRA hash (addnet_hash_safetensors): the bytes after 8 + the header length. */
function autov3(path: string): string {
  const bytes = readFileSync(path);
  return createHash("sha256").update(bytes.subarray(8 + Number(bytes.readBigUInt64LE(0)))).digest("hex");
}

const pixels = (path: string) => pngjs.PNG.sync.read(readFileSync(path)).data;

test("the model hash is the file's sha256 and the LoRA hash the sha256 of its tensor data, as the web UI computes them", async (t) => {
  t.is(await modelHash(CHECKPOINT), sha256(CHECKPOINT).slice(0, 10));
  t.is(await fileHash(KOHYA, "autov3"), autov3(KOHYA));
  t.is(await loraHash(KOHYA), autov3(KOHYA).slice(0, 12));
  t.not(autov3(KOHYA), sha256(KOHYA), "the LoRA hash leaves the header out");
  // Metadata edits change the file's sha256, not the LoRA hash.
  const edited = join(scratch(), "edited.safetensors");
  const bytes = readFileSync(KOHYA);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString()) as Record<string, unknown>;
  const newHeader = Buffer.from(JSON.stringify({ ...header, __metadata__: { ss_output_name: "renamed" } }));
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(newHeader.length));
  writeFileSync(edited, Buffer.concat([size, newHeader, bytes.subarray(8 + length)]));
  t.is(await loraHash(edited), await loraHash(KOHYA));
  t.not(sha256(edited), sha256(KOHYA));
});

/** Python (the fixtures' venv, or CANDLEWICK_PYTHON), to run the web UI's hash functions as they are written. */
const PYTHON = process.env.CANDLEWICK_PYTHON ?? join(ROOT, ".venv/bin/python");
const hasPython = spawnSync(PYTHON, ["-c", "import hashlib"]).status === 0;

(hasPython ? test : test.skip)("the hashes equal AUTOMATIC1111's modules/hashes.py calculate_sha256 and addnet_hash_safetensors", async (t) => {
  // The two functions as the web UI has them (1 MiB blocks; the LoRA hash seeks past 8 + the header length).
  const code = `import hashlib, sys
def calculate_sha256(filename):
    hash_sha256 = hashlib.sha256()
    with open(filename, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            hash_sha256.update(chunk)
    return hash_sha256.hexdigest()
def addnet_hash_safetensors(b):
    hash_sha256 = hashlib.sha256()
    b.seek(0)
    n = int.from_bytes(b.read(8), "little")
    b.seek(n + 8)
    for chunk in iter(lambda: b.read(1024 * 1024), b""):
        hash_sha256.update(chunk)
    return hash_sha256.hexdigest()
print(calculate_sha256(sys.argv[1])[0:10])
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        print(addnet_hash_safetensors(f)[0:12])
`;
  const run = spawnSync(PYTHON, ["-c", code, CHECKPOINT, KOHYA, PEFT], { encoding: "utf8" });
  t.is(run.status, 0, run.stderr);
  t.deepEqual(run.stdout.trim().split("\n"), [await modelHash(CHECKPOINT), await loraHash(KOHYA), await loraHash(PEFT)]);
});

test("a missing or damaged LoRA file is an error naming it and why", async (t) => {
  const dir = scratch();
  const missing = await t.throwsAsync(loraHash(join(dir, "nope.safetensors")), { instanceOf: CandlewickError });
  t.is(missing!.message, `LoRA ${join(dir, "nope.safetensors")}: cannot read it (ENOENT: no such file)`);
  const cut = join(dir, "cut.safetensors");
  writeFileSync(cut, readFileSync(KOHYA).subarray(0, 100));
  const damaged = await t.throwsAsync(loraHash(cut), { instanceOf: CandlewickError });
  t.regex(damaged!.message, /cut\.safetensors: not a safetensors file \(its header claims \d+ bytes but the file has 92 after the length\)$/);
  const notJson = join(dir, "text.safetensors");
  writeFileSync(notJson, Buffer.concat([Buffer.from([4, 0, 0, 0, 0, 0, 0, 0]), Buffer.from("nope")]));
  t.regex((await t.throwsAsync(loraHash(notJson)))!.message, /text\.safetensors: not a safetensors file \(its header is not JSON: /);
});

test("parameters name the model hash after Size and the LoRA hashes at the end, quoted, with the tags in the prompt", (t) => {
  const p: ImageParameters = {
    prompt: "a cat <lora:lora_kohya:0.8>", negativePrompt: "", seed: "1", steps: 2, guidance: 7.5, width: 64, height: 64, scheduler: "PNDMScheduler",
    eta: 0, model: "m.safetensors", modelHash: "0123456789",
    loras: [{ name: "lora_kohya", path: KOHYA, weight: 0.8, hash: "aaaaaaaaaaaa" }, { name: "b:c,d", path: PEFT, weight: 1, hash: "bbbbbbbbbbbb" }],
  };
  const text = pngText(p);
  t.is(text.parameters, 'a cat <lora:lora_kohya:0.8>\nSteps: 2, Sampler: PLMS, CFG scale: 7.5, Seed: 1, Size: 64x64, Model hash: 0123456789, Model: m.safetensors, Lora hashes: "lora_kohya: aaaaaaaaaaaa, bcd: bbbbbbbbbbbb"');
  t.is(text.modelHash, "0123456789");
  t.deepEqual(JSON.parse(text.loras!), p.loras);
});

// The "done when": one command with a single-file checkpoint, a kohya LoRA and a long weighted prompt.
test("generate from a single-file checkpoint with a LoRA records the web UI's hashes and tag, and makes the library's image", async (t) => {
  const dir = scratch();
  const prompt = `a (red:1.3) apple on a [wooden] table, ${"highly detailed, ".repeat(30)}BREAK a (blue sky:0.8)`;
  const args = ["--model", CHECKPOINT, "--config", TINY_SD, "--device", "cpu", "--steps", "2", "--width", "64", "--height", "64", "--seed", "7", "--quiet"];
  const withLora = await cli("generate", prompt, ...args, "--lora", `${KOHYA}:0.8`, "--out", join(dir, "lora.png"));
  t.is(withLora.code, 0, withLora.stderr);
  t.true(existsSync(join(dir, "lora.png")));
  const text = readTextChunks(readFileSync(join(dir, "lora.png")));
  const [promptLine, settings] = text.parameters!.split("\n");
  t.is(promptLine, `${prompt} <lora:lora_kohya:0.8>`);
  t.regex(settings!, new RegExp(`, Size: 64x64, Model hash: ${sha256(CHECKPOINT).slice(0, 10)}, Model: `));
  t.regex(settings!, new RegExp(`, Lora hashes: "lora_kohya: ${autov3(KOHYA).slice(0, 12)}"$`));
  t.is(text.modelHash, sha256(CHECKPOINT).slice(0, 10));
  t.deepEqual(JSON.parse(text.loras!), [{ name: "lora_kohya", path: KOHYA, weight: 0.8, hash: autov3(KOHYA).slice(0, 12) }]);

  const plain = await cli("generate", prompt, ...args, "--out", join(dir, "plain.png"));
  t.is(plain.code, 0, plain.stderr);
  t.notDeepEqual(pixels(join(dir, "plain.png")), pixels(join(dir, "lora.png")), "the LoRA must change the image");
  const plainText = readTextChunks(readFileSync(join(dir, "plain.png")));
  t.false("loras" in plainText);
  t.notRegex(plainText.parameters!, /Lora hashes|<lora:/);

  const pipe = await StableDiffusionPipeline.fromPretrained(CHECKPOINT, { device: "cpu", config: TINY_SD, loras: [{ path: KOHYA, weight: 0.8 }] });
  const [image] = await pipe.generate({ prompt, numInferenceSteps: 2, width: 64, height: 64, seed: 7 });
  await pipe.dispose();
  t.deepEqual(Buffer.from(rgb(pixels(join(dir, "lora.png")))), Buffer.from(image!.data), "the CLI's image is the library's");
});

/** pngjs decodes to RGBA; images are RGB. */
function rgb(rgba: Uint8Array): Uint8Array {
  const out = new Uint8Array((rgba.length / 4) * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) out.set(rgba.subarray(i, i + 3), j);
  return out;
}

const manifest = (out: string): ManifestRecord[] =>
  readFileSync(join(out, "manifest.jsonl"), "utf8").trimEnd().split("\n").map((l) => JSON.parse(l) as ManifestRecord);

test("batch lines name their LoRAs by field or tag, run grouped by LoRA set, record them, skip bad files and resume", async (t) => {
  const dir = scratch();
  const cut = join(dir, "cut.safetensors");
  writeFileSync(cut, readFileSync(KOHYA).subarray(0, 100));
  const lines = [
    "a red apple",
    { prompt: "a green pear <lora:lora_kohya:0.8>" },
    { prompt: "a blue cup", loras: [{ path: PEFT, weight: 0.5 }] },
    "a hat <lora:missing:1>",
    { prompt: "a dog <lora:lora_kohya:0.8>", id: "dog" },
    { prompt: "a bad key", loras: [{ path: BAD_KEY }] },
    { prompt: "a cut file", loras: [{ path: cut }] },
    "a yellow sun",
  ];
  const prompts = join(dir, "prompts.jsonl");
  writeFileSync(prompts, lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
  const out = join(dir, "out");
  const args = ["batch", prompts, "--out", out, "--model", TINY_SD, "--lora-dir", DIR, "--device", "cpu", "--steps", "2", "--width", "32", "--height", "32", "--seed", "100"];
  const first = await cli(...args);
  t.is(first.code, 1, first.stderr);
  t.regex(first.stderr, new RegExp(`candlewick: ${prompts}:4: LoRA ${join(DIR, "missing.safetensors")}: cannot read it \\(ENOENT: no such file\\); the line is skipped\\n`));
  t.regex(first.stderr, new RegExp(`candlewick: ${prompts}:7: LoRA ${cut}: not a safetensors file \\(its header claims \\d+ bytes but the file has 92 after the length\\); the line is skipped\\n`));
  t.regex(first.stderr, new RegExp(`candlewick: ${prompts}:6: cannot fuse the line's LoRAs: .*lora_bad_key\\.safetensors: key .*; the line is skipped\\n`));
  t.regex(first.stderr, /3 problems left lines without images/);
  // One group per set, the loaded (empty) set first: each other set fused once.
  const fused = first.stderr.split("\n").filter((l) => l.startsWith("Fusing"));
  t.deepEqual(fused, ["Fusing <lora:lora_kohya:0.8> for lines 2, 5", "Fusing <lora:lora_peft:0.5> for line 3", "Fusing <lora:lora_bad_key:1> for line 6"]);
  t.deepEqual(first.stdout.trimEnd().split("\n"), ["00001", "00008", "00002", "00005", "00003"].map((f) => join(out, `${f}.png`)));

  const records = new Map(manifest(out).map((r) => [r.line, r]));
  t.deepEqual([...records.keys()], [1, 2, 3, 5, 8]);
  const kohya = { name: "lora_kohya", path: KOHYA, weight: 0.8, hash: autov3(KOHYA).slice(0, 12) };
  t.deepEqual(records.get(2)!.loras, [kohya]);
  t.deepEqual(records.get(3)!.loras, [{ name: "lora_peft", path: PEFT, weight: 0.5, hash: autov3(PEFT).slice(0, 12) }]);
  t.is(records.get(1)!.loras, undefined);
  t.is(records.get(1)!.modelHash, undefined, "a diffusers folder has no model hash");
  t.is(records.get(3)!.prompt, "a blue cup <lora:lora_peft:0.5>");
  const text = readTextChunks(readFileSync(join(out, "00002.png")));
  t.is(text.prompt, "a green pear <lora:lora_kohya:0.8>");
  t.regex(text.parameters!, new RegExp(`Lora hashes: "lora_kohya: ${kohya.hash}"$`));

  // The tag is out of what the model read: line 2 is the library's image of "a green pear " with the LoRA.
  const pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", loras: [{ path: KOHYA, weight: 0.8 }] });
  const [image] = await pipe.generate({ prompt: "a green pear ", numInferenceSteps: 2, width: 32, height: 32, seed: 102n });
  await pipe.dispose();
  t.deepEqual(Buffer.from(rgb(pixels(join(out, "00002.png")))), Buffer.from(image!.data));

  // A rerun makes nothing that is done; the bad lines fail again.
  const second = await cli(...args);
  t.is(second.code, 1);
  t.is(second.stdout, "");
  t.regex(second.stderr, /^5 of 8 images are already in /m);
  // Fixed lines (the file now whole) are made on the next run; a changed LoRA weight remakes its line.
  writeFileSync(cut, readFileSync(PEFT));
  lines[4] = { prompt: "a dog <lora:lora_kohya:0.5>", id: "dog" };
  writeFileSync(prompts, lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
  const third = await cli(...args);
  t.is(third.code, 1);
  t.deepEqual(third.stdout.trimEnd().split("\n").sort(), ["00005", "00007"].map((f) => join(out, `${f}.png`)));
});

test("batch: a LoRA tag without --lora-dir, or with a bad weight, names the line before any work", async (t) => {
  const dir = scratch();
  const prompts = join(dir, "prompts.jsonl");
  writeFileSync(prompts, `"fine"\n"a hat <lora:hat:0.8>"\n`);
  const run = await cli("batch", prompts, "--out", join(dir, "out"));
  t.is(run.code, 2);
  t.regex(run.stderr, new RegExp(`${prompts}:2: the prompt names a LoRA \\(<lora:hat:0.8>\\): give --lora-dir <dir>, the folder that holds hat.safetensors`));
  writeFileSync(prompts, `"a hat <lora:hat:lots>"\n`);
  const weight = await cli("batch", prompts, "--out", join(dir, "out"), "--lora-dir", dir);
  t.is(weight.code, 2);
  t.regex(weight.stderr, /prompts\.jsonl:1: Expected number between -16 and 16 for the weight in <lora:hat:lots> but received "lots"/);
});

test("the server's images and infotexts record the model hash and the fused LoRAs", async (t) => {
  const pipe = await StableDiffusionPipeline.fromPretrained(CHECKPOINT, { device: "cpu", config: TINY_SD, loras: [{ path: KOHYA, weight: 0.8 }] });
  const server = await createServer({ model: pipe, modelName: "tiny-sd" });
  try {
    const url = await server.listen({ port: 0 });
    const response = await fetch(`${url}/sdapi/v1/txt2img`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "a cat", steps: 1, width: 32, height: 32, seed: 3 }),
    });
    t.is(response.status, 200);
    const answer = (await response.json()) as { images: string[]; info: string };
    const infotext = (JSON.parse(answer.info) as { infotexts: string[] }).infotexts[0]!;
    const expected = `a cat <lora:lora_kohya:0.8>\nSteps: 1, Sampler: DDIM, CFG scale: 7.5, Seed: 3, Size: 32x32, Model hash: ${sha256(CHECKPOINT).slice(0, 10)}, Model: tiny-sd, Lora hashes: "lora_kohya: ${autov3(KOHYA).slice(0, 12)}"`;
    t.is(infotext, expected);
    t.is(readTextChunks(Buffer.from(answer.images[0]!, "base64")).parameters, expected);
  } finally {
    await server.close();
    await pipe.dispose();
  }
});
