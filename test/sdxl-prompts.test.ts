// SDXL's long and weighted prompts through the public API, on test/fixtures/tiny-sdxl. Goldens:
// test/fixtures/goldens/sdxl_prompt_weighting.{json,safetensors} (scripts/fixture_sdxl_prompt_weighting.py:
// diffusers' StableDiffusionXLPipeline given compel 2.5.1's CompelForSDXL embeddings of an A1111-syntax prompt
// with BREAK past 77 tokens, and the same call with diffusers' own encoding of the texts). The embeddings'
// parity for more cases: crates/candlewick-core/src/pipeline/sdxl_encode_prompt.rs.
// Needs the native module (npm run build:native).

import { join } from "node:path";

import test from "ava";

import { CandlewickError, type GeneratedImage, StableDiffusionPipeline } from "../src/index.js";
import { GOLDENS, readJson, ROOT } from "./helpers/fixtures.js";
import { readSafetensors } from "./helpers/safetensors.js";

interface Golden {
  cases: { name: string; texts: Record<string, { text: string }> }[];
  pipeline: { case: string; steps: number; guidance_scale: number; width: number; height: number };
}

let pipe: StableDiffusionPipeline;

test.before(async () => {
  pipe = await StableDiffusionPipeline.fromPretrained(join(ROOT, "test/fixtures/tiny-sdxl"), { device: "cpu", dtype: "f32" });
});

test.after.always(() => pipe.dispose());

function maxDiff(a: Uint8Array, b: Uint8Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

test("a long weighted SDXL prompt with BREAK gives diffusers' image from compel's embeddings; truncateLongPrompts gives diffusers' plain one", async (t) => {
  const golden = readJson<Golden>(join(GOLDENS, "sdxl_prompt_weighting.json"));
  const tensors = readSafetensors(join(GOLDENS, "sdxl_prompt_weighting.safetensors"));
  const run = golden.pipeline;
  const texts = golden.cases.find((c) => c.name === run.case)!.texts;
  const initial = tensors.get("initial_latents")!;
  const warnings: string[] = [];
  const options = {
    prompt: texts.prompt!.text, negativePrompt: texts.negative_prompt!.text, numInferenceSteps: run.steps,
    guidanceScale: run.guidance_scale, width: run.width, height: run.height,
    latents: { shape: initial.shape as [number, number, number, number], data: initial.data as Float32Array },
    onWarning: (w: string) => warnings.push(w),
  };
  const [weighted] = (await pipe.generate(options)) as [GeneratedImage];
  const off = maxDiff(weighted.data, tensors.get("image_u8")!.data as Uint8Array);
  t.true(off <= 1, `pixels off diffusers' by up to ${off}`);
  t.deepEqual(warnings, []);

  const [plain] = (await pipe.generate({ ...options, truncateLongPrompts: true })) as [GeneratedImage];
  const plainOff = maxDiff(plain.data, tensors.get("plain_image_u8")!.data as Uint8Array);
  t.true(plainOff <= 1, `pixels off diffusers' plain encoding by up to ${plainOff}`);
  t.true(warnings.some((w) => w.includes("truncated")), warnings.join("\n"));
  t.notDeepEqual(plain.data, weighted.data);
});

test("SDXL: a weight changes the image; bad syntax gets SD1.x's message with the option named; the pipeline stays usable", async (t) => {
  const quick = { numInferenceSteps: 1, seed: 1 } as const;
  const [plain] = (await pipe.generate({ ...quick, prompt: "a red fox" })) as [GeneratedImage];
  const [weighted] = (await pipe.generate({ ...quick, prompt: "a (red:1.4) fox" })) as [GeneratedImage];
  t.notDeepEqual(weighted.data, plain.data);
  await t.throwsAsync(pipe.generate({ ...quick, prompt: "a (cat:1.2.3)", negativePrompt: "x" }), {
    instanceOf: CandlewickError,
    message: 'Expected a number as the weight at character 8 of (text:weight) for prompt but received "1.2.3" in "a (cat:1.2.3)"',
  });
  await t.throwsAsync(pipe.generate({ ...quick, prompt: "a", prompt2: "b (c:1.2.3)" }), {
    instanceOf: CandlewickError,
    message: /^Expected a number as the weight at character \d+ of \(text:weight\) for prompt2 but received "1\.2\.3"/,
  });
  await t.throwsAsync(pipe.generate({ ...quick, prompt: ["a", "b"], negativePrompt: ["(x BREAK y)", "z"] }), {
    instanceOf: CandlewickError,
    message: /^Expected BREAK outside brackets \(it starts a new part of the prompt\) for negativePrompt\[0\]/,
  });
  const [again] = (await pipe.generate({ ...quick, prompt: "a red fox" })) as [GeneratedImage];
  t.deepEqual(again.data, plain.data);
});
