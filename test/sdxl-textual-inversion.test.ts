// SDXL textual inversion through the public API, on test/fixtures/tiny-sdxl and tiny-sdxl-refiner. Embeddings:
// test/fixtures/textual-inversion/sdxl-*.safetensors ({clip_l, clip_g}, SDXL's A1111/ComfyUI format); goldens:
// test/fixtures/goldens/sdxl_textual_inversion.{json,safetensors} (scripts/fixture_sdxl_textual_inversion.py:
// diffusers' StableDiffusionXLPipeline after pipe.load_textual_inversion(sd["clip_g"], token, text_encoder_2,
// tokenizer_2) and the same with clip_l and the first pair, 2 steps from fixed latents). The embeddings' parity for
// more prompts (weighted, refiner): crates/candlewick-core/src/pipeline/sdxl_encode_prompt.rs.
// Needs the native module (npm run build:native).

import { readFileSync } from "node:fs";
import { join } from "node:path";

import test from "ava";
import pngjs from "pngjs";

import { CandlewickError, type GeneratedImage, StableDiffusionPipeline } from "../src/index.js";
import { cli, scratch } from "./helpers/cli.js";
import { GOLDENS, readJson, ROOT, TINY_SD } from "./helpers/fixtures.js";
import { readSafetensors } from "./helpers/safetensors.js";

const EMBEDDINGS = join(ROOT, "test/fixtures/textual-inversion");
const TINY_SDXL = join(ROOT, "test/fixtures/tiny-sdxl");
const REFINER = join(ROOT, "test/fixtures/tiny-sdxl-refiner");
// In the script's order (the new tokens' ids follow it, and with text encoders whose eos_token_id is 2 the pooled
// output is read at the highest id, as transformers does); sdxl-toy's token is given, sdxl-style's is its file's name.
const BOTH = [{ path: join(EMBEDDINGS, "sdxl-toy.safetensors"), token: "<sdxl-toy>" }, join(EMBEDDINGS, "sdxl-style.safetensors")];

interface Golden {
  cases: { name: string; prompt: string; negative_prompt?: string }[];
  pipeline: { case: string; steps: number; guidance_scale: number; width: number; height: number };
}

function maxDiff(a: Uint8Array, b: Uint8Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

function goldenCall() {
  const golden = readJson<Golden>(join(GOLDENS, "sdxl_textual_inversion.json"));
  const tensors = readSafetensors(join(GOLDENS, "sdxl_textual_inversion.safetensors"));
  const run = golden.pipeline;
  const texts = golden.cases.find((c) => c.name === run.case)!;
  const initial = tensors.get("initial_latents")!;
  const options = {
    prompt: texts.prompt, negativePrompt: texts.negative_prompt!, numInferenceSteps: run.steps,
    guidanceScale: run.guidance_scale, width: run.width, height: run.height,
    latents: { shape: initial.shape as [number, number, number, number], data: initial.data as Float32Array },
  };
  return { options, pixels: tensors.get("image_u8")!.data as Uint8Array };
}

test("SDXL clip_l/clip_g embeddings give diffusers' image and survive setLoras", async (t) => {
  const pipe = await StableDiffusionPipeline.fromPretrained(TINY_SDXL, { device: "cpu", dtype: "f32", textualInversions: BOTH });
  const { options, pixels } = goldenCall();
  const warnings: string[] = [];
  const [image] = (await pipe.generate({ ...options, onWarning: (w: string) => warnings.push(w) })) as [GeneratedImage];
  const off = maxDiff(image.data, pixels);
  t.true(off <= 1, `pixels off diffusers' by up to ${off}`);
  t.deepEqual(warnings, []);
  // The tokens matter: plain words give another image.
  const [plain] = (await pipe.generate({ ...options, prompt: "a style painting of a toy on a hill" })) as [GeneratedImage];
  t.true(maxDiff(plain.data, pixels) > 1);

  // LoRA (both text encoders) on and off: the embeddings' rows are kept in both encoders.
  await pipe.setLoras([{ path: join(ROOT, "test/fixtures/single-file/lora_sdxl_kohya.safetensors"), weight: 0.8 }]);
  const [withLora] = (await pipe.generate(options)) as [GeneratedImage];
  t.notDeepEqual(withLora.data, image.data);
  await pipe.setLoras([]);
  const [again] = (await pipe.generate(options)) as [GeneratedImage];
  t.deepEqual(again.data, image.data);
  await pipe.dispose();

  // The refiner (text_encoder_2 alone) takes clip_g.
  const refiner = await StableDiffusionPipeline.fromPretrained(REFINER, { device: "cpu", dtype: "f32", textualInversions: BOTH });
  t.is((await refiner.generateLatents({ prompt: "a sdxl-style photo of <sdxl-toy>", numInferenceSteps: 1, seed: 1, width: 32, height: 32 })).shape[0], 1);
  await refiner.dispose();
});

test("an SD1.x embedding given to SDXL, an SDXL one given to SD1.x and a wrong width are refused with the file named", async (t) => {
  const sd1 = join(EMBEDDINGS, "learned_embeds.safetensors");
  for (const model of [TINY_SDXL, REFINER]) {
    await t.throwsAsync(StableDiffusionPipeline.fromPretrained(model, { device: "cpu", textualInversions: [sd1] }), {
      instanceOf: CandlewickError,
      message: `${sd1}: holds one tensor (<cat-toy> [1, 32]), an SD1.x/SD2 embedding; SDXL needs an embedding of two tensors: clip_l [vectors, text_encoder's width] and clip_g [vectors, text_encoder_2's width] (AUTOMATIC1111's and ComfyUI's SDXL format)`,
    });
  }
  const sdxl = join(EMBEDDINGS, "sdxl-toy.safetensors");
  await t.throwsAsync(StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", textualInversions: [sdxl] }), {
    instanceOf: CandlewickError,
    message: `${sdxl}: is an SDXL textual inversion (clip_g [1, 32], clip_l [1, 32]); this model has one text encoder and takes an SD1.x/SD2 embedding: one tensor, {token: vectors} (diffusers) or {"emb_params": vectors} (AUTOMATIC1111)`,
  });
  const wide = join(EMBEDDINGS, "sdxl-wide.safetensors");
  await t.throwsAsync(StableDiffusionPipeline.fromPretrained(TINY_SDXL, { device: "cpu", textualInversions: [wide] }), {
    instanceOf: CandlewickError,
    message: `${wide}: its clip_g embedding is 48 wide but text_encoder_2's token embeddings are 32 wide (an embedding made for another model family)`,
  });
  // Loading still works after the refusals.
  const pipe = await StableDiffusionPipeline.fromPretrained(TINY_SDXL, { device: "cpu", textualInversions: BOTH });
  t.is((await pipe.generate({ prompt: "<sdxl-toy>", numInferenceSteps: 1, seed: 1, width: 32, height: 32 })).length, 1);
  await pipe.dispose();
});

test("the CLI loads SDXL embeddings (--textual-inversion file[:token]) and draws the API's image; an SD1.x one is refused", async (t) => {
  const out = join(scratch(), "sdxl-embeddings.png");
  const prompt = "a sdxl-style photo of <sdxl-toy>";
  const small = ["--model", TINY_SDXL, "--steps", "2", "--width", "32", "--height", "32", "--seed", "3", "--quiet"];
  const ok = await cli("generate", prompt, ...small, "--out", out,
    "--textual-inversion", `${join(EMBEDDINGS, "sdxl-toy.safetensors")}:<sdxl-toy>`, "--textual-inversion", join(EMBEDDINGS, "sdxl-style.safetensors"));
  t.is(ok.code, 0, ok.stderr);
  t.is(ok.stderr, "");
  const png = pngjs.PNG.sync.read(readFileSync(out));
  const rgb = new Uint8Array(png.width * png.height * 3);
  for (let i = 0; i < png.width * png.height; i++) rgb.set(png.data.subarray(4 * i, 4 * i + 3), 3 * i);
  const pipe = await StableDiffusionPipeline.fromPretrained(TINY_SDXL, { device: "cpu", textualInversions: BOTH });
  const [image] = (await pipe.generate({ prompt, numInferenceSteps: 2, width: 32, height: 32, seed: 3 })) as [GeneratedImage];
  await pipe.dispose();
  t.deepEqual(rgb, image.data);

  const sd1 = join(EMBEDDINGS, "learned_embeds.safetensors");
  const bad = await cli("generate", "x", ...small, "--out", out, "--textual-inversion", sd1);
  t.is(bad.code, 1);
  const refusal = `candlewick: ${sd1}: holds one tensor (<cat-toy> [1, 32]), an SD1.x/SD2 embedding; SDXL needs`;
  t.true(bad.stderr.startsWith(refusal), bad.stderr);
});
