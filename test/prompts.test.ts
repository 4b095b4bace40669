// Long and weighted prompts and textual inversion through the public API, on the tiny model
// (test/fixtures/tiny-sd). Goldens: test/fixtures/goldens/prompt_weighting_pipeline.{json,safetensors}
// (scripts/fixture_prompt_weighting.py: diffusers' StableDiffusionPipeline on compel's embeddings of an
// A1111-syntax prompt); embeddings: test/fixtures/textual-inversion/ (scripts/fixture_textual_inversion.py).
// Needs the native module (npm run build:native).

import { join } from "node:path";

import test from "ava";

import { CandlewickError, StableDiffusionPipeline } from "../src/index.js";
import { cli, scratch } from "./helpers/cli.js";
import { GOLDENS, readJson, ROOT, TINY_SD } from "./helpers/fixtures.js";
import { readSafetensors } from "./helpers/safetensors.js";

const EMBEDDINGS = join(ROOT, "test/fixtures/textual-inversion");
const QUICK = { width: 16, height: 16, numInferenceSteps: 1, seed: 1 } as const;
let pipe: StableDiffusionPipeline;

test.before(async () => {
  pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, {
    device: "cpu", dtype: "f32",
    textualInversions: [join(EMBEDDINGS, "style-a1111.safetensors"), { path: join(EMBEDDINGS, "learned_embeds.safetensors"), token: "<toy>" }],
  });
});

test("a long weighted prompt gives diffusers' final latents from compel's embeddings (1e-4 relative)", async (t) => {
  const golden = readJson<{ prompt: string; negative_prompt: string; steps: number; guidance_scale: number; width: number; height: number }>(
    join(GOLDENS, "prompt_weighting_pipeline.json"),
  );
  const tensors = readSafetensors(join(GOLDENS, "prompt_weighting_pipeline.safetensors"));
  const initial = tensors.get("initial_latents")!;
  const want = tensors.get(`latents_step_${golden.steps - 1}`)!.data as Float32Array;
  const warnings: string[] = [];
  const options = {
    prompt: golden.prompt, negativePrompt: golden.negative_prompt, numInferenceSteps: golden.steps,
    guidanceScale: golden.guidance_scale, width: golden.width, height: golden.height,
    latents: { shape: initial.shape as [number, number, number, number], data: initial.data as Float32Array },
    onWarning: (w: string) => warnings.push(w),
  };
  const got = await pipe.generateLatents(options);
  let diff = 0;
  let scale = 0;
  want.forEach((w, i) => {
    diff = Math.max(diff, Math.abs(w - got.data[i]!));
    scale = Math.max(scale, Math.abs(w));
  });
  t.true(diff / scale <= 1e-4, `max |a-b| / max |golden| = ${diff / scale}`);
  t.deepEqual(warnings, []);

  // truncateLongPrompts: diffusers' plain encoding, cut with a warning.
  const cut = await pipe.generateLatents({ ...options, truncateLongPrompts: true });
  t.true(warnings.some((w) => w.includes("truncated")), warnings.join("\n"));
  t.notDeepEqual(cut.data, got.data);
});

test("textual inversion tokens from both file formats change the image", async (t) => {
  const [withTokens] = await pipe.generate({ ...QUICK, prompt: "a style-a1111 painting of a <toy>" });
  const [plain] = await pipe.generate({ ...QUICK, prompt: "a style painting of a toy" });
  t.notDeepEqual(withTokens!.data, plain!.data);
});

test("a bad weight names the prompt and the position; the pipeline stays usable", async (t) => {
  await t.throwsAsync(pipe.generate({ ...QUICK, prompt: "a (cat:1.2.3)", negativePrompt: "x" }), {
    instanceOf: CandlewickError,
    message: 'Expected a number as the weight at character 8 of (text:weight) for prompt but received "1.2.3" in "a (cat:1.2.3)"',
  });
  await t.throwsAsync(pipe.generate({ ...QUICK, prompt: ["a", "b"], negativePrompt: ["(x BREAK y)", "z"] }), {
    instanceOf: CandlewickError,
    message: /^Expected BREAK outside brackets \(it starts a new part of the prompt\) for negativePrompt\[0\]/,
  });
  t.is((await pipe.generate({ ...QUICK, prompt: "a (cat:1.2)" })).length, 1);
});

test("bad options and embeddings are refused with the option or the file named", async (t) => {
  await t.throwsAsync(pipe.generate({ ...QUICK, prompt: "a", truncateLongPrompts: "yes" as never }), {
    message: 'Expected boolean for truncateLongPrompts but received "yes"',
  });
  await t.throwsAsync(StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", textualInversions: "x.safetensors" as never }), {
    message: 'Expected array of paths or { path, token } objects for textualInversions but received "x.safetensors"',
  });
  await t.throwsAsync(StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", textualInversions: [{ path: "a", tokn: "b" } as never] }), {
    message: /^Unknown option "tokn" in textualInversions\[0\]; did you mean "token"\?/,
  });
  const wide = join(EMBEDDINGS, "wide.safetensors");
  await t.throwsAsync(StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", textualInversions: [wide] }), {
    message: `${wide}: its embedding is 48 wide but this text encoder's token embeddings are 32 wide (an embedding made for another model family)`,
  });
  await t.throwsAsync(
    StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", textualInversions: [{ path: join(EMBEDDINGS, "learned_embeds.safetensors"), token: "cat" }] }),
    { message: /^Expected a token that is not already in the tokenizer's vocabulary for textualInversions\[0\]\.token but received "cat"/ },
  );
});

test("the CLI loads textual inversions (--textual-inversion file[:token]) and takes a weighted long prompt", async (t) => {
  const out = join(scratch(), "ti.png");
  const prompt = `a style-a1111 painting of a (<toy>:1.2), ${"[detailed] ".repeat(40)}BREAK soft light`;
  const small = ["--model", TINY_SD, "--steps", "1", "--width", "16", "--height", "16", "--quiet"];
  const ok = await cli("generate", prompt, ...small, "--out", out,
    "--textual-inversion", join(EMBEDDINGS, "style-a1111.safetensors"), "--textual-inversion", `${join(EMBEDDINGS, "learned_embeds.safetensors")}:<toy>`);
  t.is(ok.code, 0, ok.stderr);
  t.is(ok.stderr, "");
  const wide = join(EMBEDDINGS, "wide.safetensors");
  const bad = await cli("generate", "x", ...small, "--out", out, "--textual-inversion", wide);
  t.is(bad.code, 1);
  t.is(bad.stderr, `candlewick: ${wide}: its embedding is 48 wide but this text encoder's token embeddings are 32 wide (an embedding made for another model family)\n`);
});
