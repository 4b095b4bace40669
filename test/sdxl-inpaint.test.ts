// SDXL inpainting (diffusers' StableDiffusionXLInpaintPipeline) through the public API and the CLI,
// on the tiny SDXL models. Fixtures and goldens: scripts/fixture_sdxl_inpaint.py (test/fixtures/
// tiny-sdxl-inpaint: a 9-channel UNet, model_index.json and a low-variance VAE; goldens/
// sdxl_inpaint_api_{4ch,9ch}: diffusers' images from given latents, whose VAE samples are their mean,
// so no draw of diffusers' needs replaying). crates/candlewick-core/tests/sdxl_inpaint.rs checks
// every golden step by step, with diffusers' draws replayed.

import { cpSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";

import test from "ava";

import { CandlewickError, readTextChunks, StableDiffusionPipeline } from "../src/index.js";
import { cli, scratch } from "./helpers/cli.js";
import { GOLDENS, readJson, ROOT } from "./helpers/fixtures.js";
import { readSafetensors } from "./helpers/safetensors.js";
import { tempDir } from "./helpers/temp.js";

const FIXTURES = join(ROOT, "test/fixtures");
const TINY_SDXL = join(FIXTURES, "tiny-sdxl");
const VAE = join(FIXTURES, "tiny-sdxl-inpaint/vae-low-variance");
const INPUT = join(FIXTURES, "images/input.png");
const MASK = join(FIXTURES, "images/mask.png");

interface GoldenJson {
  prompt: string; negative_prompt: string; num_inference_steps: number; guidance_scale: number;
  width: number; height: number; strength?: number;
}

/** The golden's call (its prompt, images, strength and given latents) and diffusers' pixels. */
function goldenCall(name: string) {
  const json = readJson<GoldenJson>(join(GOLDENS, `${name}.json`));
  const tensors = readSafetensors(join(GOLDENS, `${name}.safetensors`));
  const initial = tensors.get("initial_latents")!;
  return {
    options: {
      prompt: json.prompt, negativePrompt: json.negative_prompt, numInferenceSteps: json.num_inference_steps,
      guidanceScale: json.guidance_scale, width: json.width, height: json.height, image: INPUT, maskImage: MASK,
      ...(json.strength === undefined ? {} : { strength: json.strength }),
      latents: { data: initial.data as Float32Array, shape: initial.shape as [number, number, number, number] },
    },
    pixels: tensors.get("image_u8")!.data as Uint8Array,
  };
}

function maxDiff(a: Uint8Array, b: Uint8Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

/** tiny-sdxl with tiny-sdxl-inpaint's UNet and model_index.json (StableDiffusionXLInpaintPipeline). */
function inpaintingFolder(): string {
  const folder = tempDir("candlewick-sdxl-inpaint-");
  for (const part of ["tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2", "vae", "scheduler"]) {
    cpSync(join(TINY_SDXL, part), join(folder, part), { recursive: true });
  }
  cpSync(join(FIXTURES, "tiny-sdxl-inpaint/unet"), join(folder, "unet"), { recursive: true });
  cpSync(join(FIXTURES, "tiny-sdxl-inpaint/model_index.json"), join(folder, "model_index.json"));
  return folder;
}

test("a StableDiffusionXLInpaintPipeline folder (9-channel UNet) inpaints diffusers' image; text to image is refused", async (t) => {
  const folder = inpaintingFolder();
  try {
    const pipe = await StableDiffusionPipeline.fromPretrained(folder, { device: "cpu", dtype: "f32", vae: VAE });
    t.is(pipe.info.pipelineClass, "StableDiffusionXLInpaintPipeline");
    const { options, pixels } = goldenCall("sdxl_inpaint_api_9ch");
    const [image] = await pipe.generate(options);
    t.is(image!.settings?.task, "inpaint");
    t.is(image!.settings?.strength, 1);
    t.true(maxDiff(image!.data, pixels) <= 1, `differs from diffusers by ${maxDiff(image!.data, pixels)}/255`);
    await t.throwsAsync(pipe.generate({ prompt: "a red apple", numInferenceSteps: 1 }), {
      message: "Expected image and maskImage (this model's UNet is an inpainting UNet: it takes a mask and the masked image) for maskImage but received none",
    });
    await pipe.dispose();
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
});

test("an SDXL base folder given a mask inpaints diffusers' image at its default strength 0.9999", async (t) => {
  const pipe = await StableDiffusionPipeline.fromPretrained(TINY_SDXL, { device: "cpu", dtype: "f32", vae: VAE });
  const { options, pixels } = goldenCall("sdxl_inpaint_api_4ch");
  const [image] = await pipe.generate(options);
  t.is(image!.settings?.task, "inpaint");
  t.is(image!.settings?.strength, 0.9999);
  t.true(maxDiff(image!.data, pixels) <= 1, `differs from diffusers by ${maxDiff(image!.data, pixels)}/255`);
  await pipe.dispose();
});

test("SDXL inpainting's bad inputs get the messages SD1.5's get, and the pipeline then inpaints", async (t) => {
  const pipe = await StableDiffusionPipeline.fromPretrained(TINY_SDXL, { device: "cpu", dtype: "f32" });
  const call = { prompt: "a red apple", numInferenceSteps: 2, seed: 5, image: INPUT, maskImage: MASK };
  const [before] = await pipe.generate(call);
  const refused: [unknown, string][] = [
    [{ ...call, maskImage: { width: 16, height: 16, channels: 1, data: new Uint8Array(256) } },
      "Expected mask of the image's size (32x32 pixels) for maskImage but received 16x16 pixels"],
    [{ ...call, maskImage: { width: 32, height: 32, channels: 4, data: new Uint8Array(4096) } },
      "Expected mask without an alpha channel (white = repaint, black = keep; as grayscale or RGB) for maskImage but received an image with an alpha channel"],
    [{ ...call, image: undefined }, "Expected image with maskImage (inpainting repaints the image) for image but received none"],
    [{ ...call, strength: 1.5 }, "Expected number > 0 and <= 1 for strength but received 1.5"],
    [{ ...call, strength: 0.2 }, "Expected strength x numInferenceSteps >= 1 (at least one step; 2 steps need strength >= 0.5) for strength but received 0.2"],
    [{ ...call, latents: { shape: [1, 4, 8, 8], data: new Float32Array(256) } }, "Expected latents of shape [1, 4, 16, 16] for latents but received shape [1, 4, 8, 8]"],
  ];
  for (const [options, message] of refused) {
    const error = await t.throwsAsync(pipe.generate(options as never), { instanceOf: CandlewickError, message });
    t.is(error?.code, "ERR_CANDLEWICK_INVALID_OPTION");
  }
  const [after] = await pipe.generate(call);
  t.deepEqual(after!.data, before!.data);
  await pipe.dispose();
});

test("candlewick inpaint runs an SDXL model and records its task and strength", async (t) => {
  const out = join(scratch(), "inpainted.png");
  const run = await cli("inpaint", "a red apple", "--model", TINY_SDXL, "--image", INPUT, "--mask", MASK, "--steps", "2", "--seed", "1", "--out", out, "-q");
  t.is(run.code, 0, run.stderr);
  t.like(readTextChunks(readFileSync(out)), { task: "inpaint", strength: "0.9999", size: "32x32" });
});

test("the base-to-refiner inpainting handoff: the base's denoisingEnd latents, with the mask, continue on the refiner", async (t) => {
  const base = await StableDiffusionPipeline.fromPretrained(TINY_SDXL, { device: "cpu", dtype: "f32" });
  const refiner = await StableDiffusionPipeline.fromPretrained(join(FIXTURES, "tiny-sdxl-refiner"), { device: "cpu", dtype: "f32" });
  const call = { prompt: "a red apple", numInferenceSteps: 5, seed: 1, maskImage: MASK };
  const latents = await base.generateLatents({ ...call, image: INPUT, denoisingEnd: 0.6 });
  t.deepEqual(latents.shape, [1, 4, 16, 16]);
  const handoff = { ...call, latents: { shape: latents.shape, data: latents.data }, denoisingStart: 0.6 };
  const [image] = await refiner.generate(handoff);
  t.deepEqual([image!.width, image!.height, image!.settings?.task], [32, 32, "inpaint"]);
  const [again] = await refiner.generate(handoff);
  t.deepEqual(again!.data, image!.data);
  await t.throwsAsync(refiner.generate({ ...handoff, image: INPUT }), {
    instanceOf: CandlewickError,
    message: "Expected image or latents with maskImage and denoisingStart, not both (latents are then the image's latents) for latents but received latents of shape [1, 4, 16, 16]",
  });
  await base.dispose();
  await refiner.dispose();
});
