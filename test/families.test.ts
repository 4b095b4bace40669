// The model families through the JavaScript API: SDXL's size conditions, clipSkip and second prompts reach the
// model (test/fixtures/tiny-sdxl, tiny-sd2, tiny-lcm, made by scripts/fixture_families.py; their
// parity with diffusers is crates/candlewick-core/tests/families.rs), options refused on models
// that do not take them, and the hub's file selection for SDXL repositories.

import { join } from "node:path";

import test from "ava";

import { CandlewickError, type GeneratedImage, StableDiffusionPipeline } from "../src/index.js";
import { imageParameters, pngText, resolvedOf } from "../src/cli/parameters.js";
import { checkInput } from "../src/batch/inputs.js";
import { settingsFrom } from "../src/cli/flags.js";
import { selectPipelineFiles } from "../src/hub/files.js";
import { toRawLoadOptions } from "../src/check-options.js";
import { ROOT, TINY_SD } from "./helpers/fixtures.js";

const fixture = (name: string) => join(ROOT, "test/fixtures", name);
const load = (folder: string) => StableDiffusionPipeline.fromPretrained(folder, { device: "cpu", dtype: "f32" });
const INVALID = "ERR_CANDLEWICK_INVALID_OPTION";

test("SDXL: the size conditions and clipSkip change the image; the same call gives the same pixels", async (t) => {
  const pipe = await load(fixture("tiny-sdxl"));
  try {
    const base = { prompt: "a red apple", numInferenceSteps: 2, seed: 3 } as const;
    const [plain] = (await pipe.generate(base)) as [GeneratedImage];
    t.is(plain.width, 64);
    const sized = { ...base, originalSize: [96, 128], cropsCoordsTopLeft: [4, 8], targetSize: [64, 48] } as const;
    const [a] = (await pipe.generate(sized)) as [GeneratedImage];
    const [b] = (await pipe.generate(sized)) as [GeneratedImage];
    t.deepEqual(a.data, b.data);
    t.notDeepEqual(a.data, plain.data);
    // The settings report the sizes as they ran (unset ones are the output's), and the CLI records them.
    t.deepEqual([plain.settings?.originalSize, plain.settings?.cropsCoordsTopLeft, plain.settings?.targetSize], [[64, 64], [0, 0], [64, 64]]);
    t.deepEqual([a.settings?.originalSize, a.settings?.cropsCoordsTopLeft, a.settings?.targetSize], [[96, 128], [4, 8], [64, 48]]);
    t.is(a.settings?.negativeOriginalSize, undefined);
    const [skipped] = (await pipe.generate({ ...base, clipSkip: 1 })) as [GeneratedImage];
    t.notDeepEqual(skipped.data, plain.data);
    t.is(skipped.settings?.clipSkip, 1);
    const text = pngText(imageParameters({}, "a red apple", "", 3n, resolvedOf(skipped), "tiny-sdxl"));
    t.regex(text.parameters!, /, Clip skip: 2$/);
    t.like(text, { clipSkip: "1", originalSize: "64x64", cropsCoordsTopLeft: "0,0", targetSize: "64x64" });
    // denoisingEnd stops early: the latents of 1 of 2 steps differ from the whole run's.
    const whole = await pipe.generateLatents(base);
    const half = await pipe.generateLatents({ ...base, denoisingEnd: 0.5 });
    t.deepEqual(half.shape, whole.shape);
    t.notDeepEqual(half.data, whole.data);
    const error = await t.throwsAsync(pipe.generate({ ...base, clipSkip: 4 }), { instanceOf: CandlewickError });
    t.is(error?.message, "Expected integer between 0 and 3 (the text encoder's layers) for clipSkip but received 4");
    t.is(error?.code, INVALID);
  } finally {
    pipe.dispose();
  }
});

test("size conditions on a model without them are refused by name, and the pipeline stays usable", async (t) => {
  const pipe = await load(TINY_SD);
  try {
    const error = await t.throwsAsync(pipe.generate({ prompt: "a", numInferenceSteps: 1, targetSize: [64, 64] }), {
      instanceOf: CandlewickError,
    });
    t.is(error?.message, "Expected an SDXL model (StableDiffusionXLPipeline) for targetSize but received a model without size conditions");
    const [image] = await pipe.generate({ prompt: "a", numInferenceSteps: 1, width: 32, height: 32, clipSkip: 1, seed: 1 });
    t.is(image?.width, 32);
  } finally {
    pipe.dispose();
  }
});

test("SDXL's prompt2 / negativePrompt2: the second text encoder's texts, recorded by the CLI; refused by name on SD1.x", async (t) => {
  // Their parity with diffusers: crates/candlewick-core/tests/families.rs (scripts/fixture_sdxl_prompt_2.py).
  const pipe = await load(fixture("tiny-sdxl"));
  const refiner = await load(fixture("tiny-sdxl-refiner"));
  const sd = await load(TINY_SD);
  try {
    const base = { prompt: "a red apple", negativePrompt: "blurry", numInferenceSteps: 2, seed: 3 } as const;
    const run = async (o: object, into: string[] = []) => {
      const [image] = (await pipe.generate({ ...base, ...o, onWarning: (w) => into.push(w) })) as [GeneratedImage];
      return image.data;
    };
    const plain = await run({});
    t.notDeepEqual(await run({ prompt2: "a cat on a chair" }), plain);
    t.notDeepEqual(await run({ negativePrompt2: "dark" }), plain);
    // Omitted, empty, or equal to the prompt: the same run (diffusers' `prompt_2 or prompt`).
    t.deepEqual(await run({ prompt2: base.prompt, negativePrompt2: base.negativePrompt }), plain);
    t.deepEqual(await run({ prompt2: "", negativePrompt2: "" }), plain);
    // ...where an array's empty string is the empty text (diffusers' lists).
    t.notDeepEqual(await run({ negativePrompt2: [""] }), plain);
    // One second prompt for several prompts, or one each.
    const two = { ...base, prompt: ["a red apple", "a blue car"], numInferenceSteps: 1 };
    const one = await pipe.generate({ ...two, prompt2: "a cat" });
    const each = await pipe.generate({ ...two, prompt2: ["a cat", "a cat"] });
    t.deepEqual(one.map((i) => i.data), each.map((i) => i.data));
    // Without negativePrompt the unconditional pass is zeros (force_zeros_for_empty_prompt): negativePrompt2 has no effect.
    const warnings: string[] = [];
    const { negativePrompt: _, ...positive } = base;
    const zeros = await pipe.generate({ ...positive, negativePrompt2: "dark", onWarning: (w) => warnings.push(w) });
    t.deepEqual(zeros[0]!.data, (await pipe.generate(positive))[0]!.data);
    t.is(warnings.length, 1);
    t.regex(warnings[0]!, /^negative_prompt_2 has no effect without negative_prompt/);
    // The refiner reads prompt alone, as diffusers' zip of [prompt, prompt_2] with its one tokenizer does.
    const image = fixture("images/input.png");
    const refined = async (o: object, into: string[] = []) => ((await refiner.generate({ ...base, image, strength: 0.6, ...o, onWarning: (w) => into.push(w) })) as [GeneratedImage])[0].data;
    const told: string[] = [];
    t.deepEqual(await refined({ prompt2: "a cat on a chair" }, told), await refined({}));
    t.deepEqual(told, ["prompt_2 has no effect on this model: it has no first text encoder, and its text_encoder_2 reads prompt (as diffusers' StableDiffusionXLImg2ImgPipeline does)"]);
    // The CLI's PNG text chunks and flags.
    const text = pngText(imageParameters({ prompt2: "a cat", negativePrompt2: "dark" }, "a red apple", "blurry", 3n, resolvedOf(zeros[0]!), "tiny-sdxl"));
    t.like(text, { prompt: "a red apple", prompt2: "a cat", negativePrompt2: "dark" });
    t.false("prompt2" in pngText(imageParameters({}, "a", "", 3n, resolvedOf(zeros[0]!), "tiny-sdxl")));
    t.like(settingsFrom({ "prompt-2": "a cat", "negative-prompt-2": "dark" }), { prompt2: "a cat", negativePrompt2: "dark" });
    // Batch inputs: a string each; inputs share a call only with the same second prompts.
    const a = checkInput({ prompt: "a", prompt2: "x" }, 0, {});
    t.is(a.shared.prompt2, "x");
    t.not(a.key, checkInput({ prompt: "a" }, 1, {}).key);
    t.is(a.key, checkInput({ prompt: "b", seed: 4 }, 2, { prompt2: "x" }).key);
    t.throws(() => checkInput({ prompt: "a", prompt2: ["x"] }, 3, {}), { message: 'inputs[3]: Expected string for prompt2 but received an array of length 1' });
    // SD1.x has one text encoder: refused by name, and the pipeline goes on.
    for (const [key, value] of [["prompt2", "a cat"], ["negativePrompt2", ["dark"]]] as const) {
      const error = await t.throwsAsync(sd.generate({ prompt: "a", numInferenceSteps: 1, [key]: value }), { instanceOf: CandlewickError });
      t.is(error?.message, `Expected an SDXL model (StableDiffusionXLPipeline, with a second text encoder) for ${key} but received a model with one text encoder`);
      t.is(error?.code, INVALID);
    }
    const [after] = await sd.generate({ prompt: "a", numInferenceSteps: 1, width: 32, height: 32, seed: 1 });
    t.is(after?.width, 32);
  } finally {
    pipe.dispose();
    refiner.dispose();
    sd.dispose();
  }
});

test("the vae load option decodes with another VAE folder", async (t) => {
  const pipe = await StableDiffusionPipeline.fromPretrained(fixture("tiny-sdxl"), { device: "cpu", dtype: "f32", vae: fixture("tiny-sd2/vae") });
  const own = await load(fixture("tiny-sdxl"));
  try {
    const call = { prompt: "a red apple", numInferenceSteps: 1, seed: 4 };
    const [a] = (await pipe.generate(call)) as [GeneratedImage];
    const [b] = (await own.generate(call)) as [GeneratedImage];
    t.notDeepEqual(a.data, b.data);
  } finally {
    pipe.dispose();
    own.dispose();
  }
  t.throws(() => toRawLoadOptions({ vae: "" }), { message: 'Expected non-empty string for vae but received ""' });
});

test("SDXL base to refiner: the base's latents at denoisingEnd continue in the refiner from denoisingStart", async (t) => {
  const base = await load(fixture("tiny-sdxl"));
  const refiner = await load(fixture("tiny-sdxl-refiner"));
  try {
    const call = { prompt: "a red apple", numInferenceSteps: 5, seed: 2 };
    const latents = await base.generateLatents({ ...call, denoisingEnd: 0.6 });
    const steps: number[] = [];
    const [image] = (await refiner.generate({
      ...call, latents: { shape: latents.shape, data: latents.data }, denoisingStart: 0.6, aestheticScore: 7,
      onProgress: ({ timestep }) => steps.push(timestep),
    })) as [GeneratedImage];
    t.deepEqual(steps, [201, 1]);
    t.is(image.settings?.denoisingStart, 0.6);
    // From a picture: image to image at the refiner's default strength (0.3 of 5 steps: 1 call).
    const calls: number[] = [];
    await refiner.generate({ ...call, image: fixture("images/input.png"), onProgress: ({ step }) => calls.push(step) });
    t.deepEqual(calls, [1]);
    const error = await t.throwsAsync(refiner.generate({ ...call, denoisingStart: 0.5 }), { instanceOf: CandlewickError });
    t.is(error?.message, "Expected image or latents with denoisingStart (the run continues from them) for denoisingStart but received neither");
  } finally {
    base.dispose();
    refiner.dispose();
  }
});

test("SD 2.x and LCM folders load by their model_index class and generate", async (t) => {
  for (const name of ["tiny-sd2", "tiny-lcm"]) {
    const pipe = await load(fixture(name));
    try {
      const [image] = await pipe.generate({ prompt: "a red apple", numInferenceSteps: 2, seed: 1 });
      t.is(image?.data.length, 64 * 64 * 3, name);
      t.is(pipe.info.pipelineClass, name === "tiny-sd2" ? "StableDiffusionPipeline" : "LatentConsistencyModelPipeline");
    } finally {
      pipe.dispose();
    }
  }
});

test("hub: an SDXL repository's second tokenizer and text encoder are fetched (fp16 variant when asked)", (t) => {
  const sd = [
    "model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
    "text_encoder/config.json", "unet/config.json", "vae/config.json", "text_encoder/model.safetensors",
    "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
  ];
  t.deepEqual(selectPipelineFiles(sd, undefined).missing, []);
  t.false(selectPipelineFiles(sd, undefined).files.some((f) => f.includes("_2/")));
  const sdxl = [
    ...sd, "tokenizer_2/vocab.json", "tokenizer_2/merges.txt", "tokenizer_2/tokenizer_config.json",
    "text_encoder_2/config.json", "text_encoder_2/model.safetensors", "text_encoder_2/model.fp16.safetensors",
  ];
  const { files, missing } = selectPipelineFiles(sdxl, "fp16");
  t.deepEqual(missing, []);
  for (const f of ["tokenizer_2/vocab.json", "tokenizer_2/merges.txt", "tokenizer_2/tokenizer_config.json",
    "text_encoder_2/config.json", "text_encoder_2/model.fp16.safetensors"]) {
    t.true(files.includes(f), f);
  }
  const { missing: lacking } = selectPipelineFiles(sdxl.filter((f) => !f.startsWith("tokenizer_2/m")), undefined);
  t.deepEqual(lacking, ["tokenizer_2/merges.txt"]);
});

test("batch inputs take the family options, and share a call only when they agree on them", (t) => {
  const key = (extra: Record<string, unknown>) => checkInput({ prompt: "a", seed: 1, ...extra }, 0, {}).key;
  t.is(key({ clipSkip: 1 }), key({ clipSkip: 1 }));
  t.not(key({ clipSkip: 1 }), key({}));
  t.not(key({ originalSize: [96, 128] }), key({}));
  t.not(key({ denoisingEnd: 0.5 }), key({}));
  t.is(checkInput({ prompt: "a" }, 0, { targetSize: [64, 48] }).shared.targetSize?.[1], 48);
  t.throws(() => checkInput({ prompt: "a", targetSize: [64] }, 3, {}), {
    message: "inputs[3]: Expected [height, width] of integers between 1 and 131072 for targetSize but received an array of length 1",
  });
});
