// Single-file checkpoints and LoRA through the public API and the CLI. Fixtures and goldens:
// scripts/fixture_single_file_lora.py (test/fixtures/single-file/, goldens/lora_pipeline.*,
// goldens/single_file_pipeline.*, made with diffusers' from_single_file and load_lora_weights +
// fuse_lora; scripts/fixture_sdxl_lora.py's SDXL LoRA and goldens/sdxl_lora_pipeline.*); the Rust tests
// crates/candlewick-core/tests/single_file_lora.rs and sdxl_lora.rs check them step by step.

import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";

import test from "ava";

import { CandlewickError, convertSingleFile, StableDiffusionPipeline } from "../src/index.js";
import { cli } from "./helpers/cli.js";
import { GOLDENS, readJson, ROOT, TINY_SD } from "./helpers/fixtures.js";
import { readSafetensors } from "./helpers/safetensors.js";
import { tempDir } from "./helpers/temp.js";

const DIR = join(ROOT, "test/fixtures/single-file");
const CHECKPOINT = join(DIR, "tiny-sd.safetensors");
const KOHYA = join(DIR, "lora_kohya.safetensors");
const PEFT = join(DIR, "lora_peft.safetensors");
const LORAS = [{ path: KOHYA, weight: 0.8 }, { path: PEFT, weight: 0.5 }];

/** The golden's call: its prompt and fixed latents. */
function goldenCall(name: string) {
  const json = readJson<{ prompt: string; negative_prompt: string; steps: number; guidance_scale: number; width: number; height: number }>(join(GOLDENS, `${name}.json`));
  const tensors = readSafetensors(join(GOLDENS, `${name}.safetensors`));
  const initial = tensors.get("initial_latents")!;
  const image = tensors.get("image_u8")!;
  return {
    options: {
      prompt: json.prompt, negativePrompt: json.negative_prompt, numInferenceSteps: json.steps, guidanceScale: json.guidance_scale,
      width: json.width, height: json.height, latents: { data: initial.data as Float32Array, shape: initial.shape as [number, number, number, number] },
    },
    pixels: image.data as Uint8Array,
  };
}

function maxDiff(a: Uint8Array, b: Uint8Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

test("a single-file checkpoint loads with a config folder and makes diffusers' from_single_file image", async (t) => {
  const pipe = await StableDiffusionPipeline.fromPretrained(CHECKPOINT, { device: "cpu", dtype: "f32", config: TINY_SD });
  const { options, pixels } = goldenCall("single_file_pipeline");
  const [image] = await pipe.generate(options);
  t.true(maxDiff(image!.data, pixels) <= 1);
  await pipe.dispose();
});

test("LoRAs fuse at load as diffusers' fuse_lora, are replaced by setLoras and removed by setLoras([])", async (t) => {
  const pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", dtype: "f32", loras: LORAS });
  t.deepEqual(pipe.info.loras, LORAS);
  const { options, pixels } = goldenCall("lora_pipeline");
  const [fused] = await pipe.generate(options);
  t.true(maxDiff(fused!.data, pixels) <= 1);

  await pipe.setLoras([]);
  t.deepEqual(pipe.info.loras, []);
  const [plain] = await pipe.generate(options);
  t.true(maxDiff(plain!.data, pixels) > 1, "without the LoRAs the image must differ");

  const error = await t.throwsAsync(pipe.setLoras([{ path: join(DIR, "lora_bad_key.safetensors") }]), { instanceOf: CandlewickError });
  t.is(error!.code, "ERR_CANDLEWICK_MODEL");
  t.regex(error!.message, /lora_bad_key\.safetensors: key lora_unet_down_blocks_5_attentions_0_proj_in\.\S+: the unet has no layer it maps to/);
  const bad = await t.throwsAsync(pipe.setLoras([{ path: KOHYA, weight: 99 }]), { instanceOf: CandlewickError });
  t.is(bad!.code, "ERR_CANDLEWICK_INVALID_OPTION");
  await pipe.setLoras(LORAS);
  const [again] = await pipe.generate(options);
  t.deepEqual(again!.data, fused!.data);
  await pipe.dispose();
});

// SDXL LoRA (scripts/fixture_sdxl_lora.py; crates/candlewick-core/tests/sdxl_lora.rs checks it step by step
// and weight by weight): kohya's lora_te1_/lora_te2_/lora_unet_ fused into tiny-sdxl as diffusers' fuse_lora(0.8).
test("an SDXL LoRA fuses into both text encoders as diffusers' fuse_lora, and a model without one says so", async (t) => {
  const sdxl = join(ROOT, "test/fixtures/tiny-sdxl");
  const lora = [{ path: join(DIR, "lora_sdxl_kohya.safetensors"), weight: 0.8 }];
  const pipe = await StableDiffusionPipeline.fromPretrained(sdxl, { device: "cpu", dtype: "f32", loras: lora });
  const { options, pixels } = goldenCall("sdxl_lora_pipeline");
  const [fused] = await pipe.generate(options);
  t.true(maxDiff(fused!.data, pixels) <= 1);
  await pipe.setLoras([]);
  const [plain] = await pipe.generate(options);
  t.true(maxDiff(plain!.data, pixels) > 1, "without the LoRA the image must differ");
  await pipe.dispose();

  const refiner = await StableDiffusionPipeline.fromPretrained(join(ROOT, "test/fixtures/tiny-sdxl-refiner"), { device: "cpu", dtype: "f32" });
  const error = await t.throwsAsync(refiner.setLoras(lora), { instanceOf: CandlewickError });
  t.is(error!.code, "ERR_CANDLEWICK_MODEL");
  t.regex(error!.message, /lora_sdxl_kohya\.safetensors: key \S+: .*\(it has unet, text_encoder_2\)/);
  t.deepEqual(refiner.info.loras, []);
  await refiner.dispose();
});

test("pickled checkpoints are refused with the reason and a way to convert them", async (t) => {
  const error = await t.throwsAsync(StableDiffusionPipeline.fromPretrained(join(DIR, "tiny-sd.ckpt"), { device: "cpu" }), { instanceOf: CandlewickError });
  t.is(error!.code, "ERR_CANDLEWICK_MODEL");
  t.regex(error!.message, /tiny-sd\.ckpt: is a pickled PyTorch checkpoint .* arbitrary code .* \.safetensors/);
});

test("convertSingleFile writes a diffusers folder that loads", async (t) => {
  const out = join(tempDir("candlewick-convert-"), "tiny");
  const result = await convertSingleFile(CHECKPOINT, out, { config: TINY_SD });
  t.is(result.modelType, "v1");
  t.true(existsSync(join(out, "unet/diffusion_pytorch_model.safetensors")));
  const pipe = await StableDiffusionPipeline.fromPretrained(out, { device: "cpu" });
  const { options, pixels } = goldenCall("single_file_pipeline");
  const [image] = await pipe.generate(options);
  t.true(maxDiff(image!.data, pixels) <= 1);
  await pipe.dispose();
  rmSync(out, { recursive: true });
});

test("the CLI generates from a single-file checkpoint with a kohya LoRA, and converts", async (t) => {
  const dir = tempDir("candlewick-cli-sf-");
  const png = join(dir, "out.png");
  const run = await cli("generate", "a red apple", "--model", CHECKPOINT, "--config", TINY_SD, "--lora", `${KOHYA}:0.8`,
    "--device", "cpu", "--steps", "2", "--width", "64", "--height", "64", "--out", png, "--quiet");
  t.is(run.code, 0, run.stderr);
  t.true(existsSync(png));
  const converted = await cli("convert", CHECKPOINT, join(dir, "folder"), "--config", TINY_SD);
  t.is(converted.code, 0, converted.stderr);
  t.regex(converted.stderr, /Wrote .*folder \(v1, \d+ files\)/);
  const refused = await cli("convert", join(DIR, "tiny-sd.ckpt"), join(dir, "x"), "--config", TINY_SD);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /arbitrary code/);
  rmSync(dir, { recursive: true });
});

// SDXL base and refiner single files (scripts/fixture_single_file_sdxl.py: tiny-sdxl and tiny-sdxl-refiner's
// tensors in the original layout, checked by diffusers' from_single_file; the Rust test
// crates/candlewick-core/tests/single_file_sdxl.rs compares every tensor).
const SDXL = [
  { name: "tiny-sdxl", modelType: "xl_base", pipelineClass: "StableDiffusionXLPipeline", call: {} },
  { name: "tiny-sdxl-refiner", modelType: "xl_refiner", pipelineClass: "StableDiffusionXLImg2ImgPipeline",
    call: { image: join(ROOT, "test/fixtures/images/input.png"), strength: 0.6 } },
] as const;

test("SDXL base and refiner single files make their folders' images, and convert to folders that do too", async (t) => {
  for (const { name, modelType, pipelineClass, call } of SDXL) {
    const folder = join(ROOT, "test/fixtures", name);
    const options = { prompt: "a red apple", negativePrompt: "blurry", numInferenceSteps: 3, guidanceScale: 5, seed: 3, ...call };
    const fromFolder = await StableDiffusionPipeline.fromPretrained(folder, { device: "cpu", dtype: "f32" });
    const [want] = await fromFolder.generate(options);
    await fromFolder.dispose();
    const single = await StableDiffusionPipeline.fromPretrained(join(DIR, `${name}.safetensors`), { device: "cpu", dtype: "f32", config: folder });
    t.is(single.info.pipelineClass, pipelineClass);
    const [got] = await single.generate(options);
    await single.dispose();
    t.deepEqual(got!.data, want!.data, `${name}: the single file's image differs from the folder's`);

    const out = join(tempDir("candlewick-convert-xl-"), "m");
    const result = await convertSingleFile(join(DIR, `${name}.safetensors`), out, { config: folder });
    t.is(result.modelType, modelType);
    t.true(existsSync(join(out, "text_encoder_2/model.safetensors")));
    t.is(existsSync(join(out, "text_encoder")), modelType === "xl_base");
    const converted = await StableDiffusionPipeline.fromPretrained(out, { device: "cpu", dtype: "f32" });
    const [again] = await converted.generate(options);
    await converted.dispose();
    t.deepEqual(again!.data, want!.data, `${name}: the converted folder's image differs`);
    rmSync(out, { recursive: true });
  }
});

test("an SDXL single file with another family's config folder is refused by name, and the reverse; the CLI converts SDXL", async (t) => {
  const load = (file: string, config: string) =>
    t.throwsAsync(StableDiffusionPipeline.fromPretrained(join(DIR, file), { device: "cpu", config: join(ROOT, "test/fixtures", config) }), { instanceOf: CandlewickError });
  const xlWithSd = await load("tiny-sdxl.safetensors", "tiny-sd");
  t.is(xlWithSd!.code, "ERR_CANDLEWICK_MODEL");
  t.regex(xlWithSd!.message, /tiny-sd\/unet\/config\.json: is an SD1\.x\/SD2\.x UNet config .*\/tiny-sdxl\.safetensors is an SDXL checkpoint \(xl_base\)/);
  const sdWithXl = await load("tiny-sd.safetensors", "tiny-sdxl");
  t.regex(sdWithXl!.message, /tiny-sdxl\/unet\/config\.json: is an SDXL UNet config .*\/tiny-sd\.safetensors is an SD1\.x\/SD2\.x checkpoint \(v1\)/);
  const refinerWithBase = await load("tiny-sdxl-refiner.safetensors", "tiny-sdxl");
  t.regex(refinerWithBase!.message, /tiny-sdxl\/text_encoder: belongs to an SDXL base folder, but .*tiny-sdxl-refiner\.safetensors is an SDXL refiner checkpoint/);
  // The CLI's convert: an SDXL folder (the images are compared in the test above, through the same convertSingleFile).
  const dir = tempDir("candlewick-cli-xl-");
  const converted = await cli("convert", join(DIR, "tiny-sdxl-refiner.safetensors"), join(dir, "refiner"), "--config", join(ROOT, "test/fixtures/tiny-sdxl-refiner"));
  t.is(converted.code, 0, converted.stderr);
  t.regex(converted.stderr, /Wrote .*refiner \(xl_refiner, \d+ files\)/);
  t.true(existsSync(join(dir, "refiner/tokenizer_2/vocab.json")));
  const wrongFamily = await cli("convert", join(DIR, "tiny-sdxl.safetensors"), join(dir, "x"), "--config", TINY_SD);
  t.is(wrongFamily.code, 1);
  t.regex(wrongFamily.stderr, /is an SDXL checkpoint \(xl_base\)/);
  rmSync(dir, { recursive: true });
});
